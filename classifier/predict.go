package classifier

import (
	"fmt"
	"slices"
	"sync"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/nn"
)

// Predictor computes the logits of a base with an adapter (or the base
// alone) in inference mode — or any range of its stages (NewStages), or the
// outputs of several stages in one pass (NewOutputs). A batch runs as parts
// executed at once, one per core (see backend.Shards), each of a bounded
// size so memory stays flat at large input sizes. It compiles one graph per
// part size and is safe for concurrent use.
type Predictor struct {
	Base    *backbone.Base
	Adapter *adapter.Adapter // nil: the base's own classes

	from    int
	ends    []int // stages whose outputs are returned, increasing: [from, last) runs
	backend compute.Backend
	shards  int
	bake    bool
	base    *Feed // parameters, unless baked in as constants
	own     *Feed
	once    sync.Once
	exec    *Exec
	err     error

	mu    sync.Mutex
	sizes []int // part sizes compiled so far, ascending
}

// MaxPartElements bounds the input of one execution: 64 MNIST digits at
// 224×224 would need gigabytes of activations at once, 4 images do not.
const MaxPartElements = 4 * 3 * 224 * 224

// NewPredictor prepares inference of base with a (nil for the base alone).
func NewPredictor(b compute.Backend, base *backbone.Base, a *adapter.Adapter) *Predictor {
	return NewStages(b, base, a, 0, len(base.Net.Stages()))
}

// NewStages prepares inference of stages [from, to) of base with a, the
// head included when to is the last stage's end: from > 0 takes a cached
// prefix's output, to < end computes one.
func NewStages(b compute.Backend, base *backbone.Base, a *adapter.Adapter, from, to int) *Predictor {
	return NewOutputs(b, base, a, from, []int{to})
}

// NewOutputs prepares inference of stages [from, ends[len(ends)-1]) that
// yields the output of each stage end in ends (increasing, each > from):
// several frozen prefixes from one execution, where a pass per prefix
// copied each intermediate map out and back in.
func NewOutputs(b compute.Backend, base *backbone.Base, a *adapter.Adapter, from int, ends []int) *Predictor {
	if err := CheckEnds(base, from, ends); err != nil {
		panic(err)
	}
	return &Predictor{Base: base, Adapter: a, from: from, ends: slices.Clone(ends), backend: b, shards: backend.Shards(b), bake: BakeBase(b),
		base: BaseFeed(base, a), own: AdapterFeed(a, nil)}
}

// CheckEnds tells whether ends can be the stage ends of NewOutputs.
func CheckEnds(base *backbone.Base, from int, ends []int) error {
	if len(ends) == 0 {
		return fmt.Errorf("no stage ends")
	}
	prev := from
	for _, e := range ends {
		if e <= prev || e > len(base.Net.Stages()) {
			return fmt.Errorf("stage ends %v must increase from %d to at most %d", ends, from+1, len(base.Net.Stages()))
		}
		prev = e
	}
	return nil
}

// NumClasses is the width of the logits.
func (p *Predictor) NumClasses() int {
	if p.Adapter != nil {
		return p.Adapter.NumClasses()
	}
	return p.Base.Net.NumClasses()
}

// Logits runs images x [N,3,H,W] (or a later stage's input, see NewStages)
// and returns [N, NumClasses] (or the last stage's output; see Parts for
// every stage end's).
func (p *Predictor) Logits(x *tensors.Tensor) (*tensors.Tensor, error) {
	dims := x.Shape().Dimensions
	if err := p.compile(dims); err != nil {
		return nil, err
	}
	if n := dims[0]; n == 0 {
		return nil, fmt.Errorf("inference: no images in %v", dims)
	} else if p.partOf(dims) == n {
		out, err := p.run(x)
		if err != nil {
			return nil, err
		}
		for _, y := range out[:len(out)-1] {
			y.FinalizeAll()
		}
		return out[len(out)-1], nil
	}
	var res *tensors.Tensor
	var mu sync.Mutex
	var err error
	if e := tensors.ConstFlatData(x, func(flat []float32) {
		err = p.Parts(flat, dims, func(lo, hi int, ys []*tensors.Tensor) error {
			y := ys[len(ys)-1]
			mu.Lock()
			if res == nil {
				res = tensors.FromShape(shapes.Make(dtypes.Float32, append([]int{dims[0]}, y.Shape().Dimensions[1:]...)...))
			}
			mu.Unlock()
			return copyRows(res, lo, y, hi-lo)
		})
	}); e != nil {
		return nil, e
	}
	return res, err
}

