package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/nn"
)

// modules: a slice of ResNet-50's leaf modules.
var modules = []nn.Module{
	{Name: "conv1", Type: nn.Conv2d, In: 3, Out: 64, Kernel: 7, Stride: 2, Padding: 3},
	{Name: "bn1", Type: nn.BatchNorm2d, In: 64, Out: 64},
	{Name: "layer1.0.conv1", Type: nn.Conv2d, In: 64, Out: 64, Kernel: 1, Stride: 1},
	{Name: "layer1.0.downsample.0", Type: nn.Conv2d, In: 64, Out: 256, Kernel: 1, Stride: 1},
	{Name: "layer1.2.conv1", Type: nn.Conv2d, In: 256, Out: 64, Kernel: 1, Stride: 1},
	{Name: "layer1.2.conv2", Type: nn.Conv2d, In: 64, Out: 64, Kernel: 3, Stride: 1, Padding: 1},
	{Name: "layer1.2.bn2", Type: nn.BatchNorm2d, In: 64, Out: 64},
	{Name: "layer1.2.conv3", Type: nn.Conv2d, In: 64, Out: 256, Kernel: 1, Stride: 1},
	{Name: "layer2.2.conv3", Type: nn.Conv2d, In: 128, Out: 512, Kernel: 1, Stride: 1},
	{Name: "fc", Type: nn.Linear, In: 2048, Out: 1000},
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets Targets
		want    []string // matched module names, or
		err     string   // an error containing this
	}{
		{"regex must match the whole name", Targets{Regex: `.*\.2\.conv3`}, []string{"layer1.2.conv3", "layer2.2.conv3"}, ""},
		{"conv1..3 of block 2", Targets{Regex: `.*\.2\.conv[0-9]`}, []string{"layer1.2.conv1", "layer1.2.conv2", "layer1.2.conv3", "layer2.2.conv3"}, ""},
		{"the blog's pattern matches nothing under full match", Targets{Regex: `.*.2.conv`}, nil, "matches no module"},
		{"list: suffix match on dots", Targets{List: []string{"conv3", "fc"}}, []string{"layer1.2.conv3", "layer2.2.conv3", "fc"}, ""},
		{"list: no partial-word suffix", Targets{List: []string{"onv3"}}, nil, "closest names"},
		{"regex hitting batch norm", Targets{Regex: `layer1\.2\..*`}, nil, "layer1.2.bn2 (BatchNorm2d)"},
		{"regex hitting a container", Targets{Regex: `layer1(\.2)?`}, nil, "layer1 (a container)"},
		{"RE2 has no look-ahead", Targets{Regex: `(?!fc).*`}, nil, "RE2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.TargetModules = tc.targets
			got, err := Match(&c, modules)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, g := range got {
				names = append(names, g.Module.Name)
			}
			if strings.Join(names, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("matched %v, want %v", names, tc.want)
			}
		})
	}
}

