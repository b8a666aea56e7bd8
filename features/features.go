// Package features computes the frozen part of a network once. When an
// adapter trains nothing in a network's first stages (see
// classifier.FrozenPrefix), their output depends on the image alone: it is
// computed once per image and reused on every later epoch, by every case of
// a study that shares that prefix, and for every evaluation. Cases 1 and 4
// of the founding study freeze the whole backbone: their pooled features
// (8 KB an image) are shared, and their epochs after the first cost almost
// nothing.
//
// Augmentation changes the image, so a cache of one view per image would
// silently train on the same shift every epoch. Instead a cache holds
// Views augmented views of each image — each shifted as data.Dataset.Fill
// shifts, from a generator of (seed, image, view) — and epoch e reads view
// e mod Views: with as many views as epochs, every epoch sees a fresh shift
// per image, as input-space augmentation does.
package features

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/progress"
)

// Data is a labelled image set (what train.Data is).
type Data interface {
	Len() int
	NumClasses() int
	Fill(idx []int, p preprocess.Preprocess, rng *rand.Rand, dst []float32, labels []int32)
	Label(i int) int
}

// Cached serves a cache's features (view 0) with its images' labels, as a
// data set that evaluation reads like images.
type Cached struct {
	Cache *Cache
	Data  Data
}

func (c Cached) Len() int          { return c.Data.Len() }
func (c Cached) NumClasses() int   { return c.Data.NumClasses() }
func (c Cached) Label(i int) int   { return c.Data.Label(i) }
func (c Cached) SampleDims() []int { return c.Cache.Dims }
func (c Cached) Fill(idx []int, _ preprocess.Preprocess, _ *rand.Rand, dst []float32, labels []int32) {
	c.Cache.Fill(idx, 0, dst)
	for k, i := range idx {
		labels[k] = int32(c.Data.Label(i))
	}
}

// Options say how a cache is kept.
type Options struct {
	// Budget bounds the cache's memory in bytes; Build refuses more (see
	// ErrOverBudget). DefaultBudget if 0.
	Budget int64
	// BF16 stores features as bfloat16: half the memory, 3 significant
	// digits (README gives what it did to the study's accuracies).
	BF16 bool
	// Views is how many augmented views of each image are kept (0 or 1: the
	// image as it is).
	Views int
	// Seed drives the views' shifts.
	Seed uint64
	// Batch is how many images run at once while building (64 if 0).
	Batch int
	// Progress receives a line per tenth of the work; nil for silence.
	Progress io.Writer
}

// DefaultBudget is a quarter of the machine's memory, at most 8 GiB.
func DefaultBudget() int64 {
	total := int64(8 << 30)
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					total = kb << 10 / 4
				}
			}
		}
	}
	return min(total, 8<<30)
}

// ErrOverBudget says a cache would not fit its budget: the caller trains
// without it, saying so.
type ErrOverBudget struct{ Need, Budget int64 }

