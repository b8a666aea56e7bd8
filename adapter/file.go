package adapter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/fsutil"
	"github.com/lorafit/lorafit/limits"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/preprocess"
)

// File names of an adapter directory: PEFT's two, plus lorafit's sidecar.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
	InfoFile    = "lorafit.json"
	keyPrefix   = "base_model.model." // PEFT's prefix on every saved key
)

// infoVersion is lorafit.json's format: 2 carries one preprocess value; 1
// had image_size, mean and std fields, still read.
const infoVersion = 2

// Info is lorafit.json: the facts PEFT's config has no field for, above all
// which base weights the adapter belongs to (an adapter on the wrong base
// computes garbage without any error) and how its inputs are preprocessed.
type Info struct {
	LorafitVersion int                   `json:"lorafit_version"`
	Base           BaseInfo              `json:"base"`
	NumClasses     int                   `json:"num_classes"`
	ClassNames     []string              `json:"class_names"`
	Head           Head                  `json:"head"`
	ReplaceFC      bool                  `json:"replace_fc"`
	Preprocess     preprocess.Preprocess `json:"preprocess"`
	Dataset        string                `json:"dataset"`
	Metrics        map[string]any        `json:"metrics"`
}

// BaseInfo identifies the base network.
type BaseInfo struct {
	Arch       string `json:"arch"`
	Weights    string `json:"weights"`
	SHA256     string `json:"sha256"`
	NumClasses int    `json:"num_classes"`
}

// readSmall reads one of an adapter's JSON files: a regular file within
// limits.ConfigBytes (real ones are a few KB).
func readSmall(path string) ([]byte, error) { return limits.ReadFile(path, limits.ConfigBytes) }

// Save writes dir as PEFT's save_pretrained does (adapter_config.json +
// adapter_model.safetensors with PEFT's key names) plus lorafit.json from
// a.Info. dtype is F32, F16 or BF16. The directory appears whole or not at
// all: it is written beside dir under a temporary name and renamed into place.
func (a *Adapter) Save(dir string, dtype checkpoint.DType) error {
	if dtype != checkpoint.F32 && dtype != checkpoint.F16 && dtype != checkpoint.BF16 {
		return fmt.Errorf("adapter dtype %q: want F32, F16 or BF16", dtype)
	}
	sd, err := a.StateDict()
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
	cfg := a.Spec.LoRA
	cfg.PeftType, cfg.InferenceMode = "LORA", true
	info := a.Info
	if cfg.BaseModelNameOrPath == "" {
		cfg.BaseModelNameOrPath = info.Base.Weights
	}
	if cfg.TargetModules.Empty() {
		// PEFT refuses a LoraConfig without targets; an adapter that only
		// saves modules (cases 1 and 4) still needs a valid file.
		cfg.TargetModules = lora.Targets{List: []string{}}
	}
	if err := info.Preprocess.Validate(); err != nil {
		return fmt.Errorf("adapter's preprocessing (Info.Preprocess): %w", err)
	}
	info.LorafitVersion = infoVersion
	info.NumClasses, info.Head, info.ReplaceFC = a.Spec.NumClasses, a.Spec.Head, a.Spec.ReplaceFC
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("lorafit.json: %w (a metric that is NaN or infinite?)", err)
	}
	meta := map[string]string{"format": "pt", "lorafit.base_sha256": info.Base.SHA256, "lorafit.base_arch": info.Base.Arch}
	return fsutil.WriteDir(dir, func(tmp string) error {
		if err := safetensors.Save(filepath.Join(tmp, WeightsFile), out, meta); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, ConfigFile), append(cfgJSON, '\n'), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, InfoFile), append(infoJSON, '\n'), 0o644)
	})
}

