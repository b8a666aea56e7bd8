package classifier

import (
	"fmt"
	"sync"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/nn"
)

// Predictor computes the logits of a base with an adapter (or the base
// alone) in inference mode. It compiles one graph per batch size and is
// safe for concurrent use.
type Predictor struct {
	Base    *backbone.Base
	Adapter *adapter.Adapter // nil: the base's own classes

	backend compute.Backend
	bake    bool
	base    *Feed // parameters, unless baked in as constants
	own     *Feed
	once    sync.Once
	exec    *Exec
	err     error
}

// NewPredictor prepares inference of base with a (nil for the base alone).
func NewPredictor(b compute.Backend, base *backbone.Base, a *adapter.Adapter) *Predictor {
	return &Predictor{Base: base, Adapter: a, backend: b, bake: BakeBase(b), base: BaseFeed(base, a), own: AdapterFeed(a, nil)}
}

// NumClasses is the width of the logits.
func (p *Predictor) NumClasses() int {
	if p.Adapter != nil {
		return p.Adapter.NumClasses()
	}
	return p.Base.Net.NumClasses()
}

// Logits runs images x [N,3,H,W] and returns [N, NumClasses].
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
			return f.Logits(x, 0)
		})
	})
	if p.err != nil {
		return nil, p.err
	}
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
