// Package resnet builds torchvision's ResNets (v1.5: the stride sits on the
// 3×3 conv of the bottleneck) in GoMLX. One small table describes every depth,
// and every parameter and buffer carries exactly torchvision's state_dict key,
// so a checkpoint saved by PyTorch loads with no renaming and PyTorch users can
// pick LoRA targets by the names they already know.
package resnet

import (
	"fmt"
	"sort"
	"strings"

	"github.com/lorafit/lorafit/nn"
)

// Block is the residual block kind.
type Block int

const (
	// Basic is two 3×3 convs (ResNet-18/34).
	Basic Block = iota
	// Bottleneck is 1×1 → 3×3 → 1×1 with 4× expansion (ResNet-50/101/152).
	Bottleneck
)

func (b Block) String() string {
	if b == Bottleneck {
		return "Bottleneck"
	}
	return "BasicBlock"
}

// expansion is the ratio of a block's output channels to its planes.
func (b Block) expansion() int {
	if b == Bottleneck {
		return 4
	}
	return 1
}

// Config describes one ResNet. Width is the stem's channel count (64 in every
// torchvision model); the parity fixtures shrink it to keep files small.
type Config struct {
	Arch       string
	Block      Block
	Layers     [4]int
	Width      int
	NumClasses int
}

var archs = map[string]Config{
	"resnet18":  {Arch: "resnet18", Block: Basic, Layers: [4]int{2, 2, 2, 2}},
	"resnet34":  {Arch: "resnet34", Block: Basic, Layers: [4]int{3, 4, 6, 3}},
	"resnet50":  {Arch: "resnet50", Block: Bottleneck, Layers: [4]int{3, 4, 6, 3}},
	"resnet101": {Arch: "resnet101", Block: Bottleneck, Layers: [4]int{3, 4, 23, 3}},
	"resnet152": {Arch: "resnet152", Block: Bottleneck, Layers: [4]int{3, 8, 36, 3}},
}

// Archs lists the known architecture names.
func Archs() []string {
	names := make([]string, 0, len(archs))
	for n := range archs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return len(names[i]) < len(names[j]) || len(names[i]) == len(names[j]) && names[i] < names[j]
	})
	return names
}

// ConfigFor returns torchvision's configuration of arch, with 1000 classes.
func ConfigFor(arch string) (Config, error) {
	c, ok := archs[strings.ToLower(arch)]
	if !ok {
		return Config{}, fmt.Errorf("unknown model %q (known: %s)", arch, strings.Join(Archs(), ", "))
	}
	c.Width, c.NumClasses = 64, 1000
	return c, nil
}

// Kind says what a state_dict entry is, which decides its layout and whether
// it is a parameter (counted, trainable) or a buffer.
type Kind int

const (
	ConvWeight Kind = iota
	LinearWeight
	LinearBias
	BNWeight
	BNBias
	BNMean
	BNVar
	BNCount // num_batches_tracked: an int64 scalar, kept so files round-trip
)

// Layout is how the entry is kept in the Store.
func (k Kind) Layout() nn.Layout {
	switch k {
	case ConvWeight:
		return nn.ConvLayout
	case LinearWeight:
		return nn.LinearLayout
	}
	return nn.Plain
}

// IsBuffer tells buffers (running stats) from parameters.
func (k Kind) IsBuffer() bool { return k >= BNMean }

// Param is one state_dict entry: its torchvision key, kind and PyTorch shape.
type Param struct {
	Name  string
	Kind  Kind
	Shape []int
}

// NumElements is the product of the shape.
func (p Param) NumElements() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Module is re-exported from nn: resnet describes its layers with it.
type Module = nn.Module

const (
	Conv2d      = nn.Conv2d
	BatchNorm2d = nn.BatchNorm2d
	Linear      = nn.Linear
)

