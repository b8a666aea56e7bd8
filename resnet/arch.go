// Package resnet builds torchvision's resnet.py family in GoMLX: ResNet-18…152
// (v1.5: the stride sits on the 3×3 conv of the bottleneck), ResNeXt (grouped
// 3×3 convs) and Wide ResNet (wider bottlenecks). One small table describes
// every architecture, each residual block is described once, and its module
// list, state_dict entries and forward pass all come from that description.
// Every entry carries exactly torchvision's state_dict key, so a checkpoint
// saved by PyTorch loads with no renaming and PyTorch users pick LoRA targets
// by the names they already know.
package resnet

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/nn"
)

// Block is the residual block kind.
type Block int

const (
	// Basic is two 3×3 convs (ResNet-18/34).
	Basic Block = iota
	// Bottleneck is 1×1 → 3×3 → 1×1 with 4× expansion (ResNet-50 and up,
	// ResNeXt, Wide ResNet).
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

// Config describes one network of the family, with torchvision's
// ResNet(block, layers, groups, width_per_group) arguments. Width is the
// stem's channel count (64 in every torchvision model; the parity fixtures
// shrink it to keep files small).
type Config struct {
	Arch          string
	Block         Block
	Layers        [4]int
	Width         int
	Groups        int // of the bottleneck's 3×3 convs (ResNeXt: 32 or 64)
	WidthPerGroup int // torchvision's base_width: 64, ResNeXt 4 or 8, Wide 128
	NumClasses    int
	// Dense names grouped convs whose weight is stored ungrouped: merging a
	// LoRA into a grouped conv (whose update mixes every input channel)
	// makes it an ordinary conv.
	Dense []string
}

var archs = map[string]Config{
	"resnet18":         {Arch: "resnet18", Block: Basic, Layers: [4]int{2, 2, 2, 2}},
	"resnet34":         {Arch: "resnet34", Block: Basic, Layers: [4]int{3, 4, 6, 3}},
	"resnet50":         {Arch: "resnet50", Block: Bottleneck, Layers: [4]int{3, 4, 6, 3}},
	"resnet101":        {Arch: "resnet101", Block: Bottleneck, Layers: [4]int{3, 4, 23, 3}},
	"resnet152":        {Arch: "resnet152", Block: Bottleneck, Layers: [4]int{3, 8, 36, 3}},
	"resnext50_32x4d":  {Arch: "resnext50_32x4d", Block: Bottleneck, Layers: [4]int{3, 4, 6, 3}, Groups: 32, WidthPerGroup: 4},
	"resnext101_32x8d": {Arch: "resnext101_32x8d", Block: Bottleneck, Layers: [4]int{3, 4, 23, 3}, Groups: 32, WidthPerGroup: 8},
	"resnext101_64x4d": {Arch: "resnext101_64x4d", Block: Bottleneck, Layers: [4]int{3, 4, 23, 3}, Groups: 64, WidthPerGroup: 4},
	"wide_resnet50_2":  {Arch: "wide_resnet50_2", Block: Bottleneck, Layers: [4]int{3, 4, 6, 3}, WidthPerGroup: 128},
	"wide_resnet101_2": {Arch: "wide_resnet101_2", Block: Bottleneck, Layers: [4]int{3, 4, 23, 3}, WidthPerGroup: 128},
}

// Archs lists the known architecture names: the plain ResNets by depth,
// then the others by name.
func Archs() []string {
	names := make([]string, 0, len(archs))
	for n := range archs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		pi, pj := strings.HasPrefix(names[i], "resnet"), strings.HasPrefix(names[j], "resnet")
		if pi != pj {
			return pi
		}
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
	return c.normalized(), nil
}

// normalized fills torchvision's defaults: groups 1, base width 64.
func (c Config) normalized() Config {
	c.Groups = max(c.Groups, 1)
	if c.WidthPerGroup == 0 {
		c.WidthPerGroup = 64
	}
	return c
}

// convBN is one conv and the batch norm after it, and whether a ReLU
// follows (the last of a block's main path is added to the shortcut first).
type convBN struct {
	conv, bn nn.Module
	relu     bool
}

// block is one residual block: its main path, and the downsampling shortcut
// (nil: identity). Its modules, entries and forward all read this.
type block struct {
	name     string
	main     []convBN
	shortcut []convBN
}

func (c Config) convBN(name string, in, out, k, stride, groups int, relu bool) convBN {
	if slices.Contains(c.Dense, name) {
		groups = 1
	}
	return convBN{
		conv: nn.Module{Name: name, Type: nn.Conv2d, In: in, Out: out, Kernel: k, Stride: stride, Padding: k / 2, Groups: groups},
		bn:   nn.Module{Name: strings.Replace(name, "conv", "bn", 1), Type: nn.BatchNorm2d, In: out, Out: out},
		relu: relu,
	}
}

// stem is conv1 (7×7, stride 2) and bn1; a 3×3 max-pool follows.
func (c Config) stem() convBN { return c.convBN("conv1", 3, c.Width, 7, 2, 1, true) }

// blocks lays the residual blocks out as torchvision's _make_layer does.
func (c Config) blocks() []block {
	c = c.normalized()
	var bs []block
	in := c.Width
	for li, n := range c.Layers {
		planes := c.Width << li
		out := planes * c.Block.expansion()
		for bi := 0; bi < n; bi++ {
			stride := 1
			if bi == 0 && li > 0 {
				stride = 2
			}
			b := block{name: fmt.Sprintf("layer%d.%d", li+1, bi)}
			p := b.name + "."
			if c.Block == Basic {
				b.main = []convBN{
					c.convBN(p+"conv1", in, planes, 3, stride, 1, true),
					c.convBN(p+"conv2", planes, planes, 3, 1, 1, false),
				}
			} else {
				width := planes * c.WidthPerGroup / 64 * c.Groups
				b.main = []convBN{
					c.convBN(p+"conv1", in, width, 1, 1, 1, true),
					c.convBN(p+"conv2", width, width, 3, stride, c.Groups, true),
					c.convBN(p+"conv3", width, out, 1, 1, 1, false),
				}
			}
			if bi == 0 && (stride != 1 || in != out) {
				d := c.convBN(p+"downsample.0", in, out, 1, stride, 1, false)
				d.bn.Name = p + "downsample.1"
				b.shortcut = []convBN{d}
			}
			bs = append(bs, b)
			in = out
		}
	}
	return bs
}

// fc is the classifier.
func (c Config) fc() nn.Module {
	return nn.Module{Name: "fc", Type: nn.Linear, In: c.FeatureDim(), Out: c.NumClasses}
}

// Modules lists the leaf modules in torchvision's order (named_modules).
func (c Config) Modules() []nn.Module {
	s := c.stem()
	ms := []nn.Module{s.conv, s.bn}
	for _, b := range c.blocks() {
		for _, cb := range append(b.main, b.shortcut...) {
			ms = append(ms, cb.conv, cb.bn)
		}
	}
	return append(ms, c.fc())
}

// Params lists every state_dict entry in torchvision's order.
func (c Config) Params() []backbone.Param { return backbone.ParamsOf(c.Modules()) }

// FeatureDim is the width of the pooled features fed to fc (2048 for ResNet-50).
func (c Config) FeatureDim() int { return 8 * c.Width * c.Block.expansion() }

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
	c = c.normalized()
	s := fmt.Sprintf("%s (%s %v, width %d", c.Arch, c.Block, c.Layers, c.Width)
	if c.Groups > 1 || c.WidthPerGroup != 64 {
		s += fmt.Sprintf(", %dx%d", c.Groups, c.WidthPerGroup)
	}
	return s + fmt.Sprintf(", %d classes)", c.NumClasses)
}