// copyRows copies the first n rows (images) of src into dst from row lo,
// holding dst's lock only while it copies.
func copyRows(dst *tensors.Tensor, lo int, src *tensors.Tensor, n int) error {
	per := src.Shape().Size() / max(src.Shape().Dimensions[0], 1)
	var err error
	if e := tensors.ConstFlatData(src, func(s []float32) {
		err = tensors.MutableFlatData(dst, func(d []float32) {
			copy(d[lo*per:(lo+n)*per], s[:n*per])
		})
	}); e != nil {
		return e
	}
	return err
}

// Parts runs the images of flat, [dims...] with dims[0] images, as parts
// executed at once, one per core, and hands each part's outputs (one per
// stage end; a short part padded past hi-lo rows) to fn, which may run
// concurrently and must not keep them: they are freed when it returns.
func (p *Predictor) Parts(flat []float32, dims []int, fn func(lo, hi int, ys []*tensors.Tensor) error) error {
	if err := p.compile(dims); err != nil {
		return err
	}
	n, per := dims[0], imageSize(dims)
	if len(flat) != n*per {
		return fmt.Errorf("inference: %d values for images of %v", len(flat), dims)
	}
	part := p.partOf(dims)
	if part < n {
		shared := p.own.Values
		if !p.bake {
			shared = append(append([]*tensors.Tensor(nil), shared...), p.base.Values...)
		}
		if err := Materialize(p.backend, shared); err != nil {
			return err
		}
	}
	return backend.AtOnce((n+part-1)/part, p.shards, func(i int) error {
		lo, hi := i*part, min((i+1)*part, n)
		x, err := tensors.FromShapeForBackend(p.backend, 0, shapes.Make(dtypes.Float32, append([]int{part}, dims[1:]...)...))
		if err != nil {
			return err
		}
		defer x.FinalizeAll()
		if err := tensors.MutableFlatData(x, func(in []float32) { // a short part is padded to the compiled size
			copy(in, flat[lo*per:hi*per])
		}); err != nil {
			return err
		}
		ys, err := p.run(x)
		if err != nil {
			return err
		}
		defer func() {
			for _, y := range ys {
				y.FinalizeAll()
			}
		}()
		return fn(lo, hi, ys)
	})
}

// compile builds the graph on first use and checks the input's shape.
func (p *Predictor) compile(dims []int) error {
	p.once.Do(func() {
		p.exec, p.err = NewExec(p.backend, func(inputs []*Node) []*Node {
			x, g := inputs[0], inputs[0].Graph()
			w := nn.Weights{}
			rest := inputs[1:]
			if p.bake {
				p.base.Consts(g, w)
			} else {
				p.base.Bind(rest[:len(p.base.Keys)], w)
				rest = rest[len(p.base.Keys):]
			}
			p.own.Bind(rest, w)
			f := &Forward{Net: p.Base.Net, Adapter: p.Adapter, Weights: w}
			var outs []*Node
			from := p.from
			for _, e := range p.ends {
				x = f.Stages(x, from, e)
				outs, from = append(outs, x), e
			}
			return outs
		})
	})
	if p.err != nil {
		return p.err
	}
	if p.from == 0 && (len(dims) != 4 || dims[1] != 3) {
		return fmt.Errorf("inference: input must be [N,3,H,W], got %v", dims)
	}
	return nil
}

// partOf is the size of the parts a batch of dims runs in.
func (p *Predictor) partOf(dims []int) int {
	return p.compiledSize(partSize(dims[0], p.shards, imageSize(dims)))
}

// imageSize is the number of values of one image (one row) of a batch of dims.
func imageSize(dims []int) int {
	per := 1
	for _, d := range dims[1:] {
		per *= d
	}
	return per
}

// compiledSize is the part size to run a natural part size of n at: the
// smallest size already compiled that holds n, padded, else n itself (then
// compiled). A short last batch (a test set's remainder) otherwise compiled
// a graph of its own: about half a second for ResNet-50, the time of a
// dozen full batches, where padding costs a few images' compute. Each
// image's outputs are computed on their own (batch norms in inference
// mode): padding changes them only by rounding (the backend picks its
// matmul kernel by size).
func (p *Predictor) compiledSize(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, _ := slices.BinarySearch(p.sizes, n)
	if i < len(p.sizes) {
		return p.sizes[i]
	}
	p.sizes = append(p.sizes, n) // larger than every size compiled so far
	return n
}

// partSize splits n inputs of per elements each among shards parts, each
// within MaxPartElements.
func partSize(n, shards, per int) int {
	part := (n + shards - 1) / shards
	return max(1, min(part, MaxPartElements/max(per, 1)))
}

// run executes one part: the outputs at each stage end.
func (p *Predictor) run(x *tensors.Tensor) ([]*tensors.Tensor, error) {
	args := []any{x}
	if !p.bake {
		args = append(args, p.base.Args()...)
	}
	args = append(args, p.own.Args()...)
	out, err := p.exec.Call(args...)
	if err != nil {
		return nil, fmt.Errorf("inference: %w", err)
	}
	return out, nil
}
