// Package backbone is what classifier, LoRA injection, merging and training
// need to know of a pretrained network, and nothing more: its modules with
// their geometry, its state_dict entries under torchvision's keys, its
// feature width, and a forward pass that reads weights from a map and lets
// an adapter hook every conv and Linear. The network's weights live apart,
// in a Base, so one base can serve many adapters and is never changed by
// training one. Package resnet implements Network.
package backbone

import (
	"fmt"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive

	"github.com/lorafit/lorafit/nn"
)

// Network is an architecture: a module list and a forward pass. It holds no
// weights.
type Network interface {
	// Arch is the torchvision builder name ("resnet50", "resnext50_32x4d").
	Arch() string
	// Describe is a one-line summary for logs and errors.
	Describe() string
	// Modules lists the leaf modules in torchvision's order (named_modules).
	Modules() []nn.Module
	// Params lists every state_dict entry in torchvision's order.
	Params() []Param
	// FeatureDim is the width of the pooled features fed to the classifier.
	FeatureDim() int
	// NumClasses is the width of the classifier's output.
	NumClasses() int
	// Stages names the forward pass's steps in order ("stem", "layer1.0",
	// …, "pool", "fc"): Forward can run any contiguous range of them, so a
	// frozen prefix can be computed once and its output reused.
	Stages() []string
	// StageOf is the index of the stage that runs a module (a leaf or a
	// container name); -1 if none does.
	StageOf(module string) int
	// ConvBNs lists every conv that a batch norm follows directly: the
	// pairs a Base folds when both are frozen.
	ConvBNs() []ConvBN
	// Forward runs stages [from, to) on x. Stage 0 takes images [N,3,H,W]
	// (NCHW, as PyTorch users pass them); the pooled features are [N,
	// FeatureDim] and the logits [N, NumClasses]; other stages pass NHWC
	// activations.
	Forward(x *Node, p *Pass, from, to int) *Node
}

// ConvBN is a conv and the batch norm right after it.
type ConvBN struct {
	Conv nn.Module
	BN   string
}

// Hook is called on every conv and Linear with the module's input x (NHWC
// for convs) and returns what to add to the module's output (before batch
// norm), or nil for nothing: how LoRA is injected without the network
// knowing. A pass may fold a frozen batch norm into the conv before it, and
// then scales the returned delta as the batch norm would have.
type Hook func(m nn.Module, x *Node) *Node

// Pass is what one forward pass reads and decides.
type Pass struct {
	// Weights holds every tensor the pass reads, by state_dict key: the
	// base's, overlaid with an adapter's own copies of the modules it saves.
	Weights nn.Weights
	// Hook, if set, adapts conv and Linear outputs (LoRA).
	Hook Hook
	// TrainBN names the batch norms that run in train mode (batch
	// statistics, running statistics updated), as model.train() would; the
	// others use their running statistics.
	TrainBN func(module string) bool
	// Updated receives the new running_mean, running_var and
	// num_batches_tracked of train-mode batch norms, by key.
	Updated nn.Weights
	// Differentiated tells that a loss will be differentiated through the
	// pass (training): ReLUs the gradient flows through then take the form
	// whose gradient is cheap (see nn.ReLUDifferentiable).
	Differentiated bool
	// flowing records that the pass has met something trainable (a hook's
	// delta, a train-mode batch norm, a weight that is not a constant):
	// the gradient flows through what follows, not through what came before.
	flowing bool
}

// ReLU is the activation after a conv, batch norm or residual sum.
func (p *Pass) ReLU(x *Node) *Node {
	if p.Differentiated && p.flowing {
		return nn.ReLUDifferentiable(x)
	}
	return nn.ReLU(x)
}

// Weight returns the named weight, noting whether it is trainable (not a
// constant): from then on the pass is on the gradient's path.
func (p *Pass) Weight(name string) *Node {
	w := p.Weights.Get(name)
	if !nn.IsConst(w) {
		p.flowing = true
	}
	return w
}

// BNMomentum and BNEps are torch.nn.BatchNorm2d's defaults, used by every
// torchvision CNN.
const (
	BNMomentum = 0.1
	BNEps      = 1e-5
)

