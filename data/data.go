// Package data holds labelled image sets in memory as raw bytes and turns
// them, batch by batch, into the normalized NCHW float32 tensors a
// torchvision ResNet expects. Sources: MNIST (embedded, checksummed),
// Fashion-MNIST (Debian's dataset-fashion-mnist package), any idx file pair
// (ReadIDX, FromIDX) and torchvision's ImageFolder layout.
//
// Images stay uint8 until Fill (47 MB for MNIST's training set rather than
// 188 MB of float32, or 3.6 GB at 224×224×3), so resizing, gray→RGB and
// augmentation happen per batch, deterministically for a given *rand.Rand.
package data

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/lorafit/lorafit/preprocess"
)

// MaxShift is the largest random shift, in stored pixels along each axis,
// that Fill applies when given a *rand.Rand (as RandomAffine(translate)
// with zero fill would, ±2 px on a 28 px digit).
const MaxShift = 2

// Dataset is a labelled image set in memory. Treat it as read-only once
// built: Fill may be called from several goroutines at once.
type Dataset struct {
	Name string
	// Images holds N images of H×W×C bytes each, row-major with channels
	// interleaved: pixel (y, x) channel c of image i is
	// Images[((i*H+y)*W+x)*C+c].
	Images []uint8
	// Labels holds N class indices into ClassNames.
	Labels     []int32
	N, H, W, C int // C is 1 (gray) or 3 (RGB)
	ClassNames []string
}

// Len is the number of images.
func (d *Dataset) Len() int { return d.N }

// NumClasses is the number of classes, whether or not each has images here.
func (d *Dataset) NumClasses() int { return len(d.ClassNames) }

// Image returns image i's H×W×C bytes (a view, not a copy).
func (d *Dataset) Image(i int) []uint8 {
	n := d.H * d.W * d.C
	return d.Images[i*n : (i+1)*n : (i+1)*n]
}

// Label returns image i's class index.
func (d *Dataset) Label(i int) int { return int(d.Labels[i]) }

// ClassCounts returns how many images each class has.
func (d *Dataset) ClassCounts() []int {
	counts := make([]int, len(d.ClassNames))
	for _, l := range d.Labels {
		counts[l]++
	}
	return counts
}

// String describes the set in one line, for logs and reports.
func (d *Dataset) String() string {
	return fmt.Sprintf("%s: %d images %d×%d×%d, %d classes", d.Name, d.N, d.H, d.W, d.C, len(d.ClassNames))
}

// Fill writes images idx as normalized float32 into dst, laid out
// [len(idx), 3, size, size] (NCHW) with size = p.Crop, and their labels into
// labels; it satisfies train.Data. The stored images are square (ImageFolder
// resized and cropped them at load time), so a resize is all that is left:
// p.Resize is not used, and what Fill computes equals p.Apply on such an
// image with Resize = Crop.
//
// Each value is (v/255 - mean[c]) / std[c], torchvision's
// ToTensor+Normalize. Gray images are replicated to the three channels
// (Grayscale(num_output_channels=3)). When size differs from the stored
// H×W the image is resized with bilinear interpolation on half-pixel
// centers (F.interpolate(align_corners=False); antialiased like PIL when
// shrinking). When rng is not nil, each image is first shifted by dy, dx
// drawn in that order as rng.IntN(2*MaxShift+1)-MaxShift, uncovered pixels
// being 0 (black) — so the same rng state gives the same batch.
//
// At the stored size (MNIST's native 28), Fill allocates nothing. It panics
// if dst or labels are too short or an index is out of range, as slice
// indexing would: these are programming errors, not data errors.
func (d *Dataset) Fill(idx []int, p preprocess.Preprocess, rng *rand.Rand, dst []float32, labels []int32) {
	size, mean, std := p.Crop, p.Mean, p.Std
	plane := size * size
	if size <= 0 || len(dst) < len(idx)*3*plane || len(labels) < len(idx) {
		panic(fmt.Sprintf("data: Fill of %d images at size %d: dst has %d floats (want %d), labels %d", len(idx), size, len(dst), len(idx)*3*plane, len(labels)))
	}
	native := size == d.H && size == d.W
	var lut [3][256]float32 // native path: byte → normalized value
	var scale, bias [3]float32
	for c := range 3 {
		if native {
			for v := range 256 {
				lut[c][v] = float32((float64(v)/255 - float64(mean[c])) / float64(std[c]))
			}
		} else {
			scale[c] = float32(1 / (255 * float64(std[c])))
			bias[c] = float32(-float64(mean[c]) / float64(std[c]))
		}
	}
	var rs *preprocess.Resizer
	var tmp *[]float32
	if !native {
		rs = preprocess.NewResizer(d.H, d.W, size, size)
		tmp = scratch.Get().(*[]float32)
		defer scratch.Put(tmp)
		*tmp = slices.Grow((*tmp)[:0], rs.ScratchLen())[:rs.ScratchLen()]
	}
	for k, i := range idx {
		if i < 0 || i >= d.N {
			panic(fmt.Sprintf("data: %s: index %d out of range [0, %d)", d.Name, i, d.N))
		}
		labels[k] = d.Labels[i]
		dy, dx := 0, 0
		if rng != nil {
			dy = rng.IntN(2*MaxShift+1) - MaxShift
			dx = rng.IntN(2*MaxShift+1) - MaxShift
		}
		img := d.Image(i)
		out := dst[k*3*plane : (k+1)*3*plane]
		for c := range 3 {
			o := out[c*plane : (c+1)*plane]
			src := min(c, d.C-1) // gray: channel 0 for all three
			if native {
				shiftLUT(o, img, d.H, d.W, d.C, src, dy, dx, &lut[c])
				continue
			}
			if src == c || c == 0 {
				rs.Channel(o, *tmp, img, d.C, src, dy, dx)
			} else {
				copy(o, out[:plane]) // gray: reuse channel 0's raw values
			}
		}
		if !native { // raw 0..255 floats → normalized
			for c := range 3 {
				o := out[c*plane : (c+1)*plane]
				for j, v := range o {
					o[j] = v*scale[c] + bias[c]
				}
			}
		}
	}
}

