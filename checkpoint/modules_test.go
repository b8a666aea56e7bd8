package checkpoint

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestModulesMatchTorch rebuilds each torchvision ResNet's state_dict layout
// (keys and shapes PyTorch recorded) and checks the module tree against
// torch's named_modules: same modules, same order, same parameter counts.
func TestModulesMatchTorch(t *testing.T) {
	raw, err := os.ReadFile("../resnet/testdata/torchvision_archs.json")
	if err != nil {
		t.Fatal(err)
	}
	var archs map[string]struct {
		Keys      [][2]json.RawMessage
		NumParams int `json:"num_params"`
		Modules   [][3]json.RawMessage
	}
	if err := json.Unmarshal(raw, &archs); err != nil {
		t.Fatal(err)
	}
	for arch, want := range archs {
		t.Run(arch, func(t *testing.T) {
			sd := NewStateDict()
			for _, kv := range want.Keys {
				var name string
				var shape []int
				_ = json.Unmarshal(kv[0], &name)
				_ = json.Unmarshal(kv[1], &shape)
				sd.Set(name, &Tensor{DType: F32, Shape: shape})
			}
			if p, _ := Counts(sd); p != want.NumParams {
				t.Errorf("Counts params = %d, torch %d", p, want.NumParams)
			}
			got := Modules(sd)
			if len(got) != len(want.Modules) {
				t.Fatalf("%d modules, torch has %d", len(got), len(want.Modules))
			}
			for i, m := range want.Modules {
				var name, typ string
				var n int
				_ = json.Unmarshal(m[0], &name)
				_ = json.Unmarshal(m[1], &typ)
				_ = json.Unmarshal(m[2], &n)
				g := got[i]
				if g.Name != name || g.Params != n {
					t.Fatalf("module %d: %s (%d params), torch %s (%d)", i, g.Name, g.Params, name, n)
				}
				if g.Leaf && !strings.HasPrefix(g.Type, typ) {
					t.Fatalf("module %s: type %q, torch %s", name, g.Type, typ)
				}
			}
		})
	}
}
