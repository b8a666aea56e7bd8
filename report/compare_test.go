package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompare writes two real reports, reads them back as lorafit compare
// does and checks the comparison: cases lined up by number, a missing case
// as null, the change in points, and every setting that differs besides
// the weights named.
func TestCompare(t *testing.T) {
	base := sampleResults(false)
	random := *base
	random.Weights = Weights{Spec: "random:0", Name: "random init (seed 0)", Random: true}
	random.Cases = []CaseResult{base.Cases[0], base.Cases[1]}
	random.Cases[0].Accuracy, random.Cases[1].Accuracy = 0.5, 0.25
	pre := *base
	pre.Weights = Weights{Spec: "fashion.safetensors", Name: "fashion.safetensors", SHA256: "ab12"}
	pre.Cases = []CaseResult{base.Cases[1], base.Cases[0]} // any order
	pre.Cases[0].Accuracy, pre.Cases[1].Accuracy = 0.75, 0.125
	pre.Cases = append(pre.Cases, CaseResult{Case: FullCase, Description: "full fine-tuning", Trainable: 100, Accuracy: 0.9})
	random.PeakRSSBytes, pre.PeakRSSBytes = 0, 3<<29 // a run from before peak memory was recorded, and one with it

	root := t.TempDir()
	dirs := []string{filepath.Join(root, "random"), filepath.Join(root, "fashion")}
	for i, r := range []*Results{&random, &pre} {
		if err := Write(dirs[i], r); err != nil {
			t.Fatal(err)
		}
	}
	var runs []Run
	for _, d := range dirs {
		r, err := ReadRun(d)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	out := filepath.Join(root, "cmp")
	c, err := WriteComparison(out, runs)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Differences) != 0 {
		t.Errorf("differences %q, want none (only the weights differ)", c.Differences)
	}
	var back Comparison
	raw, err := os.ReadFile(filepath.Join(out, "comparison.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Runs[0].PeakRSSBytes != 0 || back.Runs[1].PeakRSSBytes != 3<<29 {
		t.Errorf("peak memory %d and %d, want 0 (not recorded) and %d", back.Runs[0].PeakRSSBytes, back.Runs[1].PeakRSSBytes, 3<<29)
	}
	n1, n2 := base.Cases[0].Case, base.Cases[1].Case
	want := map[int][2]any{n1: {0.5, 0.125}, n2: {0.25, 0.75}, FullCase: {nil, 0.9}}
	if len(back.Cases) != len(want) {
		t.Fatalf("%d cases, want %d: %+v", len(back.Cases), len(want), back.Cases)
	}
	for _, cc := range back.Cases {
		for i, w := range want[cc.Case] {
			switch {
			case w == nil && cc.Accuracy[i] != nil, w != nil && (cc.Accuracy[i] == nil || *cc.Accuracy[i] != w.(float64)):
				t.Errorf("case %d run %d: accuracy %v, want %v", cc.Case, i, cc.Accuracy[i], w)
			}
		}
	}
	md := string(read(t, out, "compare.md"))
	for _, s := range []string{"| **" + caseName(n1) + "** | 50.00% | 12.50% | -37.50 |", "| **full FT** | — | 90.00% | — | 100 |",
		"(../random/report.html)", "(../fashion/report.html)",
		"random init (seed 0)", "fashion.safetensors", "the runs are alike", "1536.00 MiB"} {
		if !strings.Contains(md, s) {
			t.Errorf("compare.md lacks %q:\n%s", s, md)
		}
	}
	if n := strings.Count(md, "peak memory (RSS)"); n != 1 {
		t.Errorf("compare.md names peak memory %d times, want once (the run without it shows none)", n)
	}
	for _, f := range []string{"compare.html", "compare.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}

	// A different budget is named: the change is then not the backbone's alone.
	runs[1].Results.Budget.Seed++
	runs[1].Results.Data.Train /= 2
	c, err = Compare(runs)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Differences, "; "); !strings.Contains(got, "seed: ") || !strings.Contains(got, "training images: ") {
		t.Errorf("differences %q, want the seed and the training images", got)
	}
}

func TestReadRunErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, content, want string
	}{
		{"missing", "", "results.json"},
		{"not json", "{", "results.json: unexpected end of JSON input"},
		{"no cases", `{"title": "x", "cases": []}`, "no case results"},
	} {
		d := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if c.content != "" {
			if err := os.WriteFile(filepath.Join(d, "results.json"), []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		_, err := ReadRun(d)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), d) {
			t.Errorf("%s: error %v, want one naming %s and saying %q", c.name, err, d, c.want)
		}
	}
	if _, err := Compare([]Run{{Dir: "a"}}); err == nil {
		t.Error("a comparison of one run did not fail")
	}
}