// shiftLUT maps channel c of img (h×w×nc bytes), shifted by (dy, dx) with
// zero fill, through lut into out (h×w).
func shiftLUT(out []float32, img []uint8, h, w, nc, c, dy, dx int, lut *[256]float32) {
	zero := lut[0]
	x0, x1 := max(0, dx), min(w, w+dx) // columns whose source x-dx is inside
	for y := range h {
		row := out[y*w : (y+1)*w]
		sy := y - dy
		if sy < 0 || sy >= h {
			for x := range row {
				row[x] = zero
			}
			continue
		}
		for x := 0; x < x0; x++ {
			row[x] = zero
		}
		for x := x1; x < w; x++ {
			row[x] = zero
		}
		src := img[sy*w*nc : (sy+1)*w*nc]
		if nc == 1 {
			for x, v := range src[x0-dx : x1-dx] {
				row[x0+x] = lut[v]
			}
			continue
		}
		for x := x0; x < x1; x++ {
			row[x] = lut[src[(x-dx)*nc+c]]
		}
	}
}

var scratch = sync.Pool{New: func() any { return new([]float32) }} // Fill's row-pass buffer

// Subset returns a stratified sample of n images, for --limit-train and
// --limit-test: each class gets a share proportional to its size (largest
// remainders, ties to the lower class index), taken as its first images in
// dataset order, and the result keeps dataset order. It is deterministic,
// and for MNIST (already in random order) close to "the first n". The
// images are copied so the full set can be freed. n <= 0 or n >= Len()
// returns d itself.
func (d *Dataset) Subset(n int) *Dataset {
	if n <= 0 || n >= d.N {
		return d
	}
	counts := d.ClassCounts()
	quota := make([]int, len(counts))
	type rem struct{ frac, class int }
	rems := make([]rem, 0, len(counts))
	given := 0
	for c, cnt := range counts {
		quota[c] = n * cnt / d.N
		given += quota[c]
		rems = append(rems, rem{n * cnt % d.N, c})
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return b.frac - a.frac })
	for i := 0; given < n; i++ {
		quota[rems[i].class]++
		given++
	}
	idx := make([]int, 0, n)
	for i, l := range d.Labels {
		if quota[l] > 0 {
			quota[l]--
			idx = append(idx, i)
		}
	}
	return d.pick(idx, fmt.Sprintf("%s (%d of %d)", d.Name, n, d.N))
}

// pick copies images idx, in that order, into a new Dataset.
func (d *Dataset) pick(idx []int, name string) *Dataset {
	sz := d.H * d.W * d.C
	s := &Dataset{Name: name, Images: make([]uint8, len(idx)*sz), Labels: make([]int32, len(idx)),
		N: len(idx), H: d.H, W: d.W, C: d.C, ClassNames: d.ClassNames}
	for k, i := range idx {
		copy(s.Images[k*sz:(k+1)*sz], d.Image(i))
		s.Labels[k] = d.Labels[i]
	}
	return s
}

// Options tune Load; the zero value is fine for MNIST and Fashion-MNIST.
type Options struct {
	// Size is the side ImageFolder images are stored at (default 224).
	// Pass the training image size so Fill takes its no-resize path.
	Size int
	// ValSplit is the fraction of each class an ImageFolder without
	// train/ and val/ sub-folders holds out as its test set (default 0.2).
	ValSplit float64
	// Seed drives that split.
	Seed uint64
	// FashionDir is where Fashion-MNIST's idx files are ("" for Debian's
	// FashionMNISTDir).
	FashionDir string
}

// Load opens a dataset by name for the CLI: "mnist" (or ""),
// "fashion-mnist", or a directory in torchvision's ImageFolder layout —
// either DIR/train/CLASS/* with DIR/val/CLASS/* (or DIR/test/CLASS/*), used
// as given, or DIR/CLASS/* split by o.ValSplit and o.Seed. The names win
// over directories: write ./mnist for a folder called mnist.
func Load(spec string, o Options) (train, test *Dataset, err error) {
	switch strings.ToLower(spec) {
	case "", "mnist":
		return MNIST()
	case "fashion-mnist", "fashion_mnist", "fashionmnist":
		return FashionMNIST(o.FashionDir)
	}
	if st, err := os.Stat(spec); err != nil || !st.IsDir() {
		return nil, nil, fmt.Errorf("dataset %q: want mnist, fashion-mnist or an ImageFolder directory", spec)
	}
	if o.Size == 0 {
		o.Size = 224
	}
	if o.ValSplit == 0 {
		o.ValSplit = 0.2
	}
	trainDir := filepath.Join(spec, "train")
	for _, v := range []string{"val", "test"} {
		valDir := filepath.Join(spec, v)
		if !isDir(trainDir) || !isDir(valDir) {
			continue
		}
		if train, err = loadFolder(trainDir, o.Size); err != nil {
			return nil, nil, err
		}
		if test, err = loadFolder(valDir, o.Size); err != nil {
			return nil, nil, err
		}
		if !slices.Equal(train.ClassNames, test.ClassNames) {
			return nil, nil, fmt.Errorf("%s and %s have different class folders: %q vs %q", trainDir, valDir, train.ClassNames, test.ClassNames)
		}
		return train, test, nil
	}
	return ImageFolder(spec, o.Size, o.ValSplit, o.Seed)
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}