// StateDict exports the adapter's tensors in PyTorch layout under their
// module keys (without PEFT's prefix).
func (a *Adapter) StateDict() (*checkpoint.StateDict, error) {
	sd := checkpoint.NewStateDict()
	for _, e := range a.entries {
		t := a.tensors[e.Key]
		if t == nil {
			return nil, fmt.Errorf("adapter has no value for %q yet (Init it or load it first)", e.Key)
		}
		sd.Set(e.Key, backbone.ToTorch(t, e.Layout, e.Shape))
	}
	return sd, nil
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

// File is an adapter directory read from disk, not yet bound to a network.
type File struct {
	Dir     string
	Spec    Spec
	Info    Info
	Tensors *checkpoint.StateDict // keys without PEFT's base_model.model. prefix
}

// ReadDir reads and checks an adapter directory. A directory PEFT wrote (no
// lorafit.json) is accepted: it then has no head, no base binding, and
// ImageNet's preprocessing.
func ReadDir(dir string) (*File, error) {
	f := &File{Dir: dir}
	cfgPath := filepath.Join(dir, ConfigFile)
	raw, err := readSmall(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	if err := json.Unmarshal(raw, &f.Spec.LoRA); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if err := f.Spec.LoRA.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	infoPath := filepath.Join(dir, InfoFile)
	if raw, err := readSmall(infoPath); err == nil {
		if f.Info, err = parseInfo(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", infoPath, err)
		}
		f.Spec.Head, f.Spec.ReplaceFC, f.Spec.NumClasses = f.Info.Head, f.Info.ReplaceFC, f.Info.NumClasses
		if err := f.Spec.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", infoPath, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		f.Info.Preprocess = preprocess.ImageNet(224)
	} else {
		return nil, err
	}
	sd, _, err := safetensors.Load(filepath.Join(dir, WeightsFile))
	if err != nil {
		return nil, err
	}
	f.Tensors = checkpoint.NewStateDict()
	for _, k := range sd.Names {
		name, ok := strings.CutPrefix(k, keyPrefix)
		if !ok {
			return nil, fmt.Errorf("%s: key %q lacks PEFT's %q prefix", filepath.Join(dir, WeightsFile), k, keyPrefix)
		}
		// PEFT versions before 0.6 kept the adapter name in the key.
		name = strings.Replace(name, ".lora_A.default.", ".lora_A.", 1)
		name = strings.Replace(name, ".lora_B.default.", ".lora_B.", 1)
		f.Tensors.Set(name, sd.Get(k))
	}
	return f, nil
}

// ReadInfo reads only an adapter directory's lorafit.json, not its
// tensors: what a listing of many adapters needs. A directory without one
// (PEFT wrote it) gets the Info ReadDir gives it: ImageNet's preprocessing,
// no base binding.
func ReadInfo(dir string) (Info, error) {
	path := filepath.Join(dir, InfoFile)
	raw, err := readSmall(path)
	if errors.Is(err, os.ErrNotExist) {
		return Info{Preprocess: preprocess.ImageNet(224)}, nil
	}
	if err != nil {
		return Info{}, err
	}
	info, err := parseInfo(raw)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

// parseInfo reads lorafit.json, version 1 (image_size, mean, std) or 2.
func parseInfo(raw []byte) (Info, error) {
	var v struct {
		Info
		ImageSize int         `json:"image_size"`
		Mean      *[3]float32 `json:"mean"`
		Std       *[3]float32 `json:"std"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return Info{}, err
	}
	info := v.Info
	if v.LorafitVersion < 2 {
		info.Preprocess = preprocess.Native(v.ImageSize)
		if v.Mean != nil && v.Std != nil {
			info.Preprocess.Mean, info.Preprocess.Std = *v.Mean, *v.Std
		}
	}
	if err := info.Preprocess.Validate(); err != nil {
		return Info{}, fmt.Errorf("preprocess: %w", err)
	}
	if len(info.ClassNames) > 0 && len(info.ClassNames) != info.NumClasses && info.NumClasses > 0 {
		return Info{}, fmt.Errorf("%d class names for %d classes", len(info.ClassNames), info.NumClasses)
	}
	return info, nil
}

// CheckBase refuses an adapter trained on other base weights, unless
// allowed (then it only returns a warning to show).
func (f *File) CheckBase(sha256 string, allow bool) (warning string, err error) {
	want := f.Info.Base.SHA256
	if want == "" || want == sha256 {
		return "", nil
	}
	msg := fmt.Sprintf("adapter %s was trained on base weights %s (sha256 %s), but the base given has sha256 %s",
		f.Dir, f.Info.Base.Weights, short(want), short(sha256))
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

// Bind resolves the file's spec against a network and loads its tensors,
// checking every key and shape.
func (f *File) Bind(net backbone.Network) (*Adapter, error) {
	a, err := New(net, f.Spec)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", f.Dir, err)
	}
	a.Info = f.Info
	keys := make([]string, len(a.entries))
	shapes := make([][]int, len(a.entries))
	for i, e := range a.entries {
		keys[i], shapes[i] = e.Key, e.Shape
	}
	file := filepath.Join(f.Dir, WeightsFile)
	if problems := backbone.Mismatches(f.Tensors, keys, shapes); len(problems) > 0 {
		return nil, fmt.Errorf("%s: does not fit its config on this base: %s", file, backbone.Summarize(problems, 8))
	}
	for _, e := range a.entries {
		t, err := backbone.ToGraph(f.Tensors.Get(e.Key), e.Layout)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", file, e.Key, err)
		}
		if err := a.SetTensor(e.Key, t); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Load reads an adapter directory, checks that it belongs to base (see
// File.CheckBase) and binds it to base's network.
func Load(dir string, base *backbone.Base, allowMismatch bool) (a *Adapter, warning string, err error) {
	f, err := ReadDir(dir)
	if err != nil {
		return nil, "", err
	}
	if warning, err = f.CheckBase(base.SHA256, allowMismatch); err != nil {
		return nil, "", err
	}
	a, err = f.Bind(base.Net)
	return a, warning, err
}
