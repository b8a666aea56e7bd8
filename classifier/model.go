package classifier

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/nn"
	"github.com/lorafit/lorafit/resnet"
)

// Model is a base ResNet adapted as a Spec says. Its variables live in the
// base's Store under their PyTorch keys: "layer1.2.conv3.lora_A.weight",
// "head.0.weight", …
type Model struct {
	Base    *resnet.Model
	Spec    Spec
	Targets []lora.Target
	Head    []HeadLayer

	targets map[string]lora.Target
	saved   []string // module names selected by modules_to_save

	// training is set while a train step's graph is built: LoRA dropout
	// applies then, drawing from rng.
	training bool
	rng      *Node
}

// StartTraining makes graphs built until StopTraining apply lora_dropout,
// drawing masks from rngState (a graph input, so runs are reproducible).
func (m *Model) StartTraining(rngState *Node) { m.training, m.rng = true, rngState }

// StopTraining returns to inference graphs.
func (m *Model) StopTraining() { m.training, m.rng = false, nil }

// New checks spec against the base network: LoRA targets and
// modules_to_save must name modules that exist. Call Init (new weights) or
// Adapter.Apply (saved ones) next to create the adapter's weights.
func New(base *resnet.Model, spec Spec) (*Model, error) {
	m := &Model{Base: base, Spec: spec, targets: map[string]lora.Target{}}
	if (spec.Head != nil || spec.ReplaceFC) && spec.NumClasses <= 0 {
		return nil, fmt.Errorf("num_classes must be positive with a head or a replaced fc")
	}
	fcOut := base.Config.NumClasses
	if spec.ReplaceFC {
		fcOut = spec.NumClasses
	}
	m.Head = spec.Head.Layers(fcOut, spec.NumClasses)
	modules := m.Modules()
	targets, err := lora.Match(&m.Spec.LoRA, modules)
	if err != nil {
		return nil, err
	}
	m.Targets = targets
	for _, t := range targets {
		m.targets[t.Module.Name] = t
	}
	// modules_to_save entries match module names (containers included) as
	// target_modules lists do: exactly or as a dotted suffix.
	names := lora.AllNames(modules)
	for _, entry := range spec.LoRA.ModulesToSave {
		found := false
		for _, n := range names {
			if n == entry || strings.HasSuffix(n, "."+entry) {
				found = true
				m.saved = append(m.saved, n)
			}
		}
		if !found {
			return nil, fmt.Errorf("modules_to_save %q matches no module; closest: %s", entry,
				strings.Join(lora.Closest(entry, names, 5), ", "))
		}
	}
	if spec.ReplaceFC && !slices.Contains(m.saved, "fc") {
		return nil, fmt.Errorf("replace_fc makes a new fc: it must be in modules_to_save to be trained and saved")
	}
	for _, h := range m.Head {
		if !m.isSaved(h.Name) {
			return nil, fmt.Errorf("the head is new: put \"head\" in modules_to_save so it is trained and saved")
		}
	}
	base.Wrap = m.wrap
	return m, nil
}

// Modules lists the leaf modules of the adapted network: the base's (with
// fc resized if replaced) and the head's.
func (m *Model) Modules() []nn.Module {
	var ms []nn.Module
	for _, mod := range m.Base.Config.Modules() {
		if mod.Name == "fc" && m.Spec.ReplaceFC {
			mod.Out = m.Spec.NumClasses
		}
		ms = append(ms, mod)
	}
	for _, h := range m.Head {
		ms = append(ms, nn.Module{Name: h.Name, Type: nn.Linear, In: h.In, Out: h.Out})
	}
	return ms
}

// isSaved tells whether a module (or the container holding it) is in
// modules_to_save.
func (m *Model) isSaved(module string) bool {
	for _, s := range m.saved {
		if module == s || strings.HasPrefix(module, s+".") {
			return true
		}
	}
	return false
}

// Entry is one tensor of the adapted network: its PyTorch key and shape,
// and how it is laid out in the Store.
type Entry struct {
	Key    string
	Shape  []int // PyTorch shape
	Layout nn.Layout
	Kind   string // "base", "lora", "saved" (modules_to_save) or "buffer"
}

// Entries lists every tensor of the adapted network, base first.
func (m *Model) Entries() []Entry {
	var es []Entry
	for _, p := range m.Base.Config.Params() {
		mod := p.Name[:strings.LastIndex(p.Name, ".")]
		if mod == "fc" && m.Spec.ReplaceFC {
			if p.Kind == resnet.LinearWeight {
				p.Shape = []int{m.Spec.NumClasses, p.Shape[1]}
			} else {
				p.Shape = []int{m.Spec.NumClasses}
			}
		}
		e := Entry{Key: p.Name, Shape: p.Shape, Layout: p.Kind.Layout(), Kind: "base"}
		switch {
		case p.Kind.IsBuffer():
			e.Kind = "buffer"
		case m.isSaved(mod):
			e.Kind = "saved"
		}
		es = append(es, e)
	}
	for _, h := range m.Head {
		es = append(es,
			Entry{Key: h.Name + ".weight", Shape: []int{h.Out, h.In}, Layout: nn.LinearLayout, Kind: "saved"},
			Entry{Key: h.Name + ".bias", Shape: []int{h.Out}, Layout: nn.Plain, Kind: "saved"})
	}
	for _, t := range m.Targets {
		a, b := t.Shapes()
		la, lb := nn.ConvLayout, nn.LinearLayout
		if t.Module.Type == nn.Linear {
			la = nn.LinearLayout
		}
		es = append(es,
			Entry{Key: t.Module.Name + ".lora_A.weight", Shape: a, Layout: la, Kind: "lora"},
			Entry{Key: t.Module.Name + ".lora_B.weight", Shape: b, Layout: lb, Kind: "lora"})
	}
	return es
}

