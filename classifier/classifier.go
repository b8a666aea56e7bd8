// Package classifier runs what is fine-tuned: a frozen base network with an
// adapter on it — LoRA added to the modules the adapter targets, the
// adapter's own copies of the modules it saves read instead of the base's,
// and its head on the logits. The adapter is passed explicitly to every
// forward pass (nothing is installed in the base), so one base serves any
// number of adapters at once. It also merges an adapter into plain weights.
package classifier

import (
	"fmt"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/nn"
)

// Forward is one forward pass of a base network with an adapter, being
// built in a graph.
type Forward struct {
	Net     backbone.Network
	Adapter *adapter.Adapter // nil: the base alone
	// Weights holds the base's tensors overlaid with the adapter's.
	Weights nn.Weights
	// Training turns on lora_dropout (drawing masks from RNG, which it
	// advances) and runs the adapter's own batch norms in train mode,
	// recording their new statistics in Updated.
	Training bool
	RNG      *Node
	Updated  nn.Weights
}

// Logits runs stages [from, end) of the network, then the head: [N, classes].
// from is 0 for images; a later stage takes that stage's input (a cached
// frozen prefix's output); the number of stages runs the head alone.
func (f *Forward) Logits(x *Node, from int) *Node {
	return f.Stages(x, from, len(f.Net.Stages()))
}

// Stages runs stages [from, to) of the network, and the head when to is the
// last stage's end.
func (f *Forward) Stages(x *Node, from, to int) *Node {
	p := &backbone.Pass{Weights: f.Weights, Differentiated: f.Training}
	var head []adapter.HeadLayer
	if a := f.Adapter; a != nil {
		p.Hook = f.hook
		if to == len(f.Net.Stages()) {
			head = a.Head
		}
		if f.Training {
			p.TrainBN, p.Updated = a.TrainsBatchNorm, f.Updated
		}
	}
	y := x
	if from < to {
		y = f.Net.Forward(x, p, from, to)
	}
	for i, h := range head {
		if i > 0 {
			y = p.ReLU(y)
		}
		y = nn.Dense(y, p.Weight(h.Name+".weight"), p.Weight(h.Name+".bias"))
	}
	return y
}

// hook is the LoRA update of a target module's output.
func (f *Forward) hook(m nn.Module, x *Node) *Node {
	t, ok := target(f.Adapter, m.Name)
	if !ok {
		return nil
	}
	g := x.Graph()
	if p := f.Adapter.Spec.LoRA.LoraDropout; f.Training && p > 0 {
		var u *Node
		f.RNG, u = RandomUniform(f.RNG, x.Shape())
		keep := GreaterOrEqual(u, Scalar(g, x.DType(), p))
		x = Where(keep, DivScalar(x, 1-p), ZerosLike(x))
	}
	a := f.Weights.Get(m.Name + ".lora_A.weight")
	b := f.Weights.Get(m.Name + ".lora_B.weight")
	if m.Type == nn.Linear {
		return lora.LinearDelta(x, a, b, t.Scaling)
	}
	return lora.ConvDelta(x, a, b, m.Kernel, m.Stride, m.Padding, m.Groups, t.Scaling)
}

// FrozenPrefix is how many of net's stages come before anything a (nil: no
// adapter) trains or owns: their output depends on the image alone, so it
// can be computed once and reused (see package features). It is the number
// of stages when only a head trains.
func FrozenPrefix(net backbone.Network, a *adapter.Adapter) int {
	first := len(net.Stages())
	if a == nil {
		return first
	}
	for _, m := range net.Modules() {
		_, lora := target(a, m.Name)
		if lora || a.IsSaved(m.Name) {
			if s := net.StageOf(m.Name); s >= 0 {
				first = min(first, s)
			}
		}
	}
	return first
}

func target(a *adapter.Adapter, module string) (lora.Target, bool) {
	for _, t := range a.Targets {
		if t.Module.Name == module {
			return t, true
		}
	}
	return lora.Target{}, false
}

// Feed is an ordered list of host tensors a graph reads as parameters:
// Args hands them to Exec.Call, Bind maps the graph's nodes back to keys.
type Feed struct {
	Keys   []string
	Values []*tensors.Tensor
}

