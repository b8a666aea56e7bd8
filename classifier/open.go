package classifier

import (
	"fmt"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/resnet"
)

// FromStateDict builds a network from a full state_dict: a torchvision
// ResNet, optionally with a head (as `lorafit merge` writes). arch may be
// empty (read off the keys); source names the file in errors.
func FromStateDict(sd *checkpoint.StateDict, arch, source string) (*Model, error) {
	head, classes, rest, err := HeadFromStateDict(sd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	base, err := BaseFromStateDict(rest, arch, source)
	if err != nil {
		return nil, err
	}
	spec := Spec{LoRA: lora.Default()}
	if head != nil {
		spec.Head, spec.NumClasses, spec.LoRA.ModulesToSave = head, classes, []string{"head"}
	}
	m, err := New(base, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	for _, e := range m.Entries() {
		if e.Kind != "saved" || !m.isHead(e.Key) {
			continue
		}
		v, err := sd.Get(e.Key).Float32s()
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", source, e.Key, err)
		}
		if err := m.set(e, v); err != nil {
			return nil, err
		}
	}
	m.setTrainable()
	return m, nil
}

// BaseFromStateDict loads a plain torchvision ResNet state_dict; arch may
// be empty (read off the keys), else it must agree with them.
func BaseFromStateDict(sd *checkpoint.StateDict, arch, source string) (*resnet.Model, error) {
	cfg, err := resnet.InferConfig(sd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if arch != "" {
		found := cfg
		if cfg, err = resnet.ConfigFor(arch); err != nil {
			return nil, err
		}
		cfg.Width, cfg.NumClasses = found.Width, found.NumClasses
	}
	base := resnet.New(cfg)
	if err := base.Load(sd, source); err != nil {
		return nil, err
	}
	return base, nil
}

func (m *Model) isHead(key string) bool {
	for _, h := range m.Head {
		if key == h.Name+".weight" || key == h.Name+".bias" {
			return true
		}
	}
	return false
}
