package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
)

// RunIdentity is everything that defines a run of cfg on a: the recipe's
// fields (named as the CLI's flags), the adapter's spec, and what
// cfg.Identity adds (data, base, version: what the trainer cannot see).
// A checkpoint records it, and resuming refuses any difference, so a
// resumed run is the run it claims to continue.
func RunIdentity(cfg Config, a *adapter.Adapter) map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	id := map[string]string{
		"epochs":          strconv.Itoa(cfg.Epochs),
		"batch":           strconv.Itoa(cfg.Batch),
		"lr":              f(cfg.LR),
		"optimizer":       cfg.Optimizer,
		"momentum":        f(cfg.Momentum),
		"weight-decay":    f(cfg.WeightDecay),
		"schedule":        cfg.Schedule,
		"warmup":          f(cfg.Warmup),
		"label-smoothing": f(cfg.LabelSmoothing),
		"seed":            strconv.FormatUint(cfg.Seed, 10),
		"preprocess":      cfg.Preprocess.String(),
		"augment":         strconv.FormatBool(cfg.Augment),
		"limit-steps":     strconv.Itoa(cfg.LimitSteps),
	}
	if f := cfg.Features; f != nil && f.BF16() {
		id["features"] = "bf16" // rounded inputs: another run
	}
	if a != nil {
		spec, err := json.Marshal(a.Spec)
		if err != nil { // a Spec is plain data; this cannot happen
			panic(err)
		}
		id["adapter"] = string(spec)
	}
	maps.Copy(id, cfg.Identity)
	return id
}

// Difference is one field of a run's identity that differs from the saved
// run's.
type Difference struct{ Field, Saved, Now string }

func (d Difference) String() string {
	show := func(v string) string {
		if v == "" {
			return "(none)"
		}
		return v
	}
	return fmt.Sprintf("%s: %s → %s", d.Field, show(d.Saved), show(d.Now))
}

// Compare lists the fields where now differs from saved, sorted by name.
func Compare(saved, now map[string]string) []Difference {
	var diffs []Difference
	union := maps.Clone(saved)
	if union == nil {
		union = map[string]string{}
	}
	maps.Copy(union, now)
	keys := slices.Sorted(maps.Keys(union))
	for _, k := range keys {
		if saved[k] != now[k] {
			diffs = append(diffs, Difference{k, saved[k], now[k]})
		}
	}
	return diffs
}

// IdentityError refuses to resume (or keep) what another run saved: Path
// holds a run that differs from this one in Differences (old → new).
type IdentityError struct {
	Path        string
	Differences []Difference
	// Missing: Path records no identity at all (an older lorafit wrote it).
	Missing bool
}

func (e *IdentityError) Error() string {
	if e.Missing {
		return fmt.Sprintf("%s records no run identity (written by an older lorafit?): cannot check that it is this run", e.Path)
	}
	lines := make([]string, len(e.Differences))
	for i, d := range e.Differences {
		lines[i] = "  " + d.String()
	}
	return fmt.Sprintf("%s is from another run: %d setting(s) differ (saved → now):\n%s", e.Path, len(lines), strings.Join(lines, "\n"))
}

// CheckIdentity compares a saved identity with this run's: nil if equal,
// else an *IdentityError naming path and each field that differs.
func CheckIdentity(path string, saved, now map[string]string) error {
	if saved == nil {
		return &IdentityError{Path: path, Missing: true}
	}
	if d := Compare(saved, now); len(d) > 0 {
		return &IdentityError{Path: path, Differences: d}
	}
	return nil
}

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
	identity, err := json.Marshal(t.identity)
	if err != nil {
		return err
	}
	pending, err := json.Marshal(t.pending)
	if err != nil {
		return err
	}
	meta := map[string]string{"lorafit.step": strconv.Itoa(t.step), "lorafit.identity": string(identity),
		"lorafit.history": string(history), "lorafit.pending": string(pending),
		"lorafit.seconds": strconv.FormatFloat(t.seconds, 'g', -1, 64)}
	return safetensors.Save(path, sd, meta)
}

// pending is the part of the training curve not yet recorded as a point:
// sums since the last one. Checkpoints carry it, so a run resumed between
// two points records the same curve as an uninterrupted one.
type pending struct {
	Loss    float64 `json:"loss"`
	Correct float64 `json:"correct"`
	Steps   int     `json:"steps"`
}

// load restores a checkpoint written by save; false if there is none. A
// checkpoint of another run — any difference in its identity (recipe,
// adapter, data, base, version) — is an *IdentityError naming each field,
// never a silent restart or a silent mix of two runs.
func (t *Trainer) load(path string) (bool, error) {
	log := t.cfg.Progress
	if log == nil {
		log = io.Discard
	}
	sd, meta, err := safetensors.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(log, "no checkpoint %s to resume from: starting at step 0\n", path)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var saved map[string]string
	if raw, ok := meta["lorafit.identity"]; ok {
		if err := json.Unmarshal([]byte(raw), &saved); err != nil {
			return false, fmt.Errorf("%s: lorafit.identity: %w", path, err)
		}
	}
	if err := CheckIdentity(path, saved, t.identity); err != nil {
		return false, err
	}
	step, err := strconv.Atoi(meta["lorafit.step"])
	if err != nil || step < 0 {
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
	t.pending = pending{}
	if err := json.Unmarshal([]byte(meta["lorafit.pending"]), &t.pending); err != nil {
		return false, fmt.Errorf("%s: lorafit.pending: %w", path, err)
	}
	t.seconds, _ = strconv.ParseFloat(meta["lorafit.seconds"], 64)
	fmt.Fprintf(log, "resuming from %s at step %d\n", path, step)
	return true, nil
}