// Add appends one tensor.
func (f *Feed) Add(key string, t *tensors.Tensor) {
	f.Keys = append(f.Keys, key)
	f.Values = append(f.Values, t)
}

// Args are the tensors in order, as Exec.Call arguments.
func (f *Feed) Args() []any {
	args := make([]any, len(f.Values))
	for i, v := range f.Values {
		args[i] = v
	}
	return args
}

// Materialize moves tensors to b's device before executions that run at
// once read them: GoMLX checks a tensor's validity without its lock, so two
// executions that both move the same host tensor can see it half-moved and
// fail.
func Materialize(b compute.Backend, ts []*tensors.Tensor) error {
	for _, t := range ts {
		if err := t.MaterializeOnDevice(b, true, 0); err != nil {
			return err
		}
	}
	return nil
}

// Bind records nodes (the graph's parameters, in the feed's order) in w.
func (f *Feed) Bind(nodes []*Node, w nn.Weights) {
	if len(nodes) != len(f.Keys) {
		panic(fmt.Errorf("classifier: %d nodes for %d fed tensors", len(nodes), len(f.Keys)))
	}
	for i, k := range f.Keys {
		w[k] = nodes[i]
	}
}

// BaseFeed lists the base's tensors a pass with adapter a reads: those the
// adapter does not replace, with every conv and batch-norm pair that a
// touches neither of folded (see backbone.Base.Folded). a may be nil.
func BaseFeed(base *backbone.Base, a *adapter.Adapter) *Feed {
	own := owned(a)
	folded := base.Folded()
	skip := map[string]bool{} // modules read folded
	f := &Feed{}
	for _, pair := range base.Net.ConvBNs() {
		if own[pair.Conv.Name] || own[pair.BN] {
			continue
		}
		skip[pair.Conv.Name], skip[pair.BN] = true, true
		f.Add(pair.Conv.Name+backbone.FoldedWeight, folded[pair.Conv.Name+backbone.FoldedWeight])
		f.Add(pair.BN+backbone.FoldedScale, folded[pair.BN+backbone.FoldedScale])
		f.Add(pair.BN+backbone.FoldedShift, folded[pair.BN+backbone.FoldedShift])
	}
	for _, p := range base.Net.Params() {
		if !own[p.Module] && !skip[p.Module] {
			f.Add(p.Name, base.Tensor(p.Name))
		}
	}
	return f
}

// owned lists the modules whose tensors the adapter has its own copies of
// (modules_to_save). A LoRA target is not owned: the base's weight is read,
// and its delta added.
func owned(a *adapter.Adapter) map[string]bool {
	own := map[string]bool{}
	if a != nil {
		for _, e := range a.Entries() {
			if e.Kind != "lora" {
				own[e.Module] = true
			}
		}
	}
	return own
}

// UnfoldedFeed lists every base tensor the adapter does not replace, as
// the checkpoint holds them: for tests that need gradients or values with
// respect to the base's own weights.
func UnfoldedFeed(base *backbone.Base, a *adapter.Adapter) *Feed {
	own := owned(a)
	f := &Feed{}
	for _, p := range base.Net.Params() {
		if !own[p.Module] {
			f.Add(p.Name, base.Tensor(p.Name))
		}
	}
	return f
}

// AdapterFeed lists the adapter's tensors for which keep is true (all for nil).
func AdapterFeed(a *adapter.Adapter, keep func(adapter.Entry) bool) *Feed {
	f := &Feed{}
	if a == nil {
		return f
	}
	for _, e := range a.Entries() {
		if keep == nil || keep(e) {
			f.Add(e.Key, a.Tensor(e.Key))
		}
	}
	return f
}

// BakeBase tells whether frozen base weights go into graphs as constants
// rather than parameters: on backends that prefer it (GoMLX's Go backend
// then caches the packed matmul operands instead of repacking every weight
// on every call). The cost is a copy of the base per compiled graph.
func BakeBase(b compute.Backend) bool { return b.Capabilities().PreferConstantsForVariables }

// Consts records f's tensors in w as constants of g.
func (f *Feed) Consts(g *Graph, w nn.Weights) {
	for i, k := range f.Keys {
		w[k] = ConstTensor(g, f.Values[i])
		nn.SetConst(w[k], f.Values[i])
	}
}
