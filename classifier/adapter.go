package classifier

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/lora"
)

// File names of an adapter directory: PEFT's two, plus lorafit's sidecar.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
	InfoFile    = "lorafit.json"
	keyPrefix   = "base_model.model." // PEFT's prefix on every saved key
)

// Info is lorafit.json: the facts PEFT's config has no field for, above all
// which base weights the adapter belongs to (an adapter on the wrong base
// computes garbage without any error).
type Info struct {
	LorafitVersion int            `json:"lorafit_version"`
	Base           BaseInfo       `json:"base"`
	NumClasses     int            `json:"num_classes"`
	ClassNames     []string       `json:"class_names"`
	Head           Head           `json:"head"`
	ReplaceFC      bool           `json:"replace_fc"`
	ImageSize      int            `json:"image_size"`
	Mean           [3]float32     `json:"mean"`
	Std            [3]float32     `json:"std"`
	Dataset        string         `json:"dataset"`
	Metrics        map[string]any `json:"metrics"`
}

// BaseInfo identifies the base network.
type BaseInfo struct {
	Arch       string `json:"arch"`
	Weights    string `json:"weights"`
	SHA256     string `json:"sha256"`
	NumClasses int    `json:"num_classes"`
}

// SaveAdapter writes dir as PEFT's save_pretrained does (adapter_config.json
// + adapter_model.safetensors with PEFT's key names) plus lorafit.json.
// dtype is F32, F16 or BF16. The directory appears whole or not at all: it
// is written beside dir under a temporary name and renamed into place.
func (m *Model) SaveAdapter(dir string, info Info, dtype checkpoint.DType) error {
	if dtype != checkpoint.F32 && dtype != checkpoint.F16 && dtype != checkpoint.BF16 {
		return fmt.Errorf("adapter dtype %q: want F32, F16 or BF16", dtype)
	}
	sd, err := m.StateDict(m.AdapterEntries())
	if err != nil {
		return err
	}
	out := checkpoint.NewStateDict()
	for _, k := range sd.Names {
		t := sd.Get(k)
		if t.DType == checkpoint.F32 && dtype != checkpoint.F32 {
			t = convert(t, dtype)
		}
		out.Set(keyPrefix+k, t)
	}
	cfg := m.Spec.LoRA
	cfg.PeftType, cfg.InferenceMode = "LORA", true
	if cfg.BaseModelNameOrPath == "" {
		cfg.BaseModelNameOrPath = info.Base.Weights
	}
	if cfg.TargetModules.Empty() {
		// PEFT refuses a LoraConfig without targets; an adapter that only
		// saves modules (cases 1 and 4) still needs a valid file.
		cfg.TargetModules = lora.Targets{List: []string{}}
	}
	info.LorafitVersion = 1
	info.NumClasses, info.Head, info.ReplaceFC = m.Spec.NumClasses, m.Spec.Head, m.Spec.ReplaceFC
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	meta := map[string]string{"format": "pt", "lorafit.base_sha256": info.Base.SHA256, "lorafit.base_arch": info.Base.Arch}
	if err := safetensors.Save(filepath.Join(tmp, WeightsFile), out, meta); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, ConfigFile), append(cfgJSON, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, InfoFile), append(infoJSON, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	var old string
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

func convert(t *checkpoint.Tensor, dtype checkpoint.DType) *checkpoint.Tensor {
	v, _ := t.Float32s()
	out := &checkpoint.Tensor{DType: dtype, Shape: t.Shape, Data: make([]byte, 2*len(v))}
	for i, f := range v {
		h := checkpoint.Float32ToHalf(f)
		if dtype == checkpoint.BF16 {
			h = checkpoint.Float32ToBF16(f)
		}
		out.Data[2*i], out.Data[2*i+1] = byte(h), byte(h>>8)
	}
	return out
}

// Adapter is an adapter directory read from disk.
type Adapter struct {
	Dir     string
	Spec    Spec
	Info    Info
	Tensors *checkpoint.StateDict // keys without PEFT's base_model.model. prefix
}

// ReadAdapter reads and checks an adapter directory. A directory PEFT wrote
// (no lorafit.json) is accepted: it then has no head, and no base binding.
func ReadAdapter(dir string) (*Adapter, error) {
	a := &Adapter{Dir: dir}
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	if err := json.Unmarshal(raw, &a.Spec.LoRA); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if err := a.Spec.LoRA.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if raw, err := os.ReadFile(filepath.Join(dir, InfoFile)); err == nil {
		if err := json.Unmarshal(raw, &a.Info); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, InfoFile), err)
		}
		a.Spec.Head, a.Spec.ReplaceFC, a.Spec.NumClasses = a.Info.Head, a.Info.ReplaceFC, a.Info.NumClasses
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	sd, _, err := safetensors.Load(filepath.Join(dir, WeightsFile))
	if err != nil {
		return nil, err
	}
	a.Tensors = checkpoint.NewStateDict()
	for _, k := range sd.Names {
		name, ok := strings.CutPrefix(k, keyPrefix)
		if !ok {
			return nil, fmt.Errorf("%s: key %q lacks PEFT's %q prefix", filepath.Join(dir, WeightsFile), k, keyPrefix)
		}
		// PEFT versions before 0.6 kept the adapter name in the key.
		name = strings.Replace(name, ".lora_A.default.", ".lora_A.", 1)
		name = strings.Replace(name, ".lora_B.default.", ".lora_B.", 1)
		a.Tensors.Set(name, sd.Get(k))
	}
	return a, nil
}

// CheckBase refuses an adapter trained on other base weights, unless
// allowed (then it only returns a warning to show).
func (a *Adapter) CheckBase(sha256 string, allow bool) (warning string, err error) {
	want := a.Info.Base.SHA256
	if want == "" || want == sha256 {
		return "", nil
	}
	msg := fmt.Sprintf("adapter %s was trained on base weights %s (sha256 %s), but the base given has sha256 %s",
		a.Dir, a.Info.Base.Weights, short(want), short(sha256))
	if !allow {
		return "", fmt.Errorf("%s; pass --allow-base-mismatch to load it anyway", msg)
	}
	return msg + "; loading anyway as asked: outputs may be meaningless", nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Apply builds the adapted model on base weights and loads the adapter's
// tensors, checking every key and shape.
func (a *Adapter) Apply(m *Model) error {
	want := m.AdapterEntries()
	var problems []string
	known := map[string]bool{}
	for _, e := range want {
		known[e.Key] = true
		t := a.Tensors.Get(e.Key)
		switch {
		case t == nil:
			problems = append(problems, fmt.Sprintf("missing %q", e.Key))
		case !slices.Equal(t.Shape, e.Shape):
			problems = append(problems, fmt.Sprintf("%q: expected shape %v, found %v", e.Key, e.Shape, t.Shape))
		}
	}
	for _, k := range a.Tensors.Names {
		if !known[k] {
			problems = append(problems, fmt.Sprintf("unexpected %q", k))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 8 {
			problems = append(problems[:8], fmt.Sprintf("and %d more", len(problems)-8))
		}
		return fmt.Errorf("%s: does not fit its config on this base: %s", filepath.Join(a.Dir, WeightsFile), strings.Join(problems, "; "))
	}
	for _, e := range want {
		v, err := a.Tensors.Get(e.Key).Float32s()
		if err != nil {
			return fmt.Errorf("%s: %q: %w", filepath.Join(a.Dir, WeightsFile), e.Key, err)
		}
		if err := m.set(e, v); err != nil {
			return err
		}
	}
	m.setTrainable()
	return nil
}
