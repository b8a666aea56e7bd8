package classifier

import (
	"fmt"
	"strings"

	"github.com/lorafit/lorafit/checkpoint"
)

// MergedStateDict folds every LoRA update into its base weight
// (W' = W + scaling·B·A, k×k convs included) and returns a plain network:
// torchvision's keys (fc as trained or replaced) plus the head's. It runs
// at base speed and loads anywhere a state_dict does.
func (m *Model) MergedStateDict() (*checkpoint.StateDict, error) {
	var plain []Entry
	for _, e := range m.Entries() {
		if e.Kind != "lora" {
			plain = append(plain, e)
		}
	}
	sd, err := m.StateDict(plain)
	if err != nil {
		return nil, err
	}
	return sd, m.fold(sd, +1)
}

// Unmerge subtracts the adapter's LoRA updates from a merged state_dict in
// place, giving back the base weights (up to float rounding).
func (m *Model) Unmerge(sd *checkpoint.StateDict) error { return m.fold(sd, -1) }

func (m *Model) fold(sd *checkpoint.StateDict, sign float32) error {
	entries := map[string]Entry{}
	for _, e := range m.Entries() {
		entries[e.Key] = e
	}
	for _, t := range m.Targets {
		name := t.Module.Name
		a, err := m.get(entries[name+".lora_A.weight"])
		if err != nil {
			return err
		}
		b, err := m.get(entries[name+".lora_B.weight"])
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
		delta := t.DeltaWeight(a, b)
		if len(delta) != len(vals) {
			return fmt.Errorf("merge: %q has %d values, the LoRA update %d", key, len(vals), len(delta))
		}
		for i := range vals {
			vals[i] += sign * delta[i]
		}
		sd.Set(key, checkpoint.FromFloat32(w.Shape, vals))
	}
	return nil
}

// HeadFromStateDict finds a head saved in a merged state_dict (head.0,
// head.2, … Linear weights) and returns its spec and the state_dict
// without it, so the rest loads as a plain ResNet.
func HeadFromStateDict(sd *checkpoint.StateDict) (Head, int, *checkpoint.StateDict, error) {
	base := checkpoint.NewStateDict()
	var head Head
	classes := 0
	found := false
	for _, k := range sd.Names {
		if !strings.HasPrefix(k, "head.") {
			base.Set(k, sd.Get(k))
			continue
		}
		found = true
	}
	if !found {
		return nil, 0, sd, nil
	}
	head = Head{}
	for i := 0; ; i += 2 {
		w := sd.Get(fmt.Sprintf("head.%d.weight", i))
		if w == nil {
			break
		}
		if len(w.Shape) != 2 || sd.Get(fmt.Sprintf("head.%d.bias", i)) == nil {
			return nil, 0, nil, fmt.Errorf("head.%d: want a Linear weight [out,in] and a bias", i)
		}
		head = append(head, w.Shape[0])
	}
	if len(head) == 0 {
		return nil, 0, nil, fmt.Errorf("head.* keys present but no head.0.weight")
	}
	classes = head[len(head)-1]
	head = head[:len(head)-1]
	if 2*(len(head)+1) != countHeadTensors(sd) {
		return nil, 0, nil, fmt.Errorf("head.* keys do not form Linear/ReLU layers named head.0, head.2, …")
	}
	return head, classes, base, nil
}

func countHeadTensors(sd *checkpoint.StateDict) int {
	n := 0
	for _, k := range sd.Names {
		if strings.HasPrefix(k, "head.") {
			n++
		}
	}
	return n
}
