// Package lora implements LoRA with HF PEFT's semantics for CNN classifiers:
// the config (fields and JSON spelling of PEFT's LoraConfig, so
// adapter_config.json files move between the two), how targets are matched
// by module name, and the layer math. Injection into a network lives
// elsewhere (package classifier): here a layer knows only its math.
package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Config mirrors PEFT's LoraConfig as saved in adapter_config.json.
type Config struct {
	PeftType            string   `json:"peft_type"`
	TaskType            *string  `json:"task_type"`
	R                   int      `json:"r"`
	LoraAlpha           float64  `json:"lora_alpha"`
	LoraDropout         float64  `json:"lora_dropout"`
	TargetModules       Targets  `json:"target_modules"`
	ModulesToSave       []string `json:"modules_to_save"`
	Bias                string   `json:"bias"`
	UseRSLora           bool     `json:"use_rslora"`
	RankPattern         Patterns `json:"rank_pattern"`
	AlphaPattern        Patterns `json:"alpha_pattern"`
	InitLoraWeights     Init     `json:"init_lora_weights"`
	BaseModelNameOrPath string   `json:"base_model_name_or_path"`
	InferenceMode       bool     `json:"inference_mode"`
	FanInFanOut         bool     `json:"fan_in_fan_out"`
	LayersToTransform   any      `json:"layers_to_transform"`
	LayersPattern       any      `json:"layers_pattern"`
	Revision            *string  `json:"revision"`
	UseDora             bool     `json:"use_dora"`
}

// Default is PEFT's LoraConfig() defaults: r=8, alpha=8, no dropout, no
// bias training, PEFT's kaiming-uniform A and zero B.
func Default() Config {
	return Config{PeftType: "LORA", R: 8, LoraAlpha: 8, Bias: "none", InitLoraWeights: InitDefault}
}

// Validate rejects what lorafit does not implement instead of ignoring it.
func (c *Config) Validate() error {
	switch {
	case c.PeftType != "" && c.PeftType != "LORA":
		return fmt.Errorf("peft_type %q: only LORA adapters are supported", c.PeftType)
	case c.R <= 0 && !c.TargetModules.Empty():
		return fmt.Errorf("r must be positive, got %d", c.R)
	case c.R > MaxRank:
		return fmt.Errorf("r %d: at most %d", c.R, MaxRank)
	case !c.TargetModules.Empty() && !validAlpha(c.LoraAlpha):
		return fmt.Errorf("lora_alpha must be positive and at most %g, got %g", float64(MaxAlpha), c.LoraAlpha)
	case c.LoraDropout < 0 || c.LoraDropout >= 1:
		return fmt.Errorf("lora_dropout must be in [0, 1), got %g", c.LoraDropout)
	case c.Bias != "" && c.Bias != "none":
		return fmt.Errorf("bias %q is not supported: use \"none\"", c.Bias)
	case c.UseDora:
		return fmt.Errorf("use_dora is not supported")
	case c.FanInFanOut:
		return fmt.Errorf("fan_in_fan_out is for GPT-2's Conv1D and does not apply to CNNs")
	case c.LayersToTransform != nil || c.LayersPattern != nil:
		return fmt.Errorf("layers_to_transform / layers_pattern are not supported: use a target_modules regex")
	}
	for _, p := range c.RankPattern {
		if p.Value <= 0 || p.Value != math.Trunc(p.Value) || p.Value > MaxRank {
			return fmt.Errorf("rank_pattern %q: rank must be an integer from 1 to %d, got %g", p.Key, MaxRank, p.Value)
		}
	}
	for _, p := range c.AlphaPattern {
		if !validAlpha(p.Value) {
			return fmt.Errorf("alpha_pattern %q: alpha must be positive and at most %g, got %g", p.Key, float64(MaxAlpha), p.Value)
		}
	}
	return nil
}

// MaxRank and MaxAlpha bound r and lora_alpha: far beyond any adapter in
// use (a rank above a weight's own rank is refused anyway, see Match), and
// low enough that scaling stays finite and no typo allocates gigabytes.
const (
	MaxRank  = 1 << 16
	MaxAlpha = 1 << 20
)

func validAlpha(a float64) bool { return a > 0 && a <= MaxAlpha }