// AdapterEntries are what an adapter file holds: LoRA weights and the
// modules_to_save tensors, buffers included (PEFT saves a module's whole
// state_dict).
func (m *Model) AdapterEntries() []Entry {
	var out []Entry
	for _, e := range m.Entries() {
		mod := e.Key[:strings.LastIndex(e.Key, ".")]
		if e.Kind == "lora" || e.Kind == "saved" || (e.Kind == "buffer" && m.isSaved(mod)) {
			out = append(out, e)
		}
	}
	return out
}

// Init creates the adapter's weights: LoRA as init_lora_weights says, and
// a replaced fc and the head with torch's default Linear init, all from
// seed. The base is frozen; LoRA and modules_to_save are trainable.
func (m *Model) Init(seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x4c6f5241)) // "LoRA"
	values := map[string][]float32{}
	linear := func(name string, out, in int) {
		bound := 1 / math.Sqrt(float64(in))
		w, b := make([]float32, out*in), make([]float32, out)
		for i := range w {
			w[i] = float32((2*rng.Float64() - 1) * bound)
		}
		for i := range b {
			b[i] = float32((2*rng.Float64() - 1) * bound)
		}
		values[name+".weight"], values[name+".bias"] = w, b
	}
	if m.Spec.ReplaceFC {
		linear("fc", m.Spec.NumClasses, m.Base.Config.FeatureDim())
	}
	for _, h := range m.Head {
		linear(h.Name, h.Out, h.In)
	}
	for _, t := range m.Targets {
		a, b := t.InitWeights(m.Spec.LoRA.InitLoraWeights, rng)
		values[t.Module.Name+".lora_A.weight"], values[t.Module.Name+".lora_B.weight"] = a, b
	}
	for _, e := range m.Entries() {
		if v, ok := values[e.Key]; ok {
			if err := m.set(e, v); err != nil {
				return err
			}
		}
	}
	m.setTrainable()
	return nil
}

// set stores PyTorch-layout values into the entry's variable, creating or
// replacing it (a replaced fc changes shape).
func (m *Model) set(e Entry, torch []float32) error {
	vals, dims := e.Layout.ToStore(torch, e.Shape)
	path := resnet.VarPath(e.Key)
	store := m.Base.Store
	if v := store.GetVariable(path); v != nil {
		if slices.Equal(v.Shape().Dimensions, dims) {
			return v.SetValue(tensors.FromFlatDataAndDimensions(vals, dims...))
		}
		if err := store.DeleteVariable(path); err != nil {
			return err
		}
	}
	_, err := store.CreateVariable(path, tensors.FromFlatDataAndDimensions(vals, dims...))
	return err
}

// get reads a float entry's variable back in PyTorch layout.
func (m *Model) get(e Entry) ([]float32, error) {
	t, err := resnet.ExportVariable(m.Base.Store, e.Key, e.Layout, e.Shape)
	if err != nil {
		return nil, err
	}
	return t.Float32s()
}

func (m *Model) setTrainable() {
	m.Base.Freeze()
	for _, e := range m.Entries() {
		if e.Kind == "lora" || e.Kind == "saved" {
			m.Base.Store.GetVariable(resnet.VarPath(e.Key)).SetTrainable(true)
		}
	}
}

// Trainable returns the variables that train.
func (m *Model) Trainable() []*model.Variable {
	var vs []*model.Variable
	for v := range m.Base.Store.IterVariables() {
		if v.Trainable {
			vs = append(vs, v)
		}
	}
	return vs
}

// wrap adds the LoRA update to a target module's output.
func (m *Model) wrap(mod nn.Module, x, y *Node) *Node {
	t, ok := m.targets[mod.Name]
	if !ok {
		return y
	}
	g := x.Graph()
	if p := m.Spec.LoRA.LoraDropout; m.training && p > 0 {
		var u *Node
		m.rng, u = RandomUniform(m.rng, x.Shape())
		keep := GreaterOrEqual(u, Scalar(g, x.DType(), p))
		x = Where(keep, DivScalar(x, 1-p), ZerosLike(x))
	}
	a := variable(g, mod.Name+".lora_A.weight")
	b := variable(g, mod.Name+".lora_B.weight")
	if mod.Type == nn.Linear {
		return Add(y, lora.LinearDelta(x, a, b, t.Scaling))
	}
	return Add(y, lora.ConvDelta(x, a, b, mod.Stride, mod.Padding, t.Scaling))
}

func variable(g *Graph, key string) *Node {
	v := model.GetStore(g).GetVariable(resnet.VarPath(key))
	if v == nil {
		panic(fmt.Sprintf("classifier: no variable %q (Init or LoadAdapter first)", key))
	}
	return v.NodeValue(g)
}

// Logits runs the adapted network on x [N,3,H,W]: [N, classes].
func (m *Model) Logits(x *Node) *Node {
	y := m.Base.Logits(x)
	g := y.Graph()
	for i, h := range m.Head {
		if i > 0 {
			y = nn.ReLU(y)
		}
		y = nn.Dense(y, variable(g, h.Name+".weight"), variable(g, h.Name+".bias"))
	}
	return y
}

// StateDict exports every tensor in PyTorch layout (base with the adapter's
// fc, head and LoRA weights as they are, not merged).
func (m *Model) StateDict(entries []Entry) (*checkpoint.StateDict, error) {
	sd := checkpoint.NewStateDict()
	for _, e := range entries {
		t, err := resnet.ExportVariable(m.Base.Store, e.Key, e.Layout, e.Shape)
		if err != nil {
			return nil, err
		}
		sd.Set(e.Key, t)
	}
	return sd, nil
}
