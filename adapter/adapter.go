// Package adapter holds what fine-tuning makes: an adaptation of a base
// network that is a value of its own, apart from the base, as PEFT keeps its
// adapters beside the model they wrap. An Adapter carries its spec (the LoRA
// config, a head, whether fc is replaced), its LoRA tensors, its own copies
// of the modules it saves (PEFT's ModulesToSaveWrapper: the base's originals
// stay untouched and usable by other adapters), its head, class names and
// preprocessing. It reads and writes PEFT's directory format
// (adapter_config.json + adapter_model.safetensors) plus lorafit.json, which
// binds it to the sha256 of its base.
package adapter

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/nn"
)

// Adapter is one adaptation of a network architecture with its own tensors.
// Loading N adapters costs one base plus their own bytes; training one
// never changes a base tensor.
type Adapter struct {
	Spec    Spec
	Info    Info
	Targets []lora.Target
	Head    []HeadLayer

	net     backbone.Network
	modules []nn.Module // the adapted network's leaf modules
	saved   []string    // modules selected by modules_to_save
	entries []Entry
	tensors map[string]*tensors.Tensor // graph layout, by key
}

// Entry is one tensor an adapter holds: its PyTorch key and shape, how it is
// laid out for graphs, and what it is.
type Entry struct {
	Key    string
	Shape  []int // PyTorch shape
	Layout nn.Layout
	// Kind is "lora" (lora_A, lora_B), "saved" (a parameter of a module in
	// modules_to_save, the head included) or "buffer" (a saved batch norm's
	// running statistics: state, not trained by gradients).
	Kind   string
	Module string
}

// Trainable tells whether the optimizer updates the entry.
func (e Entry) Trainable() bool { return e.Kind == "lora" || e.Kind == "saved" }

// New resolves spec against a network: LoRA targets and modules_to_save must
// name modules that exist. It creates no tensors: call Init (new weights) or
// load a saved adapter (File.Bind).
func New(net backbone.Network, spec Spec) (*Adapter, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	a := &Adapter{Spec: spec, net: net}
	fcOut := net.NumClasses()
	if spec.ReplaceFC {
		fcOut = spec.NumClasses
	}
	a.Head = spec.Head.Layers(fcOut, spec.NumClasses)
	for _, m := range net.Modules() {
		if m.Name == "fc" && spec.ReplaceFC {
			m.Out = spec.NumClasses
		}
		a.modules = append(a.modules, m)
	}
	for _, h := range a.Head {
		a.modules = append(a.modules, nn.Module{Name: h.Name, Type: nn.Linear, In: h.In, Out: h.Out})
	}
	targets, err := lora.Match(&a.Spec.LoRA, a.modules)
	if err != nil {
		return nil, err
	}
	a.Targets = targets
	// modules_to_save entries match module names (containers included) as
	// target_modules lists do: exactly or as a dotted suffix.
	names := lora.AllNames(a.modules)
	for _, entry := range spec.LoRA.ModulesToSave {
		found := false
		for _, n := range names {
			if n == entry || strings.HasSuffix(n, "."+entry) {
				found = true
				a.saved = append(a.saved, n)
			}
		}
		if !found {
			return nil, fmt.Errorf("modules_to_save %q matches no module; closest: %s", entry,
				strings.Join(lora.Closest(entry, names, 5), ", "))
		}
	}
	if spec.ReplaceFC && !slices.Contains(a.saved, "fc") {
		return nil, fmt.Errorf("replace_fc makes a new fc: it must be in modules_to_save to be trained and saved")
	}
	for _, h := range a.Head {
		if !a.IsSaved(h.Name) {
			return nil, fmt.Errorf("the head is new: put \"head\" in modules_to_save so it is trained and saved")
		}
	}
	for _, t := range a.Targets {
		if a.IsSaved(t.Module.Name) {
			return nil, fmt.Errorf("%s is both a LoRA target and in modules_to_save: choose one", t.Module.Name)
		}
	}
	a.entries = a.listEntries()
	return a, nil
}

// Net is the architecture the adapter was resolved against.
func (a *Adapter) Net() backbone.Network { return a.net }

// Modules lists the adapted network's leaf modules: the base's (fc resized
// if replaced) and the head's.
func (a *Adapter) Modules() []nn.Module { return a.modules }

// IsSaved tells whether a module (or the container holding it) is in
// modules_to_save.
func (a *Adapter) IsSaved(module string) bool {
	for _, s := range a.saved {
		if module == s || strings.HasPrefix(module, s+".") {
			return true
		}
	}
	return false
}

// NumClasses is the width of the adapted network's output.
func (a *Adapter) NumClasses() int {
	if len(a.Head) > 0 {
		return a.Head[len(a.Head)-1].Out
	}
	if a.Spec.ReplaceFC {
		return a.Spec.NumClasses
	}
	return a.net.NumClasses()
}