func TestRankAlphaPatterns(t *testing.T) {
	var c Config
	raw := `{"r":8,"lora_alpha":16,"target_modules":".*conv3","use_rslora":true,
		"rank_pattern":{"layer2\\.2\\.conv3":4,"conv3":2},"alpha_pattern":{"2.conv3":9}}`
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	got, err := Match(&c, modules)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]float64{ // r, alpha
		"layer1.2.conv3": {2, 9}, // first rank key "layer2…" misses, "conv3" hits
		"layer2.2.conv3": {4, 9}, // first key wins, as in PEFT
	}
	for _, tg := range got {
		w := want[tg.Module.Name]
		if float64(tg.R) != w[0] || tg.Alpha != w[1] {
			t.Errorf("%s: r=%d alpha=%g, want r=%g alpha=%g", tg.Module.Name, tg.R, tg.Alpha, w[0], w[1])
		}
		if s := w[1] / math.Sqrt(w[0]); math.Abs(tg.Scaling-s) > 1e-12 {
			t.Errorf("%s: rsLoRA scaling %g, want alpha/sqrt(r) = %g", tg.Module.Name, tg.Scaling, s)
		}
	}
	// JSON round trip keeps pattern order (PEFT takes the first match).
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"rank_pattern":{"layer2\\.2\\.conv3":4,"conv3":2}`) {
		t.Errorf("rank_pattern order lost: %s", b)
	}
}

func TestConfigJSON(t *testing.T) {
	for _, tc := range []struct{ in, init, targets string }{
		{`{"init_lora_weights": true, "target_modules": ["conv3"]}`, "true", `["conv3"]`},
		{`{"init_lora_weights": false, "target_modules": ".*conv3"}`, "false", `".*conv3"`},
		{`{"init_lora_weights": "gaussian", "target_modules": null}`, `"gaussian"`, "null"},
	} {
		var c Config
		if err := json.Unmarshal([]byte(tc.in), &c); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(c)
		if !strings.Contains(string(b), `"init_lora_weights":`+tc.init) || !strings.Contains(string(b), `"target_modules":`+tc.targets) {
			t.Errorf("%s → %s", tc.in, b)
		}
	}
	for _, bad := range []string{`{"bias":"all"}`, `{"use_dora":true}`, `{"lora_dropout":1.5}`, `{"peft_type":"IA3"}`} {
		c := Default()
		c.TargetModules = Targets{List: []string{"fc"}}
		if err := json.Unmarshal([]byte(bad), &c); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", bad)
		}
	}
}

func TestDeltaWeight(t *testing.T) {
	// A [r=2, in=3], B [out=2, r=2], scaling 0.5: ΔW = 0.5·B·A.
	tg := Target{Module: nn.Module{Type: nn.Linear, In: 3, Out: 2}, R: 2, Scaling: 0.5}
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{1, 0, 1, 1}
	want := []float32{0.5, 1, 1.5, 2.5, 3.5, 4.5}
	got := tg.DeltaWeight(a, b)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ΔW = %v, want %v", got, want)
		}
	}
}

// TestGroupedConv: a grouped conv's lora_B is grouped ([out, r/groups]),
// its rank must divide by the groups, and its merged update is dense: output
// o only reads its own group's ranks, but every input channel.
func TestGroupedConv(t *testing.T) {
	grouped := []nn.Module{{Name: "layer1.0.conv2", Type: nn.Conv2d, In: 4, Out: 4, Kernel: 1, Stride: 1, Groups: 2}}
	c := Default()
	c.TargetModules, c.R, c.LoraAlpha = Targets{List: []string{"conv2"}}, 2, 2
	got, err := Match(&c, grouped)
	if err != nil {
		t.Fatal(err)
	}
	a, b := got[0].Shapes()
	if fmt.Sprint(a, b) != "[2 4 1 1] [4 1 1 1]" {
		t.Errorf("shapes A %v B %v, want PEFT's [2 4 1 1] [4 1 1 1]", a, b)
	}
	// A: rank 0 reads channel 0, rank 1 channel 3; B: 1 everywhere. Outputs
	// 0,1 (group 0) get rank 0's update, outputs 2,3 rank 1's.
	av := []float32{1, 0, 0, 0, 0, 0, 0, 1}
	delta := got[0].DeltaWeight(av, []float32{1, 1, 1, 1})
	want := []float32{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1}
	if fmt.Sprint(delta) != fmt.Sprint(want) {
		t.Errorf("ΔW = %v, want %v", delta, want)
	}
	if d := Densify([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 4, 4, 1, 2); fmt.Sprint(d) != "[1 2 0 0 3 4 0 0 0 0 5 6 0 0 7 8]" {
		t.Errorf("Densify = %v", d)
	}
	c.R = 3
	if _, err := Match(&c, grouped); err == nil || !strings.Contains(err.Error(), "divisible by its groups") {
		t.Errorf("rank 3 on 2 groups: %v", err)
	}
	c.R = 8
	if _, err := Match(&c, grouped); err == nil || !strings.Contains(err.Error(), "exceeds the rank of its weight (4)") {
		t.Errorf("rank 8 on a 4→4 1×1 conv: %v", err)
	}
}