func (e *ErrOverBudget) Error() string {
	return fmt.Sprintf("the feature cache would need %.2f GiB, over its budget of %.2f GiB", gib(e.Need), gib(e.Budget))
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// Cache holds, for every image of a data set, the output of a network's
// first Stage stages.
type Cache struct {
	Stage int
	Dims  []int // one image's features
	N     int   // images
	Views int
	f32   []float32
	bf16  []uint16
}

// Size is the number of values of one image's features.
func (c *Cache) Size() int {
	n := 1
	for _, d := range c.Dims {
		n *= d
	}
	return n
}

// BF16 reports whether the features are kept as bfloat16 (they round, so
// a run's identity records it).
func (c *Cache) BF16() bool { return c.bf16 != nil }

// Bytes is the memory the cache holds.
func (c *Cache) Bytes() int64 { return int64(len(c.f32))*4 + int64(len(c.bf16))*2 }

// Fill writes the features of images idx, view view (mod Views), into dst.
func (c *Cache) Fill(idx []int, view int, dst []float32) {
	defer runtime.KeepAlive(c) // the memory lives as long as c (see Build)
	per := c.Size()
	v := view % c.Views
	for k, i := range idx {
		off := (i*c.Views + v) * per
		out := dst[k*per : (k+1)*per]
		if c.f32 != nil {
			copy(out, c.f32[off:off+per])
			continue
		}
		for j, h := range c.bf16[off : off+per] {
			out[j] = checkpoint.BF16ToFloat32(h)
		}
	}
}

// Build computes stages [0, stage) of base for every image of d (Views
// views each, shifted as d's Fill shifts when given a generator), in
// batches run in parts on every core. stages lists several prefix lengths
// to keep at once (one pass computes all): Build returns one cache per
// entry, in order. To cache several data sets with the same prefixes,
// NewPrefixes compiles them once for all.
func Build(ctx context.Context, b compute.Backend, base *backbone.Base, d Data, pre preprocess.Preprocess, stages []int, o Options) ([]*Cache, error) {
	p, err := NewPrefixes(b, base, d, pre, stages, o.Batch)
	if err != nil {
		return nil, err
	}
	return p.Build(ctx, d, o)
}

// Prefixes are the frozen prefixes of a base, compiled for batches of one
// size: a graph of ResNet-50 takes about half a second to compile, and a
// train set, its test set and a short last batch would each have compiled
// their own.
type Prefixes struct {
	pre    preprocess.Preprocess
	stages []int
	run    *classifier.Predictor // stages [0, last), yielding each entry's output
	dims   [][]int               // each prefix's output for one image
	batch  int
}

// NewPrefixes compiles stages [0, stage) of base for each entry of stages
// (increasing), for images preprocessed by pre in batches of batch (64 if
// 0), learning each prefix's output shape from one batch of d's first image.
func NewPrefixes(b compute.Backend, base *backbone.Base, d Data, pre preprocess.Preprocess, stages []int, batch int) (*Prefixes, error) {
	if batch == 0 {
		batch = 64
	}
	if d.Len() == 0 {
		return nil, fmt.Errorf("features: no images to cache")
	}
	if err := classifier.CheckEnds(base, 0, stages); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	p := &Prefixes{pre: pre, stages: stages, batch: batch, run: classifier.NewOutputs(b, base, nil, 0, stages)}
	per := 3 * pre.Crop * pre.Crop
	probe := make([]float32, batch*per)
	d.Fill([]int{0}, pre, nil, probe[:per], make([]int32, 1))
	for i := 1; i < batch; i++ {
		copy(probe[i*per:(i+1)*per], probe[:per])
	}
	var mu sync.Mutex
	err := p.run.Parts(probe, []int{batch, 3, pre.Crop, pre.Crop}, func(lo, _ int, ys []*tensors.Tensor) error {
		mu.Lock()
		defer mu.Unlock()
		if lo == 0 {
			for _, y := range ys {
				p.dims = append(p.dims, y.Shape().Dimensions[1:])
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Build computes the prefixes for every image of d: see the function Build
// (o.Batch is not read: the batch is the one the prefixes were compiled for).
func (p *Prefixes) Build(ctx context.Context, d Data, o Options) ([]*Cache, error) {
	pre := p.pre
	if o.Budget == 0 {
		o.Budget = DefaultBudget()
	}
	views, batch := max(o.Views, 1), p.batch
	side := pre.Crop
	var caches []*Cache
	var need int64
	for i, s := range p.stages {
		c := &Cache{Stage: s, Dims: p.dims[i], N: d.Len(), Views: views}
		caches = append(caches, c)
		width := int64(4)
		if o.BF16 {
			width = 2
		}
		need += int64(c.N) * int64(views) * int64(c.Size()) * width
	}
	if need > o.Budget {
		return nil, &ErrOverBudget{Need: need, Budget: o.Budget}
	}
	for _, c := range caches {
		var free func()
		var err error
		if o.BF16 {
			c.bf16, free, err = offHeap[uint16](c.N * views * c.Size())
		} else {
			c.f32, free, err = offHeap[float32](c.N * views * c.Size())
		}
		if err != nil {
			return nil, err
		}
		// The memory goes when the Cache does: only its methods read the
		// slices, so nothing else can hold them.
		runtime.AddCleanup(c, func(free func()) { free() }, free)
	}
	start := time.Now()
	n := d.Len()
	total := n * views
	per := 3 * side * side
	idx := make([]int, 0, batch)
	img := make([]float32, batch*per)
	labels := make([]int32, batch)
	done, bar := 0, progress.New(o.Progress)
	text := func() string {
		return fmt.Sprintf("   features: %d/%d images (%.0f img/s)", done, total, float64(done)/time.Since(start).Seconds())
	}
	for v := range views {
		for lo := 0; lo < n; lo += batch {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("computing cached features: %w", err)
			}
			hi := min(lo+batch, n)
			idx = idx[:0]
			for i := lo; i < hi; i++ {
				idx = append(idx, i)
			}
			k := hi - lo
			for j, i := range idx {
				var rng *rand.Rand
				if views > 1 {
					rng = ViewRNG(o.Seed, i, v)
				}
				d.Fill([]int{i}, pre, rng, img[j*per:(j+1)*per], labels[j:j+1])
			}
			err := p.run.Parts(img[:k*per], []int{k, 3, side, side}, func(plo, phi int, ys []*tensors.Tensor) error {
				for ci, c := range caches {
					if err := tensors.ConstFlatData(ys[ci], func(vals []float32) { c.store(idx[plo:phi], v, vals) }); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			done += k
			bar.Update(int64(done), int64(total), text)
		}
	}
	bar.End()
	return caches, nil
}

// ViewRNG is the generator that shifts view v of image i.
func ViewRNG(seed uint64, i, v int) *rand.Rand {
	return rand.New(rand.NewPCG(seed^0x76696577, uint64(i)<<16|uint64(v))) // "view"
}

func (c *Cache) store(idx []int, view int, vals []float32) {
	defer runtime.KeepAlive(c)
	per := c.Size()
	for k, i := range idx {
		off := (i*c.Views + view) * per
		src := vals[k*per : (k+1)*per]
		if c.f32 != nil {
			copy(c.f32[off:off+per], src)
			continue
		}
		for j, f := range src {
			c.bf16[off+j] = checkpoint.Float32ToBF16(f)
		}
	}
}
