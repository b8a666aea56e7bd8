// Package preprocess is how an image becomes a network input, in one place:
// torchvision's ImageClassification preset (resize the shorter side with
// PIL's antialiased bilinear filter, center-crop, scale to [0,1], normalize
// per channel). The same value travels with the weights registry, training,
// evaluation, predict and an adapter's lorafit.json, so an adapter is fed at
// predict time exactly as it was at training time. Grayscale images (MNIST)
// are replicated to three channels, as Grayscale(num_output_channels=3).
package preprocess

import (
	"fmt"
	"image"
	"image/color"
	"math"
)

// ImageNet's mean and std, torchvision's defaults.
var (
	ImageNetMean = [3]float32{0.485, 0.456, 0.406}
	ImageNetStd  = [3]float32{0.229, 0.224, 0.225}
)

// MaxSide bounds an input side: 4096 pixels is far beyond any torchvision
// recipe, and a larger side is almost always a typo that would allocate
// gigabytes per batch.
const MaxSide = 4096

// Preprocess is torchvision's ImageClassification(crop_size, resize_size,
// mean, std) with bilinear interpolation.
type Preprocess struct {
	Crop   int        `json:"crop_size"`   // the network's input side
	Resize int        `json:"resize_size"` // shorter side before cropping (0: Crop)
	Mean   [3]float32 `json:"mean"`
	Std    [3]float32 `json:"std"`
}

// ImageNet is ImageNet's evaluation preset at a crop size: resize to
// crop·256/224 (256 for 224), then crop, with ImageNet's statistics. At
// MNIST's 28 it resizes to 32 — but a 28×28 digit is used as is (see Apply).
func ImageNet(crop int) Preprocess {
	return Preprocess{Crop: crop, Resize: int(math.Round(float64(crop) * 256 / 224)), Mean: ImageNetMean, Std: ImageNetStd}
}

// Native feeds images of exactly side×side pixels as they are, with
// ImageNet's statistics: how lorafit trains on MNIST's 28×28 digits.
func Native(side int) Preprocess {
	return Preprocess{Crop: side, Resize: side, Mean: ImageNetMean, Std: ImageNetStd}
}

// WithCrop changes the input side, keeping the resize/crop ratio.
func (p Preprocess) WithCrop(n int) Preprocess {
	if p.Crop > 0 && p.Resize > 0 {
		p.Resize = int(math.Round(float64(n) * float64(p.Resize) / float64(p.Crop)))
	} else {
		p.Resize = n
	}
	p.Crop = n
	return p
}

// ResizeSide is Resize with 0 read as Crop.
func (p Preprocess) ResizeSide() int {
	if p.Resize == 0 {
		return p.Crop
	}
	return p.Resize
}

// Validate rejects what would allocate absurdly or divide by zero.
func (p Preprocess) Validate() error {
	switch {
	case p.Crop < 1 || p.Crop > MaxSide:
		return fmt.Errorf("input size %d: want 1 to %d pixels", p.Crop, MaxSide)
	case p.Resize != 0 && (p.Resize < p.Crop || p.Resize > 2*MaxSide):
		return fmt.Errorf("resize size %d: want 0 or %d to %d (at least the crop size %d)", p.Resize, p.Crop, 2*MaxSide, p.Crop)
	}
	for c := range 3 {
		m, s := float64(p.Mean[c]), float64(p.Std[c])
		if math.IsNaN(m) || math.IsInf(m, 0) || !(s > 0) || math.IsInf(s, 0) {
			return fmt.Errorf("normalization: channel %d has mean %g and std %g (want finite, std > 0)", c, m, s)
		}
	}
	return nil
}

func (p Preprocess) String() string {
	return fmt.Sprintf("resize %d, crop %d, mean %v, std %v", p.ResizeSide(), p.Crop, p.Mean, p.Std)
}

