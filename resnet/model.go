package resnet

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/nn"
)

// bnEps is torch.nn.BatchNorm2d's default epsilon, used by torchvision.
const bnEps = 1e-5

// Model is a ResNet whose weights live in a GoMLX Store, one variable per
// state_dict entry, at the path of its key ("layer1.0.conv1.weight" is the
// variable "/layer1/0/conv1/weight"). Conv and Linear weights are kept in
// matmul layout (see nn.ConvWeightFromTorch); Load and StateDict convert.
type Model struct {
	Config Config
	Store  *model.Store

	// Wrap, when set, is called on every conv and on fc with the module's
	// input x and output y (NHWC for convs, before batch norm) and returns
	// the output to use: how LoRA is injected without the network knowing.
	Wrap func(m Module, x, y *Node) *Node

	modules map[string]Module
}

// VarPath maps a state_dict key to its variable path in the Store.
func VarPath(key string) string { return "/" + strings.ReplaceAll(key, ".", "/") }

// New returns a model of the given configuration with no weights yet: call
// Load before running it.
func New(cfg Config) *Model {
	m := &Model{Config: cfg, Store: model.NewStore(), modules: map[string]Module{}}
	for _, mod := range cfg.Modules() {
		m.modules[mod.Name] = mod
	}
	return m
}

