package preprocess

import (
	"math"
	"sync"
)

// taps are the weights of a 1-D resize from in to out samples: output o is
// the sum over t < n[o] of w[o*k+t] × input[start[o]+t]. The filter is the
// triangle (bilinear) on half-pixel centers, widened by in/out when
// shrinking so every input pixel contributes (PIL's antialiasing, which
// torchvision uses on PIL images and F.interpolate(antialias=True) on
// tensors); weights are renormalized at the borders, which for enlarging
// equals clamping the coordinate to the edge as F.interpolate does.
type taps struct {
	k        int
	start, n []int
	w        []float32
}

func makeTaps(in, out int) *taps {
	scale := float64(in) / float64(out)
	filterScale := max(scale, 1)
	support := filterScale // the triangle's radius is 1 input pixel, scaled
	k := int(math.Ceil(support))*2 + 1
	t := &taps{k: k, start: make([]int, out), n: make([]int, out), w: make([]float32, out*k)}
	for o := range out {
		center := (float64(o) + 0.5) * scale
		lo := max(0, int(center-support+0.5))
		hi := min(in, int(center+support+0.5))
		ws := make([]float64, 0, k)
		sum := 0.0
		for j := lo; j < hi; j++ {
			x := (float64(j) - center + 0.5) / filterScale
			wt := max(0, 1-math.Abs(x))
			ws = append(ws, wt)
			sum += wt
		}
		t.start[o], t.n[o] = lo, len(ws)
		for i, wt := range ws {
			t.w[o*k+i] = float32(wt / sum)
		}
	}
	return t
}

// sub restricts t to outputs [lo, hi): a center crop of the resized axis.
func (t *taps) sub(lo, hi int) *taps {
	return &taps{k: t.k, start: t.start[lo:hi], n: t.n[lo:hi], w: t.w[lo*t.k : hi*t.k]}
}

// tapsFor caches taps by (in, out): training resizes the same few every batch.
func tapsFor(in, out int) *taps {
	key := [2]int{in, out}
	if t, ok := tapsCache.Load(key); ok {
		return t.(*taps)
	}
	t, _ := tapsCache.LoadOrStore(key, makeTaps(in, out))
	return t.(*taps)
}

var tapsCache sync.Map // [2]int → *taps

// Resizer resizes h×w images to the rows and columns its taps select: a
// whole resize (NewResizer) or a resize followed by a crop (in Crop).
type Resizer struct {
	h, w   int
	ty, tx *taps
}

// NewResizer resizes h×w images to oh×ow.
func NewResizer(h, w, oh, ow int) *Resizer {
	return &Resizer{h: h, w: w, ty: tapsFor(h, oh), tx: tapsFor(w, ow)}
}

// ScratchLen is the length of the scratch buffer Channel needs.
func (r *Resizer) ScratchLen() int { return r.h * len(r.tx.n) }

// Channel resizes channel c of img (h×w×nc bytes, channels interleaved),
// shifted by (dy, dx) pixels with zero fill, into out (output rows ×
// columns) as raw 0..255 floats: rows first into scratch, then columns.
func (r *Resizer) Channel(out, scratch []float32, img []uint8, nc, c, dy, dx int) {
	h, w, ty, tx := r.h, r.w, r.ty, r.tx
	ow, oh := len(tx.n), len(ty.n)
	tmp := scratch[:h*ow]
	for y := range h {
		row := tmp[y*ow : (y+1)*ow]
		sy := y - dy
		if sy < 0 || sy >= h {
			clear(row)
			continue
		}
		src := img[sy*w*nc : (sy+1)*w*nc]
		for o := range row {
			acc := float32(0)
			ws := tx.w[o*tx.k : o*tx.k+tx.n[o]]
			for t, wt := range ws {
				if sx := tx.start[o] + t - dx; sx >= 0 && sx < w {
					acc += wt * float32(src[sx*nc+c])
				}
			}
			row[o] = acc
		}
	}
	for o := range oh {
		dst := out[o*ow : (o+1)*ow]
		clear(dst)
		for t, wt := range ty.w[o*ty.k : o*ty.k+ty.n[o]] {
			src := tmp[(ty.start[o]+t)*ow : (ty.start[o]+t+1)*ow]
			for x, v := range src {
				dst[x] += wt * v
			}
		}
	}
}
