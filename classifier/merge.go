package classifier

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/lora"
)

// Merge folds an adapter into its base and returns a plain network:
// torchvision's keys with the adapter's saved modules (fc as trained or
// replaced) and every LoRA update folded into its weight (W' = W +
// scaling·B·A, k×k convs included), plus the head's keys. It runs at base
// speed and loads anywhere a state_dict does. A grouped conv with a LoRA
// becomes an ordinary conv: its update mixes all input channels (PEFT
// refuses to merge those; lorafit's loader reads the dense weight back).
func Merge(base *backbone.Base, a *adapter.Adapter) (*checkpoint.StateDict, error) {
	own, err := a.StateDict()
	if err != nil {
		return nil, err
	}
	sd := base.StateDict()
	out := checkpoint.NewStateDict()
	for _, k := range sd.Names {
		if t := own.Get(k); t != nil {
			out.Set(k, t)
		} else {
			out.Set(k, sd.Get(k))
		}
	}
	for _, h := range a.Head {
		for _, s := range []string{".weight", ".bias"} {
			out.Set(h.Name+s, own.Get(h.Name+s))
		}
	}
	for _, t := range a.Targets {
		if err := fold(out, own, t, +1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Unmerge subtracts an adapter's LoRA updates from a merged state_dict in
// place, giving back the base weights (up to float rounding; grouped convs
// stay dense, zero outside their groups).
func Unmerge(sd *checkpoint.StateDict, a *adapter.Adapter) error {
	own, err := a.StateDict()
	if err != nil {
		return err
	}
	for _, t := range a.Targets {
		if err := fold(sd, own, t, -1); err != nil {
			return err
		}
	}
	return nil
}

func fold(sd, own *checkpoint.StateDict, t lora.Target, sign float32) error {
	name := t.Module.Name
	av, err := own.Get(name + ".lora_A.weight").Float32s()
	if err != nil {
		return err
	}
	bv, err := own.Get(name + ".lora_B.weight").Float32s()
	if err != nil {
		return err
	}
	key := name + ".weight"
	w := sd.Get(key)
	if w == nil {
		return fmt.Errorf("merge: no base weight %q", key)
	}
	vals, err := w.Float32s()
	if err != nil {
		return fmt.Errorf("merge: %q: %w", key, err)
	}
	shape := w.Shape
	delta := t.DeltaWeight(av, bv)
	if m := t.Module; m.NumGroups() > 1 && len(vals) != len(delta) {
		vals = lora.Densify(vals, m.Out, m.In, m.Kernel, m.NumGroups())
		shape = []int{m.Out, m.In, m.Kernel, m.Kernel}
	}
	if len(delta) != len(vals) {
		return fmt.Errorf("merge: %q has %d values, the LoRA update %d", key, len(vals), len(delta))
	}
	for i := range vals {
		vals[i] += sign * delta[i]
	}
	sd.Set(key, checkpoint.FromFloat32(shape, vals))
	return nil
}

// SplitMerged separates a merged model's head (head.0, head.2, … Linear
// layers, as Merge writes them) from the rest, which loads as a plain
// network. head is nil when there is none.
func SplitMerged(sd *checkpoint.StateDict) (rest, head *checkpoint.StateDict, err error) {
	rest, head = checkpoint.NewStateDict(), checkpoint.NewStateDict()
	for _, k := range sd.Names {
		if strings.HasPrefix(k, "head.") {
			head.Set(k, sd.Get(k))
		} else {
			rest.Set(k, sd.Get(k))
		}
	}
	if head.Len() == 0 {
		return sd, nil, nil
	}
	return rest, head, nil
}

// HeadAdapter is the adapter that holds a merged model's head and nothing
// else, so a merged model runs like any base with an adapter.
func HeadAdapter(net backbone.Network, head *checkpoint.StateDict) (*adapter.Adapter, error) {
	widths := adapter.Head{}
	for i := 0; ; i += 2 {
		w := head.Get(fmt.Sprintf("head.%d.weight", i))
		if w == nil {
			break
		}
		if len(w.Shape) != 2 || head.Get(fmt.Sprintf("head.%d.bias", i)) == nil {
			return nil, fmt.Errorf("head.%d: want a Linear weight [out,in] and a bias", i)
		}
		widths = append(widths, w.Shape[0])
	}
	if len(widths) == 0 {
		return nil, fmt.Errorf("head.* keys present but no head.0.weight")
	}
	if 2*len(widths) != head.Len() {
		return nil, fmt.Errorf("head.* keys do not form Linear/ReLU layers named head.0, head.2, …")
	}
	spec := adapter.Spec{Head: widths[:len(widths)-1], NumClasses: widths[len(widths)-1]}
	spec.LoRA.ModulesToSave = []string{"head"}
	a, err := adapter.New(net, spec)
	if err != nil {
		return nil, err
	}
	for _, e := range a.Entries() {
		t := head.Get(e.Key)
		if t == nil || !slices.Equal(t.Shape, e.Shape) {
			return nil, fmt.Errorf("%s: want shape %v", e.Key, e.Shape)
		}
		g, err := backbone.ToGraph(t, e.Layout)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e.Key, err)
		}
		if err := a.SetTensor(e.Key, g); err != nil {
			return nil, err
		}
	}
	return a, nil
}
