package resnet

import (
	"fmt"
	"strconv"
	"strings"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/nn"
)

// Net is a ResNet architecture: it implements backbone.Network. Its weights
// live in a backbone.Base.
type Net struct {
	Config Config
	stem   convBN
	blocks []block
	fc     nn.Module
}

// New returns the network of a configuration.
func New(cfg Config) *Net {
	cfg = cfg.normalized()
	return &Net{Config: cfg, stem: cfg.stem(), blocks: cfg.blocks(), fc: cfg.fc()}
}

var _ backbone.Network = (*Net)(nil)

func (n *Net) Arch() string             { return n.Config.Arch }
func (n *Net) Describe() string         { return n.Config.Describe() }
func (n *Net) Modules() []nn.Module     { return n.Config.Modules() }
func (n *Net) Params() []backbone.Param { return n.Config.Params() }
func (n *Net) FeatureDim() int          { return n.Config.FeatureDim() }
func (n *Net) NumClasses() int          { return n.Config.NumClasses }

// Stages are "stem" (conv1, bn1, ReLU, max-pool), one per residual block
// ("layer1.0", …), "pool" (global average) and "fc".
func (n *Net) Stages() []string {
	s := []string{"stem"}
	for _, b := range n.blocks {
		s = append(s, b.name)
	}
	return append(s, "pool", "fc")
}

// StageOf is the first stage that runs any part of module: conv1 and bn1
// are the stem's, layer2 and layer2.1.conv2 the first of layer2's blocks
// or that block, fc is fc's.
func (n *Net) StageOf(module string) int {
	switch module {
	case "conv1", "bn1", "relu", "maxpool":
		return 0
	case "avgpool":
		return len(n.blocks) + 1
	case "fc":
		return len(n.blocks) + 2
	}
	for i, b := range n.blocks {
		if b.name == module || strings.HasPrefix(b.name, module+".") || strings.HasPrefix(module, b.name+".") {
			return i + 1
		}
	}
	return -1
}

// Forward runs stages [from, to) on x.
func (n *Net) Forward(x *Node, p *backbone.Pass, from, to int) *Node {
	last := len(n.blocks) + 2
	if from < 0 || to > last+1 || from >= to {
		panic(fmt.Errorf("resnet: stages [%d, %d) out of [0, %d)", from, to, last+1))
	}
	for s := from; s < to; s++ {
		switch {
		case s == 0:
			if x.Rank() != 4 || x.Shape().Dimensions[1] != 3 {
				panic(fmt.Errorf("resnet: input must be [N,3,H,W], got %s", x.Shape()))
			}
			x = TransposeAllAxes(x, 0, 2, 3, 1) // NCHW → NHWC
			x = n.stem.run(x, p)
			x = nn.MaxPool2D(x, 3, 2, 1)
		case s <= len(n.blocks):
			x = n.blocks[s-1].run(x, p)
		case s == last-1:
			x = ReduceMean(x, 1, 2)
		default:
			x = p.Linear(x, n.fc)
		}
	}
	return x
}

// ConvBNs lists the stem's and every block's conv and batch-norm pairs.
func (n *Net) ConvBNs() []backbone.ConvBN {
	pairs := []backbone.ConvBN{{Conv: n.stem.conv, BN: n.stem.bn.Name}}
	for _, b := range n.blocks {
		for _, cb := range append(b.main, b.shortcut...) {
			pairs = append(pairs, backbone.ConvBN{Conv: cb.conv, BN: cb.bn.Name})
		}
	}
	return pairs
}

func (cb convBN) run(x *Node, p *backbone.Pass) *Node {
	return p.ConvBN(x, cb.conv, cb.bn.Name, cb.relu)
}

func (b block) run(x *Node, p *backbone.Pass) *Node {
	y, identity := x, x
	for _, cb := range b.main {
		y = cb.run(y, p)
	}
	for _, cb := range b.shortcut {
		identity = cb.run(identity, p)
	}
	return p.ReLU(Add(y, identity))
}

// InferConfig reads the architecture off a state_dict's keys and shapes, so
// `--weights file.pth` needs no `--model`, and a mismatch can be named.
func InferConfig(sd *checkpoint.StateDict) (Config, error) {
	stem := sd.Get("conv1.weight")
	fc := sd.Get("fc.weight")
	if stem == nil || fc == nil || len(stem.Shape) != 4 || len(fc.Shape) != 2 {
		return Config{}, fmt.Errorf("not a torchvision ResNet state_dict: conv1.weight [W,3,7,7] and fc.weight [classes,features] are needed")
	}
	c := Config{Width: stem.Shape[0], NumClasses: fc.Shape[0], Block: Basic, Groups: 1, WidthPerGroup: 64}
	for _, name := range sd.Names {
		var li, bi int
		if n, _ := fmt.Sscanf(name, "layer%d.%d.", &li, &bi); n == 2 && li >= 1 && li <= 4 {
			if bi+1 > c.Layers[li-1] {
				c.Layers[li-1] = bi + 1
			}
		}
		if strings.HasSuffix(name, ".conv3.weight") {
			c.Block = Bottleneck
		}
	}
	// The bottleneck's groups and base width, from its 3×3 convs [width,
	// width/groups, 3, 3] (width = planes·base_width/64·groups). A grouped
	// conv merged with a LoRA is stored dense: groups is the largest ratio.
	if c.Block == Bottleneck {
		var convs []nn.Module
		for _, b := range c.blocks() {
			convs = append(convs, b.main[1].conv)
		}
		for _, m := range convs {
			if t := sd.Get(m.Name + ".weight"); t != nil && len(t.Shape) == 4 && t.Shape[1] > 0 {
				c.Groups = max(c.Groups, t.Shape[0]/t.Shape[1])
			}
		}
		if t := sd.Get("layer1.0.conv2.weight"); t != nil && len(t.Shape) == 4 {
			c.WidthPerGroup = t.Shape[0] / c.Groups * 64 / c.Width
		}
		for _, m := range convs {
			if t := sd.Get(m.Name + ".weight"); c.Groups > 1 && t != nil && len(t.Shape) == 4 && t.Shape[1] == t.Shape[0] {
				c.Dense = append(c.Dense, m.Name)
			}
		}
	}
	c.Arch = "resnet-custom"
	for _, a := range archs {
		a = a.normalized()
		if a.Block == c.Block && a.Layers == c.Layers && a.Groups == c.Groups && a.WidthPerGroup == c.WidthPerGroup {
			c.Arch = a.Arch
		}
	}
	if c.Width != 64 {
		c.Arch += "-w" + strconv.Itoa(c.Width)
	}
	return c, nil
}

// FromStateDict builds the network a state_dict holds and loads it: arch
// may be empty (read off the keys), else it must agree with them. source
// names the file in errors; sha identifies the weights (see backbone.Base).
func FromStateDict(sd *checkpoint.StateDict, arch, source, sha string) (*backbone.Base, error) {
	found, err := InferConfig(sd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	cfg := found
	if arch != "" {
		if cfg, err = ConfigFor(arch); err != nil {
			return nil, err
		}
		if found.Block != cfg.Block || found.Layers != cfg.Layers || found.Groups != cfg.Groups || found.WidthPerGroup != cfg.WidthPerGroup {
			return nil, fmt.Errorf("%s: holds a %s, but the model is a %s", source, found.Describe(), cfg.Describe())
		}
		cfg.Width, cfg.NumClasses, cfg.Dense = found.Width, found.NumClasses, found.Dense
	}
	return backbone.Load(New(cfg), sd, source, sha)
}
