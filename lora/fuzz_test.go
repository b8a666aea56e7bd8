package lora

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorafit/lorafit/internal/memcheck"
)

// FuzzConfigJSON parses adapter_config.json as ReadAdapter does (unmarshal,
// then Validate): no input may panic or allocate out of proportion to its
// size, and a config that validates must survive a marshal round trip
// still valid, since lorafit writes configs back out.
func FuzzConfigJSON(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/adapter_config.json")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	if b, err := json.Marshal(Default()); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		`{"r": 1e999}`, `{"r": "8"}`, `{"lora_alpha": null, "r": -1, "target_modules": ["a"]}`,
		`{"target_modules": {"x": 1}}`, `{"rank_pattern": {"(": 2, "a": 1.5}}`, `{"init_lora_weights": "pissa"}`,
		`{"layers_to_transform": [[[[[[[[[[[[1]]]]]]]]]]]]}`, `{"lora_dropout": 1}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		var err error
		// encoding/json builds up to ~100 bytes of values per input byte
		// (for `any` fields such as layers_to_transform).
		memcheck.Bound(t, len(b), 256, 1<<20, func() {
			if err = json.Unmarshal(b, &c); err == nil {
				err = c.Validate()
			}
		})
		if err != nil {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("a valid config does not marshal: %v", err)
		}
		var back Config
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("marshalled config %s does not parse: %v", out, err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("marshalled config %s no longer validates: %v", out, err)
		}
	})
}
