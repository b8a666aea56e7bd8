package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/report"
)

// TestCompareVerb: two experiments' directories in, the accuracy table
// out and the comparison report written; bad input is a usage error (2) or
// a failure naming the file (1), with nothing written.
func TestCompareVerb(t *testing.T) {
	tmp := t.TempDir()
	run := func(name string, weights report.Weights, accs ...float64) string {
		r := &report.Results{Weights: weights, Data: report.Data{Name: "mnist", Train: 1000, Test: 500},
			Budget: report.Budget{Epochs: 1, Batch: 64, Optimizer: "adam", LR: 1e-3}}
		for i, a := range accs {
			r.Cases = append(r.Cases, report.CaseResult{Case: i + 1, Description: "case", Trainable: 10 * (i + 1), Accuracy: a})
		}
		dir := filepath.Join(tmp, name)
		if err := report.Write(dir, r); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	a := run("a", report.Weights{Name: "random init (seed 0)", Random: true}, 0.5, 0.2)
	b := run("b", report.Weights{Name: "fashion.safetensors"}, 0.25, 0.9)
	out := filepath.Join(tmp, "cmp")
	code, stdout, stderr := lorafit(t, "compare", "--out", out, a, b)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, s := range []string{"random init (seed 0)", "fashion.safetensors", "case 1", "50.00%", "25.00%", "-25.00", "+70.00", "wrote " + out} {
		if !strings.Contains(stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, stdout)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "compare.html")); err != nil {
		t.Error(err)
	}

	bad := filepath.Join(tmp, "bad")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"compare", "--out", bad, a}, 2, "at least two"},
		{[]string{"compare", a, b}, 2, "--out is required"},
		{[]string{"compare", "--out", bad, a, filepath.Join(tmp, "none")}, 1, filepath.Join(tmp, "none", "results.json")},
	} {
		code, _, stderr := lorafit(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a failed compare left %s: %v", bad, err)
	}
}
