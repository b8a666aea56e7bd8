// Package transforms turns image files into the normalized float tensors a
// torchvision classifier expects, following torchvision's
// ImageClassification preset: resize the shorter side, center-crop, scale to
// [0,1], normalize with the weights' mean and std. Grayscale images (MNIST)
// are replicated to three channels.
package transforms

import (
	"fmt"
	"image"
	_ "image/jpeg" // register decoders
	_ "image/png"
	"math"
	"os"
)

// ImageNet mean and std, torchvision's defaults.
var (
	ImageNetMean = [3]float32{0.485, 0.456, 0.406}
	ImageNetStd  = [3]float32{0.229, 0.224, 0.225}
)

// Preset is what the weights say about their input.
type Preset struct {
	CropSize   int // the network's input side
	ResizeSize int // shorter side before cropping (0: CropSize)
	Mean, Std  [3]float32
}

// Decode reads a PNG or JPEG file; errors name the file.
func Decode(path string) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable PNG or JPEG image: %w", path, err)
	}
	return img, nil
}

// Apply converts img to a [3, CropSize, CropSize] CHW float32 slice. An image
// already CropSize×CropSize is used as is (no resampling, so pixel-exact
// comparisons with PyTorch are possible); any other is resized so its shorter
// side is ResizeSize (antialiased bilinear, as PIL does for torchvision), then
// center-cropped.
func (p Preset) Apply(img image.Image) []float32 {
	n := p.CropSize
	rgb := toFloatRGB(img)
	if b := img.Bounds(); b.Dx() != n || b.Dy() != n {
		resize := p.ResizeSize
		if resize == 0 {
			resize = n
		}
		w, h := b.Dx(), b.Dy()
		nw, nh := resize, resize
		if w < h {
			nh = int(float64(resize) * float64(h) / float64(w))
		} else {
			nw = int(float64(resize) * float64(w) / float64(h))
		}
		rgb = resample(rgb, w, h, nw, nh)
		// torchvision rounds the crop offset half to even (Python round).
		rgb = crop(rgb, nw, nh, int(math.RoundToEven(float64(nw-n)/2)), int(math.RoundToEven(float64(nh-n)/2)), n)
	}
	for c := 0; c < 3; c++ {
		plane := rgb[c*n*n : (c+1)*n*n]
		for i := range plane {
			plane[i] = (plane[i] - p.Mean[c]) / p.Std[c]
		}
	}
	return rgb
}

// toFloatRGB returns CHW floats in [0,1]; gray replicates to 3 channels.
func toFloatRGB(img image.Image) []float32 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := make([]float32, 3*w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			i := y*w + x
			// 8-bit values as PIL/torchvision see them, then /255.
			out[i] = float32(r>>8) / 255
			out[w*h+i] = float32(g>>8) / 255
			out[2*w*h+i] = float32(bl>>8) / 255
		}
	}
	return out
}

// resample resizes CHW planes with a triangle filter whose support widens when
// downscaling, as PIL's antialiased bilinear does: separable, rows then columns.
func resample(src []float32, w, h, nw, nh int) []float32 {
	tmp := make([]float32, 3*h*nw)
	for c := 0; c < 3; c++ {
		resampleAxis(src[c*w*h:], tmp[c*h*nw:], w, nw, h, 1, w, 1, nw)
	}
	dst := make([]float32, 3*nh*nw)
	for c := 0; c < 3; c++ {
		resampleAxis(tmp[c*h*nw:], dst[c*nh*nw:], h, nh, nw, nw, 1, nw, 1)
	}
	return dst
}

// resampleAxis resizes `lines` independent lines of length in → out. Element
// k of line l is at l*lineStride + k*step in src (dst uses its own strides).
func resampleAxis(src, dst []float32, in, out, lines, srcStep, srcLine, dstStep, dstLine int) {
	scale := float64(in) / float64(out)
	support := math.Max(scale, 1)
	for o := 0; o < out; o++ {
		center := (float64(o) + 0.5) * scale
		lo := int(math.Max(math.Floor(center-support), 0))
		hi := int(math.Min(math.Ceil(center+support), float64(in)))
		var weights []float64
		var sum float64
		for i := lo; i < hi; i++ {
			wgt := math.Max(0, 1-math.Abs((float64(i)+0.5-center)/support))
			weights = append(weights, wgt)
			sum += wgt
		}
		for l := 0; l < lines; l++ {
			var acc float64
			for k, wgt := range weights {
				acc += wgt * float64(src[l*srcLine+(lo+k)*srcStep])
			}
			dst[l*dstLine+o*dstStep] = float32(acc / sum)
		}
	}
}

// crop takes an n×n window at (x0,y0) of CHW planes of size w×h.
func crop(src []float32, w, h, x0, y0, n int) []float32 {
	dst := make([]float32, 3*n*n)
	for c := 0; c < 3; c++ {
		for y := 0; y < n; y++ {
			copy(dst[(c*n+y)*n:(c*n+y+1)*n], src[c*w*h+(y0+y)*w+x0:])
		}
	}
	return dst
}
