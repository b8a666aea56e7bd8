package limits

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/internal/memcheck"
)

// pngHeader is a PNG signature, an IHDR chunk for a w×h image of the given
// bit depth and color type, then extra raw bytes: a header that decoders
// accept but whose pixels are not there.
func pngHeader(w, h uint32, depth, colorType byte, extra []byte) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, depth, colorType, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b = append(b, chunk...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
	return append(b, extra...)
}

// jpegHeader is SOI, a baseline SOF0 for a w×h gray image and the start of
// a scan (SOS) without any data.
func jpegHeader(w, h uint16) []byte {
	b := []byte{0xff, 0xd8, 0xff, 0xc0, 0, 11, 8}
	b = binary.BigEndian.AppendUint16(b, h)
	b = binary.BigEndian.AppendUint16(b, w)
	return append(b, 1, 1, 0x11, 0, 0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0)
}

type expectedImage struct {
	Width, Height int
	Pixels        []json.RawMessage // PNGs: gray value or [r, g, b], in PIL's order
}

func TestDecodeImageFixtures(t *testing.T) {
	raw, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp map[string]expectedImage
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	for name, e := range exp {
		t.Run(name, func(t *testing.T) {
			img, err := DecodeImage(filepath.Join("testdata", name))
			if strings.HasSuffix(name, ".gif") {
				if err == nil || !strings.Contains(err.Error(), "testdata/"+name+": not a readable PNG or JPEG image") {
					t.Errorf("GIF: err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b := img.Bounds()
			if b.Dx() != e.Width || b.Dy() != e.Height {
				t.Fatalf("%v, want %d×%d", b, e.Width, e.Height)
			}
			for i, p := range e.Pixels {
				got := img.At(b.Min.X+i%e.Width, b.Min.Y+i/e.Width)
				var want []int
				if p[0] == '[' {
					json.Unmarshal(p, &want)
					c := color.NRGBAModel.Convert(got).(color.NRGBA)
					if int(c.R) != want[0] || int(c.G) != want[1] || int(c.B) != want[2] {
						t.Fatalf("pixel %d = %v, PIL says %v", i, c, want)
					}
					continue
				}
				var v int
				json.Unmarshal(p, &v)
				gv := int(color.Gray16Model.Convert(got).(color.Gray16).Y)
				if _, is16 := got.(color.Gray16); !is16 {
					gv >>= 8
				}
				if gv != v {
					t.Fatalf("pixel %d = %d, PIL says %d", i, gv, v)
				}
			}
		})
	}
}

func TestDecodeImageRefuses(t *testing.T) {
	dir := t.TempDir()
	rgb, err := os.ReadFile("testdata/rgb.png")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		file []byte
		env  string // LORAFIT_MAX_IMAGE_PIXELS for this case
		want string
	}{
		{"huge png", pngHeader(100000, 100000, 8, 2, nil), "", "100000×100000 image: 10000000000 pixels in one image is over the limit of 40000000 (set LORAFIT_MAX_IMAGE_PIXELS to raise it)"},
		{"huge jpeg", jpegHeader(65535, 65535), "", "65535×65535 image: 4294836225 pixels in one image is over the limit"},
		{"lying png", pngHeader(6000, 6000, 8, 2, nil), "", "header says 6000×6000 pixels, more than a 33-byte png file can hold"},
		{"lying 1-bit png", pngHeader(6000, 6000, 1, 0, make([]byte, 100)), "", "more than a 133-byte png file can hold"},
		{"lying jpeg", jpegHeader(2000, 2000), "", "header says 2000×2000 pixels, more than a 25-byte jpeg file can hold"},
		// Decoded in whole MCUs: 64,000 pixels in a column cost 32 columns' worth.
		{"lying thin jpeg", jpegHeader(1, 64000), "", "header says 1×64000 pixels, more than a 25-byte jpeg file can hold"},
		{"zero width", pngHeader(0, 5, 8, 2, nil), "", "not a readable PNG or JPEG image"},
		{"truncated png", rgb[:len(rgb)/2], "", "not a readable PNG or JPEG image: png: invalid format: not enough pixel data"},
		{"empty", nil, "", "not a readable PNG or JPEG image"},
		{"lowered limit", rgb, "90", "13×7 image: 91 pixels in one image is over the limit of 90"},
		{"raised limit", pngHeader(100000, 100000, 8, 2, nil), "20000000000", "more than a 33-byte png file can hold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(ImagePixels.Env, tc.env)
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			var err error
			memcheck.Bound(t, len(tc.file), 64, 1<<20, func() { _, err = DecodeImage(path) })
			if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant %s: …%s", err, path, tc.want)
			}
		})
	}
	if _, err := DecodeImage(dir); !errors.Is(err, ErrNotRegular) {
		t.Errorf("directory: %v", err)
	}
}

// FuzzDecodeImage: no input panics, and none makes the decoders allocate
// more than the format's densest valid encoding could justify (see
// pngDecodedPerByte; JPEG's coefficient buffers add up to 20 bytes a
// pixel), plus slack for the decoders' own tables.
func FuzzDecodeImage(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && !strings.HasSuffix(p, ".py") && !strings.HasSuffix(p, ".json") {
			f.Add(b)
		}
	}
	f.Add(pngHeader(100000, 100000, 8, 2, nil))
	f.Add(pngHeader(3000, 3000, 1, 0, make([]byte, 64)))
	f.Add(jpegHeader(2000, 2000))
	f.Fuzz(func(t *testing.T, b []byte) {
		var img image.Image
		var err error
		memcheck.Bound(t, len(b), 3*pngDecodedPerByte, 8<<20, func() {
			img, err = decodeImage(bytes.NewReader(b), int64(len(b)), "fuzz.img")
		})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.img: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if r := img.Bounds(); int64(r.Dx())*int64(r.Dy()) > ImagePixels.Default {
			t.Fatalf("decoded %v, over the pixel limit", r)
		}
	})
}