// RankAlpha gives a module's rank and alpha: the first rank_pattern /
// alpha_pattern key that matches the end of the name (PEFT's
// get_pattern_key: `(.*\.)?(key)$`), else r and lora_alpha.
func (c *Config) RankAlpha(module string) (int, float64, error) {
	r, alpha := c.R, c.LoraAlpha
	if v, ok, err := c.RankPattern.lookup(module); err != nil {
		return 0, 0, fmt.Errorf("rank_pattern: %w", err)
	} else if ok {
		r = int(v)
	}
	if v, ok, err := c.AlphaPattern.lookup(module); err != nil {
		return 0, 0, fmt.Errorf("alpha_pattern: %w", err)
	} else if ok {
		alpha = v
	}
	return r, alpha, nil
}

// Scaling is alpha/r, or alpha/√r with rsLoRA (Kalajdzievski 2023), which
// keeps the update's scale stable as r grows.
func (c *Config) Scaling(r int, alpha float64) float64 {
	if c.UseRSLora {
		return alpha / math.Sqrt(float64(r))
	}
	return alpha / float64(r)
}

// Targets is target_modules: a regex that must match a whole module name
// (PEFT's re.fullmatch), or a list of names matched exactly or as a
// dotted suffix ("conv3" hits "layer1.2.conv3").
type Targets struct {
	Regex string
	List  []string
}

// Empty tells whether no targets are set (no LoRA at all).
func (t Targets) Empty() bool { return t.Regex == "" && len(t.List) == 0 }

func (t Targets) String() string {
	if t.Regex != "" {
		return t.Regex
	}
	return strings.Join(t.List, ",")
}

func (t Targets) MarshalJSON() ([]byte, error) {
	switch {
	case t.Regex != "":
		return json.Marshal(t.Regex)
	case t.List != nil:
		return json.Marshal(t.List)
	}
	return []byte("null"), nil
}

func (t *Targets) UnmarshalJSON(b []byte) error {
	*t = Targets{}
	switch {
	case bytes.Equal(bytes.TrimSpace(b), []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &t.Regex)
	}
	if err := json.Unmarshal(b, &t.List); err != nil {
		return fmt.Errorf("target_modules must be a regex string or a list of names: %w", err)
	}
	return nil
}

// Init is init_lora_weights: true (PEFT's default: A kaiming-uniform with
// a=√5, B zero, so training starts from the base model), "gaussian" (A
// normal with std 1/r, B zero), or false (A and B both keep torch's default
// layer init: the adapter changes the output from the start — useful for
// tests).
type Init string

const (
	InitDefault  Init = "true"
	InitGaussian Init = "gaussian"
	InitRandom   Init = "false"
)

func (i Init) MarshalJSON() ([]byte, error) {
	switch i {
	case "", InitDefault:
		return []byte("true"), nil
	case InitRandom:
		return []byte("false"), nil
	}
	return json.Marshal(string(i))
}

func (i *Init) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		*i = InitRandom
		if v {
			*i = InitDefault
		}
		return nil
	case string:
		return i.Set(v)
	}
	return fmt.Errorf("init_lora_weights must be true, false or \"gaussian\", got %s", b)
}

// Set parses a flag value.
func (i *Init) Set(s string) error {
	switch strings.ToLower(s) {
	case "true", "":
		*i = InitDefault
	case "false":
		*i = InitRandom
	case "gaussian":
		*i = InitGaussian
	default:
		return fmt.Errorf("init_lora_weights %q: want true, false or gaussian", s)
	}
	return nil
}

// Pattern is one rank_pattern / alpha_pattern entry.
type Pattern struct {
	Key   string
	Value float64
}

// Patterns keeps JSON object order, because PEFT takes the first matching
// key and Go maps have no order.
type Patterns []Pattern

func (ps Patterns) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.Key)
		v, _ := json.Marshal(p.Value)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (ps *Patterns) UnmarshalJSON(b []byte) error {
	*ps = nil
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object of pattern → number, got %s", b)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var v float64
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("pattern %q: %w", key, err)
		}
		*ps = append(*ps, Pattern{key, v})
	}
	return nil
}

func (ps Patterns) lookup(module string) (float64, bool, error) {
	for _, p := range ps {
		re, err := compile(`^(?:.*\.)?(?:` + p.Key + `)$`)
		if err != nil {
			return 0, false, fmt.Errorf("key %q: %w", p.Key, err)
		}
		if re.MatchString(module) {
			return p.Value, true, nil
		}
	}
	return 0, false, nil
}