// BatchNorm runs the named batch norm as p says: inference mode from its
// running statistics, or train mode, recording the updated statistics.
func (p *Pass) BatchNorm(x *Node, name string) *Node {
	w := p.Weights
	gamma, beta := p.Weight(name+".weight"), p.Weight(name+".bias")
	mean, variance := w.Get(name+".running_mean"), w.Get(name+".running_var")
	if p.TrainBN == nil || !p.TrainBN(name) {
		return nn.BatchNormInference(x, gamma, beta, mean, variance, BNEps)
	}
	y, m, v := nn.BatchNormTrain(x, gamma, beta, mean, variance, BNEps, BNMomentum)
	if p.Updated == nil {
		panic(fmt.Errorf("backbone: batch norm %s trains but the pass has no Updated map", name))
	}
	p.Updated[name+".running_mean"] = m
	p.Updated[name+".running_var"] = v
	count := name + ".num_batches_tracked"
	p.Updated[count] = AddScalar(w.Get(count), 1)
	return y
}

// Conv runs a conv module (torchvision's CNNs have no conv bias) and the hook.
func (p *Pass) Conv(x *Node, m nn.Module) *Node {
	return p.hooked(m, x, nn.Conv2D(x, p.Weight(m.Name+".weight"), m.Kernel, m.Stride, m.Padding, m.Groups))
}

// hooked adds the hook's delta for module m to its output y.
func (p *Pass) hooked(m nn.Module, x, y *Node) *Node {
	if p.Hook != nil {
		if d := p.Hook(m, x); d != nil {
			p.flowing = true
			y = Add(y, d)
		}
	}
	return y
}

// ConvBN runs a conv and the batch norm after it, and the ReLU after them
// if relu. When the pass's weights hold the pair folded (Folded*: the
// batch norm frozen and in eval mode, folded into the conv's weight and a
// shift, exact up to rounding), it is one conv plus a shift, and the hook's
// delta is scaled as the batch norm would have scaled it. In inference,
// a folded conv without a delta is one fused op with its shift and ReLU
// (nn.Conv2DShift). Training keeps the ops apart, built in the order that
// fixes how the gradient's terms are summed.
func (p *Pass) ConvBN(x *Node, conv nn.Module, bn string, relu bool) *Node {
	shift, folded := p.Weights[bn+FoldedShift]
	if !folded || (p.TrainBN != nil && p.TrainBN(bn)) {
		return p.relu(p.BatchNorm(p.Conv(x, conv), bn), relu)
	}
	w := p.Weight(conv.Name + FoldedWeight)
	var y *Node
	if !p.Differentiated {
		d := p.scaledDelta(conv, bn, x)
		if d == nil {
			return nn.Conv2DShift(x, w, shift, conv.Kernel, conv.Stride, conv.Padding, conv.Groups, relu)
		}
		y = Add(nn.Conv2D(x, w, conv.Kernel, conv.Stride, conv.Padding, conv.Groups), d)
	} else {
		y = nn.Conv2D(x, w, conv.Kernel, conv.Stride, conv.Padding, conv.Groups)
		if d := p.scaledDelta(conv, bn, x); d != nil {
			y = Add(y, d)
		}
	}
	return p.relu(Add(y, ExpandLeftToRank(shift, y.Rank())), relu)
}

// scaledDelta is the hook's delta for a conv whose batch norm bn is folded,
// scaled as the batch norm would have scaled it; nil for none.
func (p *Pass) scaledDelta(conv nn.Module, bn string, x *Node) *Node {
	if p.Hook == nil {
		return nil
	}
	d := p.Hook(conv, x)
	if d == nil {
		return nil
	}
	p.flowing = true
	return Mul(d, ExpandLeftToRank(p.Weights.Get(bn+FoldedScale), d.Rank()))
}

// relu is p.ReLU(x) if apply, else x.
func (p *Pass) relu(x *Node, apply bool) *Node {
	if !apply {
		return x
	}
	return p.ReLU(x)
}

// Linear runs a Linear module (weight and bias) and the hook.
func (p *Pass) Linear(x *Node, m nn.Module) *Node {
	return p.hooked(m, x, nn.Dense(x, p.Weight(m.Name+".weight"), p.Weight(m.Name+".bias")))
}