// Apply converts img to a [3, Crop, Crop] CHW float32 slice. An image
// already Crop×Crop is used as is (no resampling, so pixel-exact comparisons
// with PyTorch are possible); any other is resized so its shorter side is
// Resize, then center-cropped (ResizeCrop).
func (p Preprocess) Apply(img image.Image) []float32 {
	pix, w, h := ToRGB(img)
	if w != p.Crop || h != p.Crop {
		pix = ResizeCrop(pix, w, h, p.ResizeSide(), p.Crop)
	}
	out := make([]float32, 3*p.Crop*p.Crop)
	p.Normalize(out, pix, p.Crop*p.Crop)
	return out
}

// Normalize writes n RGB pixels (bytes, channels interleaved) as normalized
// CHW floats: (v/255 - mean[c]) / std[c], torchvision's ToTensor+Normalize.
func (p Preprocess) Normalize(dst []float32, pix []uint8, n int) {
	for c := range 3 {
		var lut [256]float32
		for v := range 256 {
			lut[v] = float32((float64(v)/255 - float64(p.Mean[c])) / float64(p.Std[c]))
		}
		plane := dst[c*n : (c+1)*n]
		for i := range plane {
			plane[i] = lut[pix[3*i+c]]
		}
	}
}

// ResizeCrop resizes RGB pixels (w×h, channels interleaved) so the shorter
// side is resize, keeping the aspect ratio (the longer side truncated, as
// torchvision's Resize(int)), then takes the centered crop×crop window
// (offsets rounded half to even, as CenterCrop) — resampling only the rows
// and columns the crop keeps, and rounding to bytes as PIL does.
func ResizeCrop(pix []uint8, w, h, resize, crop int) []uint8 {
	nw, nh := resize, resize
	if w < h {
		nh = int(float64(resize) * float64(h) / float64(w))
	} else {
		nw = int(float64(resize) * float64(w) / float64(h))
	}
	top := int(math.RoundToEven(float64(nh-crop) / 2))
	left := int(math.RoundToEven(float64(nw-crop) / 2))
	r := &Resizer{h: h, w: w, ty: makeTaps(h, nh).sub(top, top+crop), tx: makeTaps(w, nw).sub(left, left+crop)}
	out := make([]uint8, crop*crop*3)
	plane := make([]float32, crop*crop)
	scratch := make([]float32, r.ScratchLen())
	for c := range 3 {
		r.Channel(plane, scratch, pix, 3, c, 0, 0)
		for i, v := range plane {
			out[i*3+c] = uint8(min(max(math.Round(float64(v)), 0), 255))
		}
	}
	return out
}

// ToRGB returns img's pixels as h×w×3 bytes, with fast paths for what PNG
// and JPEG decoders return most. Gray is replicated; alpha is dropped rather
// than blended, as PIL's convert("RGB") does.
func ToRGB(img image.Image) (pix []uint8, w, h int) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	pix = make([]uint8, w*h*3)
	switch m := img.(type) {
	case *image.Gray:
		for y := range h {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			for x, v := range row {
				i := (y*w + x) * 3
				pix[i], pix[i+1], pix[i+2] = v, v, v
			}
		}
	case *image.NRGBA:
		for y := range h {
			row := m.Pix[y*m.Stride : y*m.Stride+4*w]
			for x := range w {
				copy(pix[(y*w+x)*3:(y*w+x)*3+3], row[4*x:4*x+3])
			}
		}
	case *image.YCbCr:
		for y := range h {
			for x := range w {
				yi, ci := m.YOffset(b.Min.X+x, b.Min.Y+y), m.COffset(b.Min.X+x, b.Min.Y+y)
				i := (y*w + x) * 3
				pix[i], pix[i+1], pix[i+2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		}
	default:
		for y := range h {
			for x := range w {
				c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				i := (y*w + x) * 3
				pix[i], pix[i+1], pix[i+2] = c.R, c.G, c.B
			}
		}
	}
	return pix, w, h
}