// Entries lists the tensors the adapter holds: saved modules' in the
// network's order, then the head's, then LoRA's — the order PEFT saves.
func (a *Adapter) Entries() []Entry { return a.entries }

func (a *Adapter) listEntries() []Entry {
	var es []Entry
	for _, m := range a.modules {
		if !a.IsSaved(m.Name) {
			continue
		}
		for _, p := range backbone.ModuleParams(m) {
			kind := "saved"
			if p.Kind.IsBuffer() {
				kind = "buffer"
			}
			es = append(es, Entry{Key: p.Name, Shape: p.Shape, Layout: p.Kind.Layout(), Kind: kind, Module: m.Name})
		}
	}
	for _, t := range a.Targets {
		as, bs := t.Shapes()
		la := nn.ConvLayout // B too: a 1×1 conv
		if t.Module.Type == nn.Linear {
			la = nn.LinearLayout
		}
		name := t.Module.Name
		es = append(es,
			Entry{Key: name + ".lora_A.weight", Shape: as, Layout: la, Kind: "lora", Module: name},
			Entry{Key: name + ".lora_B.weight", Shape: bs, Layout: la, Kind: "lora", Module: name})
	}
	return es
}

// TrainsBatchNorm tells whether a batch norm is the adapter's own (saved),
// and so runs in train mode while the adapter trains, as PyTorch's
// model.train() would run it.
func (a *Adapter) TrainsBatchNorm(module string) bool { return a.IsSaved(module) }

// HasTrainBatchNorm tells whether any saved module is a batch norm.
func (a *Adapter) HasTrainBatchNorm() bool {
	for _, e := range a.entries {
		if e.Kind == "buffer" {
			return true
		}
	}
	return false
}

// Tensor returns an entry's tensor in graph layout (nil before Init or
// loading). Callers must not modify it.
func (a *Adapter) Tensor(key string) *tensors.Tensor { return a.tensors[key] }

// SetTensor replaces an entry's tensor (graph layout), as training does.
func (a *Adapter) SetTensor(key string, t *tensors.Tensor) error {
	e, ok := a.entry(key)
	if !ok {
		return fmt.Errorf("adapter has no tensor %q", key)
	}
	if a.tensors == nil {
		a.tensors = map[string]*tensors.Tensor{}
	}
	if old := a.tensors[key]; old != nil && !old.Shape().Equal(t.Shape()) {
		return fmt.Errorf("%s: shape %s, the adapter holds %s", e.Key, t.Shape(), old.Shape())
	}
	a.tensors[key] = t
	return nil
}

func (a *Adapter) entry(key string) (Entry, bool) {
	for _, e := range a.entries {
		if e.Key == key {
			return e, true
		}
	}
	return Entry{}, false
}

// Clone returns an adapter sharing the spec and the (immutable) tensors, whose
// tensors can be replaced without affecting a: training starts from a
// clone, so the adapter given is left as it was.
func (a *Adapter) Clone() *Adapter {
	c := *a
	c.tensors = make(map[string]*tensors.Tensor, len(a.tensors))
	for k, v := range a.tensors {
		c.tensors[k] = v
	}
	return &c
}

// Init creates the adapter's tensors: LoRA as init_lora_weights says; a
// replaced fc and the head with torch's default Linear init (from seed);
// every other saved module as a copy of the base's, as PEFT copies the
// module it wraps.
func (a *Adapter) Init(base *backbone.Base, seed uint64) error {
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
	if a.Spec.ReplaceFC {
		linear("fc", a.Spec.NumClasses, a.net.FeatureDim())
	}
	for _, h := range a.Head {
		linear(h.Name, h.Out, h.In)
	}
	for _, t := range a.Targets {
		av, bv := t.InitWeights(a.Spec.LoRA.InitLoraWeights, rng)
		values[t.Module.Name+".lora_A.weight"], values[t.Module.Name+".lora_B.weight"] = av, bv
	}
	a.tensors = map[string]*tensors.Tensor{}
	for _, e := range a.entries {
		if v, ok := values[e.Key]; ok {
			vals, dims := e.Layout.ToStore(v, e.Shape)
			a.tensors[e.Key] = tensors.FromFlatDataAndDimensions(vals, dims...)
			continue
		}
		t := base.Tensor(e.Key)
		if t == nil || !slices.Equal(t.Shape().Dimensions, e.Layout.StoreShape(e.Shape)) {
			return fmt.Errorf("modules_to_save: the base has no %q of shape %v to copy", e.Key, e.Shape)
		}
		c, err := t.LocalClone()
		if err != nil {
			return fmt.Errorf("modules_to_save: copying %q: %w", e.Key, err)
		}
		a.tensors[e.Key] = c
	}
	return nil
}
