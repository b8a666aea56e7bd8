package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
)

// slotKey names an optimizer slot of a tensor in checkpoints.
func slotKey(key string, slot int) string { return fmt.Sprintf("optimizer.%d.%s", slot, key) }

// save writes the training state — trainable tensors, optimizer slots, the
// adapter's batch-norm statistics and the step — atomically, in graph
// layout (this file is for resuming, not for sharing: adapters are).
func (t *Trainer) save(path string) error {
	sd := checkpoint.NewStateDict()
	add := func(key string, v *tensors.Tensor) {
		if v.DType() == dtypes.Int64 {
			sd.Set(key, checkpoint.FromInt64(v.Shape().Dimensions, tensors.MustCopyFlatData[int64](v)))
			return
		}
		sd.Set(key, checkpoint.FromFloat32(v.Shape().Dimensions, tensors.MustCopyFlatData[float32](v)))
	}
	for _, k := range t.params {
		add(k, t.ad.Tensor(k))
		for i, s := range t.slots[k] {
			add(slotKey(k, i), s)
		}
	}
	for _, k := range t.buffers {
		add(k, t.ad.Tensor(k))
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
// checkpoint of another recipe (optimizer, seed, batch) or adapter is an
// error, not a silent restart.
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
	want := len(t.params)*(1+t.numSlots()) + len(t.buffers)
	if sd.Len() != want {
		return false, fmt.Errorf("%s: holds %d tensors, this adapter trains %d: another case or config?", path, sd.Len(), want)
	}
	get := func(key string, like *tensors.Tensor) (*tensors.Tensor, error) {
		ct := sd.Get(key)
		if ct == nil {
			return nil, fmt.Errorf("%s: no tensor %q: another case or config?", path, key)
		}
		var v *tensors.Tensor
		if like.DType() == dtypes.Int64 {
			if ct.DType != checkpoint.I64 || ct.NumElements() != 1 || len(ct.Data) != 8 {
				return nil, fmt.Errorf("%s: %q is not an int64 scalar", path, key)
			}
			vals, _ := ct.Float32s()
			v = tensors.FromScalar(int64(vals[0]))
		} else {
			vals, err := ct.Float32s()
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", path, key, err)
			}
			if len(vals) != like.Shape().Size() {
				return nil, fmt.Errorf("%s: %q has shape %v, the adapter %v", path, key, ct.Shape, like.Shape().Dimensions)
			}
			v = tensors.FromFlatDataAndDimensions(vals, like.Shape().Dimensions...)
		}
		if !v.Shape().Equal(like.Shape()) {
			return nil, fmt.Errorf("%s: %q has shape %v, the adapter %v", path, key, ct.Shape, like.Shape().Dimensions)
		}
		return v, nil
	}
	for _, k := range append(append([]string{}, t.params...), t.buffers...) {
		v, err := get(k, t.ad.Tensor(k))
		if err != nil {
			return false, err
		}
		if err := t.ad.SetTensor(k, v); err != nil {
			return false, err
		}
	}
	for _, k := range t.params {
		for i := range t.slots[k] {
			v, err := get(slotKey(k, i), t.slots[k][i])
			if err != nil {
				return false, err
			}
			t.slots[k][i] = v
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
