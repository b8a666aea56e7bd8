package adapter

import (
	"testing"

	"github.com/lorafit/lorafit/resnet"
)

// TestFoundingCases: the four presets on torchvision's ResNet-50 have the
// trainable counts the founding study reports (646,410 / 2,733,810 /
// 2,135,810 / 20,490 — PEFT's print_trainable_parameters on the blog's
// models). Counts need shapes only, so no weights are loaded.
func TestFoundingCases(t *testing.T) {
	cfg, err := resnet.ConfigFor("resnet50")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n, trainable, loraModules int
	}{
		{1, 646410, 0},
		{2, 2733810, 4},
		{3, 2135810, 12},
		{4, 20490, 0},
	} {
		spec, err := Case(tc.n)
		if err != nil {
			t.Fatal(err)
		}
		m, err := New(resnet.New(cfg), spec)
		if err != nil {
			t.Fatalf("case %d: %v", tc.n, err)
		}
		r := m.Params()
		if r.Trainable != tc.trainable || len(m.Targets) != tc.loraModules {
			t.Errorf("case %d: %d trainable params on %d LoRA modules, want %d on %d", tc.n, r.Trainable, len(m.Targets), tc.trainable, tc.loraModules)
		}
		sum := 0
		for _, mp := range r.Modules {
			sum += mp.Params
		}
		if sum != r.Trainable {
			t.Errorf("case %d: per-module breakdown sums to %d, not %d", tc.n, sum, r.Trainable)
		}
	}
}
