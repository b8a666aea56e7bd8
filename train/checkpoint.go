package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
)

// save writes the training state — trainable variables, optimizer slots
// and the step — atomically, in the Store's own layout (this file is for
// resuming, not for sharing: adapters are).
func (t *Trainer) save(path string) error {
	sd := checkpoint.NewStateDict()
	add := func(key string) error {
		v := t.net.Base.Store.GetVariable(key)
		value, err := v.Value()
		if err != nil {
			return err
		}
		sd.Set(key, checkpoint.FromFloat32(value.Shape().Dimensions, tensors.MustCopyFlatData[float32](value)))
		return nil
	}
	for _, v := range t.vars {
		if err := add(v.Path()); err != nil {
			return err
		}
		for _, s := range t.slots() {
			if err := add(slotPath(s, v)); err != nil {
				return err
			}
		}
	}
	history, err := json.Marshal(t.history)
	if err != nil {
		return err
	}
	meta := map[string]string{"lorafit.step": strconv.Itoa(t.step), "lorafit.optimizer": t.cfg.Optimizer,
		"lorafit.seed": strconv.FormatUint(t.cfg.Seed, 10), "lorafit.batch": strconv.Itoa(t.cfg.Batch),
		"lorafit.history": string(history), "lorafit.seconds": strconv.FormatFloat(t.seconds, 'g', -1, 64)}
	return safetensors.Save(path, sd, meta)
}

// load restores a checkpoint written by save; false if there is none. A
// checkpoint of another recipe (optimizer, seed, batch) or model is an error,
// not a silent restart.
func (t *Trainer) load(path string) (bool, error) {
	sd, meta, err := safetensors.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for k, want := range map[string]string{"lorafit.optimizer": t.cfg.Optimizer,
		"lorafit.seed": strconv.FormatUint(t.cfg.Seed, 10), "lorafit.batch": strconv.Itoa(t.cfg.Batch)} {
		if meta[k] != want {
			return false, fmt.Errorf("%s: saved with %s=%q, this run has %q: cannot resume it", path, k, meta[k], want)
		}
	}
	step, err := strconv.Atoi(meta["lorafit.step"])
	if err != nil {
		return false, fmt.Errorf("%s: no valid lorafit.step in its metadata", path)
	}
	store := t.net.Base.Store
	want := len(t.vars) * (1 + len(t.slots()))
	if sd.Len() != want {
		return false, fmt.Errorf("%s: holds %d tensors, this model trains %d: another case or config?", path, sd.Len(), want)
	}
	for _, k := range sd.Names {
		v := store.GetVariable(k)
		if v == nil {
			return false, fmt.Errorf("%s: tensor %q is not a variable of this model", path, k)
		}
		vals, err := sd.Get(k).Float32s()
		if err != nil {
			return false, err
		}
		value := tensors.FromFlatDataAndDimensions(vals, sd.Get(k).Shape...)
		if !value.Shape().Equal(v.Shape()) {
			return false, fmt.Errorf("%s: %q has shape %v, the model %v", path, k, sd.Get(k).Shape, v.Shape().Dimensions)
		}
		if err := v.SetValue(value); err != nil {
			return false, err
		}
	}
	t.step = step
	t.history = nil
	if err := json.Unmarshal([]byte(meta["lorafit.history"]), &t.history); err != nil {
		return false, fmt.Errorf("%s: lorafit.history: %w", path, err)
	}
	t.seconds, _ = strconv.ParseFloat(meta["lorafit.seconds"], 64)
	return true, nil
}