// Modules lists the leaf modules in torchvision's order (named_modules).
func (c Config) Modules() []Module {
	var ms []Module
	conv := func(name string, in, out, k, stride int) {
		ms = append(ms, Module{Name: name, Type: Conv2d, In: in, Out: out, Kernel: k, Stride: stride, Padding: k / 2})
	}
	bn := func(name string, ch int) { ms = append(ms, Module{Name: name, Type: BatchNorm2d, In: ch, Out: ch}) }
	conv("conv1", 3, c.Width, 7, 2)
	bn("bn1", c.Width)
	for _, b := range c.Blocks() {
		switch c.Block {
		case Basic:
			conv(b.Name+".conv1", b.In, b.Planes, 3, b.Stride)
			bn(b.Name+".bn1", b.Planes)
			conv(b.Name+".conv2", b.Planes, b.Planes, 3, 1)
			bn(b.Name+".bn2", b.Planes)
		case Bottleneck:
			conv(b.Name+".conv1", b.In, b.Planes, 1, 1)
			bn(b.Name+".bn1", b.Planes)
			conv(b.Name+".conv2", b.Planes, b.Planes, 3, b.Stride)
			bn(b.Name+".bn2", b.Planes)
			conv(b.Name+".conv3", b.Planes, b.Out, 1, 1)
			bn(b.Name+".bn3", b.Out)
		}
		if b.Downsample {
			conv(b.Name+".downsample.0", b.In, b.Out, 1, b.Stride)
			bn(b.Name+".downsample.1", b.Out)
		}
	}
	return append(ms, Module{Name: "fc", Type: Linear, In: c.FeatureDim(), Out: c.NumClasses})
}

// Params lists every state_dict entry in torchvision's order.
func (c Config) Params() []Param {
	var ps []Param
	for _, m := range c.Modules() {
		switch m.Type {
		case Conv2d:
			ps = append(ps, Param{m.Name + ".weight", ConvWeight, []int{m.Out, m.In, m.Kernel, m.Kernel}})
		case BatchNorm2d:
			ps = append(ps,
				Param{m.Name + ".weight", BNWeight, []int{m.Out}},
				Param{m.Name + ".bias", BNBias, []int{m.Out}},
				Param{m.Name + ".running_mean", BNMean, []int{m.Out}},
				Param{m.Name + ".running_var", BNVar, []int{m.Out}},
				Param{m.Name + ".num_batches_tracked", BNCount, []int{}})
		case Linear:
			ps = append(ps,
				Param{m.Name + ".weight", LinearWeight, []int{m.Out, m.In}},
				Param{m.Name + ".bias", LinearBias, []int{m.Out}})
		}
	}
	return ps
}

// FeatureDim is the width of the pooled features fed to fc (2048 for ResNet-50).
func (c Config) FeatureDim() int { return 8 * c.Width * c.Block.expansion() }

// BlockSpec is one residual block: its module name (layer2.0), input, inner
// and output channels, stride, and whether it needs a downsample shortcut.
type BlockSpec struct {
	Name            string
	In, Planes, Out int
	Stride          int
	Downsample      bool
}

// Blocks lists the residual blocks in order, as torchvision's _make_layer
// lays them out.
func (c Config) Blocks() []BlockSpec {
	var bs []BlockSpec
	in := c.Width
	for li, n := range c.Layers {
		planes := c.Width << li
		out := planes * c.Block.expansion()
		for bi := 0; bi < n; bi++ {
			stride := 1
			if bi == 0 && li > 0 {
				stride = 2
			}
			bs = append(bs, BlockSpec{
				Name: fmt.Sprintf("layer%d.%d", li+1, bi), In: in, Planes: planes, Out: out,
				Stride: stride, Downsample: bi == 0 && (stride != 1 || in != out),
			})
			in = out
		}
	}
	return bs
}

// NumParams counts parameters (buffers excluded), as torchvision's
// weights metadata does.
func (c Config) NumParams() int {
	n := 0
	for _, p := range c.Params() {
		if !p.Kind.IsBuffer() {
			n += p.NumElements()
		}
	}
	return n
}

// Describe is a one-line summary used in errors and logs.
func (c Config) Describe() string {
	return fmt.Sprintf("%s (%s %v, width %d, %d classes)", c.Arch, c.Block, c.Layers, c.Width, c.NumClasses)
}
