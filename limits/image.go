package limits

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // the two formats lorafit reads
	_ "image/png"
	"io"
)

// A header may not claim more than its file could encode. PNG: deflate
// expands at most 1032:1 and a decoded pixel is at most 8 times its raw
// bits (a 1-bit pixel becomes a byte), so decoded bytes ≤ 8×1032 per file
// byte. JPEG: every 8×8 block of every component costs at least one
// Huffman-coded bit, so at most 8×64 pixels per file byte — counted over
// the image padded to whole MCUs (up to 32×32 pixels with 4× chroma
// subsampling), which is what the decoder allocates: a 1-pixel-wide jpeg
// costs as much as a 32-pixel-wide one. Real files are orders of magnitude
// below both (a 4K photo is about 3 pixels per byte).
const (
	pngDecodedPerByte = 8 * 1032
	jpegPixelsPerByte = 8 * 64
	slack             = 1 << 16 // tiny files: headers and chunk framing
	jpegMaxMCU        = 32      // the largest MCU side: 8 pixels × a sampling factor of 4
)

// roundUp is x rounded up to a multiple of m.
func roundUp(x, m int64) int64 { return (x + m - 1) / m * m }

// DecodeImage decodes a PNG or JPEG file after checking, from its header
// alone, that width×height is within ImagePixels and within what the
// file's size could encode, so no decoder ever allocates for pixels that
// cannot be there. The file must be regular (see OpenRegular). Errors name
// the file.
func DecodeImage(path string) (image.Image, error) {
	f, fi, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeImage(f, fi.Size(), path)
}

// ImageConfig reads a PNG or JPEG file's header and makes DecodeImage's
// checks, without decoding: a cheap way to refuse a bad file early.
func ImageConfig(path string) (image.Config, error) {
	f, fi, err := OpenRegular(path)
	if err != nil {
		return image.Config{}, err
	}
	defer f.Close()
	return imageConfig(f, fi.Size(), path)
}

// DecodeImageBytes is DecodeImage on an image already in memory (an
// upload): the same header checks run before any pixel is allocated. name
// labels errors ("upload 2").
func DecodeImageBytes(b []byte, name string) (image.Image, error) {
	return decodeImage(bytes.NewReader(b), int64(len(b)), name)
}

// ImageConfigBytes is ImageConfig on an image in memory.
func ImageConfigBytes(b []byte, name string) (image.Config, error) {
	return imageConfig(bytes.NewReader(b), int64(len(b)), name)
}

// imageConfig checks the header of size bytes of r.
func imageConfig(r io.ReaderAt, size int64, name string) (image.Config, error) {
	cfg, format, err := image.DecodeConfig(io.NewSectionReader(r, 0, size))
	if err != nil {
		return cfg, fmt.Errorf("%s: not a readable PNG or JPEG image: %w", name, err)
	}
	if format != "png" && format != "jpeg" {
		return cfg, fmt.Errorf("%s: a %s image; only PNG and JPEG are supported", name, format)
	}
	w, h := int64(cfg.Width), int64(cfg.Height)
	if w <= 0 || h <= 0 {
		return cfg, fmt.Errorf("%s: %d×%d image has no pixels", name, w, h)
	}
	pixels := w * h // both < 2^31: no overflow
	if err := ImagePixels.Check(pixels); err != nil {
		return cfg, fmt.Errorf("%s: %d×%d image: %w", name, w, h, err)
	}
	n := min(size, 1<<40) // keeps the products below in range
	most := n*jpegPixelsPerByte + slack
	decoded := roundUp(w, jpegMaxMCU) * roundUp(h, jpegMaxMCU)
	if format == "png" {
		most = (n*pngDecodedPerByte + slack) / bytesPerPixel(cfg.ColorModel)
		decoded = pixels
	}
	if decoded > most {
		return cfg, fmt.Errorf("%s: header says %d×%d pixels, more than a %d-byte %s file can hold (truncated or corrupt)",
			name, w, h, size, format)
	}
	return cfg, nil
}

// decodeImage is DecodeImage on size bytes of r.
func decodeImage(r io.ReaderAt, size int64, name string) (image.Image, error) {
	if _, err := imageConfig(r, size, name); err != nil {
		return nil, err
	}
	img, _, err := image.Decode(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable PNG or JPEG image: %w", name, err)
	}
	return img, nil
}

// bytesPerPixel is what Go's PNG decoder allocates per pixel for a model.
func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.GrayModel:
		return 1
	case color.Gray16Model:
		return 2
	case color.RGBAModel, color.NRGBAModel:
		return 4
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8
}
