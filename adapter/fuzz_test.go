package adapter

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorafit/lorafit/internal/memcheck"
)

// FuzzInfoJSON parses lorafit.json as ReadDir does: no input may panic or
// allocate out of proportion to its size, and what parses must marshal
// again (lorafit copies Info into reports and new adapters).
func FuzzInfoJSON(f *testing.F) {
	seeds, _ := filepath.Glob("../lora/testdata/*/lorafit.json")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		`{"num_classes": 1e999}`, `{"mean": [1, 2]}`, `{"mean": [1, 2, 3, 4]}`, `{"class_names": [1]}`,
		`{"metrics": {"a": [[[[[[[[[[{"b": null}]]]]]]]]]]}}`, `{"image_size": -5}`, `{"image_size": 1000000}`, `{"preprocess": {"crop_size": 28, "std": [0, 1, 1]}}`, `{"head": "weird"}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var info Info
		var err error
		// encoding/json builds up to ~100 bytes of values per input byte
		// (metrics is a map of anything).
		memcheck.Bound(t, len(b), 256, 1<<20, func() { info, err = parseInfo(b) })
		if err != nil {
			return
		}
		if _, err := json.Marshal(info); err != nil {
			t.Fatalf("parsed Info does not marshal: %v", err)
		}
	})
}
