package classifier

import (
	"fmt"
	"slices"
	"sync"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/nn"
)

// Predictor computes the logits of a base with an adapter (or the base
// alone) in inference mode — or any range of its stages (NewStages). A
// batch runs as parts executed at once, one per core (see backend.Shards),
// each of a bounded size so memory stays flat at large input sizes. It
// compiles one graph per part size and is safe for concurrent use.
type Predictor struct {
	Base    *backbone.Base
	Adapter *adapter.Adapter // nil: the base's own classes

	from, to int // stages run
	backend  compute.Backend
	shards   int
	bake     bool
	base     *Feed // parameters, unless baked in as constants
	own      *Feed
	once     sync.Once
	exec     *Exec
	err      error

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
	return &Predictor{Base: base, Adapter: a, from: from, to: to, backend: b, shards: backend.Shards(b), bake: BakeBase(b),
		base: BaseFeed(base, a), own: AdapterFeed(a, nil)}
}

// NumClasses is the width of the logits.
func (p *Predictor) NumClasses() int {
	if p.Adapter != nil {
		return p.Adapter.NumClasses()
	}
	return p.Base.Net.NumClasses()
}

// Logits runs images x [N,3,H,W] (or a later stage's input, see NewStages)
// and returns [N, NumClasses] (or the last stage's output).
func (p *Predictor) Logits(x *tensors.Tensor) (*tensors.Tensor, error) {
	p.once.Do(func() {
		p.exec, p.err = NewExec(p.backend, func(inputs []*Node) *Node {
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
			return f.Stages(x, p.from, p.to)
		})
	})
	if p.err != nil {
		return nil, p.err
	}
	dims := x.Shape().Dimensions
	if p.from == 0 && (len(dims) != 4 || dims[1] != 3) {
		return nil, fmt.Errorf("inference: input must be [N,3,H,W], got %v", dims)
	}
	n, per := dims[0], x.Shape().Size()/max(dims[0], 1)
	part := p.compiledSize(partSize(n, p.shards, per))
	if part == n {
		return p.run(x)
	}
	shared := p.own.Values
	if !p.bake {
		shared = append(append([]*tensors.Tensor(nil), shared...), p.base.Values...)
	}
	if err := Materialize(p.backend, shared); err != nil {
		return nil, err
	}
	flat := tensors.MustCopyFlatData[float32](x)
	var out []float32
	var outDims []int
	var mu sync.Mutex
	err := backend.AtOnce((n+part-1)/part, p.shards, func(i int) error {
		lo, hi := i*part, min((i+1)*part, n)
		in := make([]float32, part*per) // a short part is padded to the compiled size
		copy(in, flat[lo*per:hi*per])
		y, err := p.run(tensors.FromFlatDataAndDimensions(in, append([]int{part}, dims[1:]...)...))
		if err != nil {
			return err
		}
		yd := y.Shape().Dimensions
		c := y.Shape().Size() / part
		mu.Lock()
		if out == nil {
			out, outDims = make([]float32, n*c), append([]int{n}, yd[1:]...)
		}
		mu.Unlock()
		copy(out[lo*c:hi*c], tensors.MustCopyFlatData[float32](y)[:(hi-lo)*c])
		y.FinalizeAll()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tensors.FromFlatDataAndDimensions(out, outDims...), nil
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

// run executes one part.
func (p *Predictor) run(x *tensors.Tensor) (*tensors.Tensor, error) {
	args := []any{x}
	if !p.bake {
		args = append(args, p.base.Args()...)
	}
	args = append(args, p.own.Args()...)
	out, err := p.exec.Call(args...)
	if err != nil {
		return nil, fmt.Errorf("inference: %w", err)
	}
	return out[0], nil
}
