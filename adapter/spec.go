package adapter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/lora"
)

// Spec says how to adapt a base network. It is what `--case N` presets
// name, what flags override, and what --config files hold.
type Spec struct {
	LoRA       lora.Config `json:"lora"`
	Head       Head        `json:"head"`
	ReplaceFC  bool        `json:"replace_fc"` // fc becomes Linear(features → NumClasses)
	NumClasses int         `json:"num_classes"`
}

// MaxHeadWidth bounds a head layer's width: wider than any classifier head
// in use, and small enough that a typo cannot allocate gigabytes.
const MaxHeadWidth = 1 << 16

// Validate checks what does not depend on the network.
func (s Spec) Validate() error {
	if (s.Head != nil || s.ReplaceFC) && s.NumClasses <= 0 {
		return fmt.Errorf("num_classes must be positive with a head or a replaced fc")
	}
	if s.NumClasses > MaxHeadWidth {
		return fmt.Errorf("num_classes %d: at most %d", s.NumClasses, MaxHeadWidth)
	}
	for _, w := range s.Head {
		if w <= 0 || w > MaxHeadWidth {
			return fmt.Errorf("head width %d: want 1 to %d", w, MaxHeadWidth)
		}
	}
	return s.LoRA.Validate()
}

// Head is the stack of Linear layers put on the network's output: nil means
// none, [] a single Linear(in→classes), [512,256] Linear(in→512) ReLU
// Linear(512→256) ReLU Linear(256→classes) — torch names head.0, head.2, head.4.
type Head []int

// ParseHead reads a --head flag: "none", "linear", or widths like "512,256".
func ParseHead(s string) (Head, error) {
	switch strings.TrimSpace(strings.ToLower(s)) {
	case "none", "":
		return nil, nil
	case "linear":
		return Head{}, nil
	}
	var h Head
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > MaxHeadWidth {
			return nil, fmt.Errorf("--head %q: want none, linear, or widths from 1 to %d like 512,256", s, MaxHeadWidth)
		}
		h = append(h, n)
	}
	return h, nil
}

func (h Head) String() string {
	switch {
	case h == nil:
		return "none"
	case len(h) == 0:
		return "linear"
	}
	s := make([]string, len(h))
	for i, n := range h {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// Layers returns the head's Linear layers as (torch name, in, out).
func (h Head) Layers(in, classes int) []HeadLayer {
	if h == nil {
		return nil
	}
	var ls []HeadLayer
	for i, w := range append(append(Head{}, h...), classes) {
		ls = append(ls, HeadLayer{Name: fmt.Sprintf("head.%d", 2*i), In: in, Out: w})
		in = w
	}
	return ls
}

// HeadLayer is one Linear of the head.
type HeadLayer struct {
	Name    string
	In, Out int
}

// cases are the founding study's four setups (see README): ResNet-50 with
// ImageNet weights fine-tuned on MNIST four ways. Case returns copies.
var cases = map[int]Spec{
	1: {LoRA: withTargets(lora.Targets{}, 8, 8, "head"), Head: Head{512, 256}, NumClasses: 10},
	2: {LoRA: withTargets(lora.Targets{Regex: `.*\.2\.conv3`}, 8, 16, "fc", "head"), Head: Head{512, 256}, NumClasses: 10},
	3: {LoRA: withTargets(lora.Targets{Regex: `.*\.2\.conv[0-9]`}, 4, 8, "fc", "head"), Head: Head{}, NumClasses: 10},
	4: {LoRA: withTargets(lora.Targets{}, 8, 8, "fc"), ReplaceFC: true, NumClasses: 10},
}

func withTargets(t lora.Targets, r int, alpha float64, save ...string) lora.Config {
	c := lora.Default()
	c.TargetModules, c.R, c.LoraAlpha, c.ModulesToSave = t, r, alpha, save
	return c
}

// Full is full fine-tuning as an adapter: every top-level module of net in
// modules_to_save (conv1, bn1, layer1…layer4, fc for a ResNet), so every
// parameter trains and every batch norm runs in train mode, as
// model.train() does; no LoRA. Merging it gives the whole fine-tuned
// network.
func Full(net backbone.Network) Spec {
	c := lora.Default()
	c.ModulesToSave = []string{}
	for _, m := range net.Modules() {
		top, _, _ := strings.Cut(m.Name, ".")
		if !slices.Contains(c.ModulesToSave, top) {
			c.ModulesToSave = append(c.ModulesToSave, top)
		}
	}
	return Spec{LoRA: c, NumClasses: net.NumClasses()}
}

// IsFull tells whether s saves every top-level module of net.
func (s Spec) IsFull(net backbone.Network) bool {
	full := Full(net).LoRA.ModulesToSave
	return s.LoRA.TargetModules.Empty() && len(s.LoRA.ModulesToSave) >= len(full) && !slices.ContainsFunc(full, func(m string) bool {
		return !slices.Contains(s.LoRA.ModulesToSave, m)
	})
}

// CaseNumbers lists the founding study's cases, in order.
func CaseNumbers() []int { return []int{1, 2, 3, 4} }

// Case returns preset n (a copy, safe to modify).
func Case(n int) (Spec, error) {
	s, ok := cases[n]
	if !ok {
		return Spec{}, fmt.Errorf("no case %d: the founding study has cases 1 to 4", n)
	}
	s.LoRA.ModulesToSave = append([]string(nil), s.LoRA.ModulesToSave...)
	if s.Head != nil {
		s.Head = append(Head{}, s.Head...)
	}
	return s, nil
}

// ReadSpec loads a Spec from a JSON file (as MarshalIndent writes it).
func ReadSpec(path string) (Spec, error) {
	var s Spec
	b, err := readSmall(path)
	if err != nil {
		return s, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// MarshalIndent is the JSON form --config files use.
func (s Spec) MarshalIndent() ([]byte, error) { return json.MarshalIndent(s, "", "  ") }