// Load validates sd against the architecture and copies it into the Store.
// Every problem is reported at once: a missing key, an unexpected key and a
// shape mismatch each name the key, and a file of another architecture is
// named as such. source names the file in errors.
func (m *Model) Load(sd *checkpoint.StateDict, source string) error {
	if found, err := InferConfig(sd); err == nil && (found.Block != m.Config.Block || found.Layers != m.Config.Layers || found.Width != m.Config.Width) {
		return fmt.Errorf("%s: holds a %s, but the model is a %s", source, found.Describe(), m.Config.Describe())
	}
	want := m.Config.Params()
	var problems []string
	known := map[string]bool{}
	for _, p := range want {
		known[p.Name] = true
		t := sd.Get(p.Name)
		if t == nil {
			problems = append(problems, fmt.Sprintf("missing key %q", p.Name))
			continue
		}
		if !slices.Equal(t.Shape, p.Shape) {
			problems = append(problems, fmt.Sprintf("key %q: expected shape %v, found %v", p.Name, p.Shape, t.Shape))
		}
	}
	for _, name := range sd.Names {
		if !known[name] {
			problems = append(problems, fmt.Sprintf("unexpected key %q", name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: does not fit %s: %s", source, m.Config.Describe(), summarize(problems, 8))
	}
	for _, p := range want {
		value, err := toVariable(p, sd.Get(p.Name))
		if err != nil {
			return fmt.Errorf("%s: key %q: %w", source, p.Name, err)
		}
		path := VarPath(p.Name)
		if v := m.Store.GetVariable(path); v != nil {
			if err := v.SetValue(value); err != nil {
				return fmt.Errorf("%s: key %q: %w", source, p.Name, err)
			}
			continue
		}
		if _, err := m.Store.CreateVariable(path, value); err != nil {
			return fmt.Errorf("%s: key %q: %w", source, p.Name, err)
		}
	}
	return nil
}

// toVariable converts one state_dict tensor to the Store's layout and dtype.
func toVariable(p Param, t *checkpoint.Tensor) (*tensors.Tensor, error) {
	vals, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	if p.Kind == BNCount {
		return tensors.FromScalar(int64(vals[0])), nil
	}
	v, dims := p.Kind.Layout().ToStore(vals, p.Shape)
	return tensors.FromFlatDataAndDimensions(v, dims...), nil
}

// StateDict exports the weights in PyTorch layout under torchvision's keys,
// in torchvision's order: what `torch.load` + `load_state_dict` expect.
func (m *Model) StateDict() (*checkpoint.StateDict, error) {
	sd := checkpoint.NewStateDict()
	for _, p := range m.Config.Params() {
		t, err := ExportVariable(m.Store, p.Name, p.Kind.Layout(), p.Shape)
		if err != nil {
			return nil, err
		}
		sd.Set(p.Name, t)
	}
	return sd, nil
}

// ExportVariable reads the variable of a state_dict key back as a PyTorch
// tensor of the given shape: float variables as F32 converted from the
// Store's layout, int64 ones (num_batches_tracked) as I64.
func ExportVariable(store *model.Store, key string, layout nn.Layout, shape []int) (*checkpoint.Tensor, error) {
	v := store.GetVariable(VarPath(key))
	if v == nil {
		return nil, fmt.Errorf("model has no weights for %q: nothing was loaded into it", key)
	}
	value, err := v.Value()
	if err != nil {
		return nil, fmt.Errorf("%q: %w", key, err)
	}
	if value.DType() == dtypes.Int64 {
		return checkpoint.FromInt64(shape, tensors.MustCopyFlatData[int64](value)), nil
	}
	return checkpoint.FromFloat32(shape, layout.ToTorch(tensors.MustCopyFlatData[float32](value), shape)), nil
}

// Freeze marks every variable as not trainable (gradients are then never
// computed for them); LoRA and heads add their own trainable variables.
func (m *Model) Freeze() {
	for v := range m.Store.IterVariables() {
		v.SetTrainable(false)
	}
}

// param fetches a variable's value in the graph being built.
func param(g *Graph, key string) *Node {
	v := model.GetStore(g).GetVariable(VarPath(key))
	if v == nil {
		panic(fmt.Sprintf("resnet: no variable for %q (was the model loaded?)", key))
	}
	return v.NodeValue(g)
}

// conv runs the named conv module (no bias: torchvision's ResNets have none).
func (m *Model) conv(x *Node, name string) *Node {
	mod := m.modules[name]
	y := nn.Conv2D(x, param(x.Graph(), name+".weight"), mod.Stride, mod.Padding)
	if m.Wrap != nil {
		y = m.Wrap(mod, x, y)
	}
	return y
}

// bn runs the named batch norm in inference mode (frozen statistics).
func bn(x *Node, name string) *Node {
	g := x.Graph()
	return nn.BatchNormInference(x, param(g, name+".weight"), param(g, name+".bias"),
		param(g, name+".running_mean"), param(g, name+".running_var"), bnEps)
}

// Features runs the backbone on images x [N,3,H,W] (NCHW, as PyTorch users
// pass them) and returns the pooled features [N, FeatureDim].
func (m *Model) Features(x *Node) *Node {
	if x.Rank() != 4 || x.Shape().Dimensions[1] != 3 {
		panic(fmt.Sprintf("resnet: input must be [N,3,H,W], got %s", x.Shape()))
	}
	x = TransposeAllAxes(x, 0, 2, 3, 1) // NCHW → NHWC
	x = nn.ReLU(bn(m.conv(x, "conv1"), "bn1"))
	x = nn.MaxPool2D(x, 3, 2, 1)
	for _, b := range m.Config.Blocks() {
		x = m.block(x, b)
	}
	return ReduceMean(x, 1, 2)
}

// Logits is Features followed by fc: [N, NumClasses], before softmax.
func (m *Model) Logits(x *Node) *Node {
	f := m.Features(x)
	g := f.Graph()
	y := nn.Dense(f, param(g, "fc.weight"), param(g, "fc.bias"))
	if m.Wrap != nil {
		y = m.Wrap(m.modules["fc"], f, y)
	}
	return y
}

func (m *Model) block(x *Node, b BlockSpec) *Node {
	identity := x
	n := b.Name + "."
	var y *Node
	if m.Config.Block == Basic {
		y = nn.ReLU(bn(m.conv(x, n+"conv1"), n+"bn1"))
		y = bn(m.conv(y, n+"conv2"), n+"bn2")
	} else {
		y = nn.ReLU(bn(m.conv(x, n+"conv1"), n+"bn1"))
		y = nn.ReLU(bn(m.conv(y, n+"conv2"), n+"bn2"))
		y = bn(m.conv(y, n+"conv3"), n+"bn3")
	}
	if b.Downsample {
		identity = bn(m.conv(x, n+"downsample.0"), n+"downsample.1")
	}
	return nn.ReLU(Add(y, identity))
}

// InferConfig reads the architecture off a state_dict's keys and shapes, so
// `--weights file.pth` needs no `--model`, and a mismatch can be named.
func InferConfig(sd *checkpoint.StateDict) (Config, error) {
	stem := sd.Get("conv1.weight")
	fc := sd.Get("fc.weight")
	if stem == nil || fc == nil || len(stem.Shape) != 4 || len(fc.Shape) != 2 {
		return Config{}, fmt.Errorf("not a torchvision ResNet state_dict: conv1.weight [W,3,7,7] and fc.weight [classes,features] are needed")
	}
	c := Config{Width: stem.Shape[0], NumClasses: fc.Shape[0], Block: Basic}
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
	c.Arch = "resnet-custom"
	for _, a := range archs {
		if a.Block == c.Block && a.Layers == c.Layers {
			c.Arch = a.Arch
		}
	}
	if c.Width != 64 {
		c.Arch += "-w" + strconv.Itoa(c.Width)
	}
	return c, nil
}

// summarize joins up to max problems and says how many more there are.
func summarize(problems []string, max int) string {
	if len(problems) <= max {
		return strings.Join(problems, "; ")
	}
	return strings.Join(problems[:max], "; ") + fmt.Sprintf("; and %d more", len(problems)-max)
}
