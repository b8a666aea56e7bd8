package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/report"
)

func readResults(t *testing.T, dir string) *report.Results {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r report.Results
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// TestExperimentQuick runs README's main job in its --quick form, offline:
// `auto` weights cannot be had, so the run must say it uses a random
// backbone, and still produce every output with the exact trainable counts
// and real adapter sizes.
func TestExperimentQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("trains four full-size ResNet-50 cases (about a minute)")
	}
	tmp := t.TempDir()
	t.Setenv("LORAFIT_CACHE", filepath.Join(tmp, "cache"))
	t.Setenv("TORCH_HOME", filepath.Join(tmp, "torch"))
	out := filepath.Join(tmp, "run")
	code, stdout, stderr := lorafit(t, "experiment", "--quick", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "randomly initialized") || !strings.Contains(stdout, "random-init backbone") {
		t.Errorf("no random-backbone warning:\n%s\n%s", stderr, stdout)
	}
	// Its title and a note say what 31 steps a case can and cannot show.
	if !strings.Contains(stdout, "quick run: checks that everything works; its accuracies compare nothing") ||
		!strings.Contains(stdout, "NOTE: a quick run trains each case for 31 steps on 2,000 images") ||
		!strings.Contains(stdout, "expect near chance, 0.10") {
		t.Errorf("the quick run's table does not say what its numbers mean:\n%s", stdout)
	}
	r := readResults(t, out)
	if r.Caveat == "" || r.Environment.GoExperiment != backend.Experiments() || r.Environment.LorafitVersion == "" {
		t.Errorf("results.json: caveat %q, go_experiment %q (built with %q), lorafit_version %q",
			r.Caveat, r.Environment.GoExperiment, backend.Experiments(), r.Environment.LorafitVersion)
	}
	if html, err := os.ReadFile(filepath.Join(out, "report.html")); err != nil || !strings.Contains(string(html), "a quick run trains each case") {
		t.Errorf("report.html lacks the quick-run caveat (%v)", err)
	}
	checkPeakRSS(t, r, stdout)
	if !r.Weights.Random || r.Data.Train != 2000 || r.Data.Test != 1000 || len(r.Cases) != 4 {
		t.Fatalf("results: random=%v train=%d test=%d cases=%d", r.Weights.Random, r.Data.Train, r.Data.Test, len(r.Cases))
	}
	want := map[int]int{1: 646410, 2: 2733810, 3: 2135810, 4: 20490}
	for _, c := range r.Cases {
		if c.Trainable != want[c.Case] {
			t.Errorf("case %d: %d trainable params, want %d", c.Case, c.Trainable, want[c.Case])
		}
		st, err := os.Stat(filepath.Join(out, c.AdapterDir, "adapter_model.safetensors"))
		if err != nil || st.Size() != c.AdapterBytes {
			t.Errorf("case %d: adapter size %d, file %v %v", c.Case, c.AdapterBytes, st, err)
		}
		if c.Accuracy < 0 || c.Accuracy > 1 || len(c.History) == 0 || len(c.Confusion) != 10 {
			t.Errorf("case %d: accuracy %g, %d history points, %d confusion rows", c.Case, c.Accuracy, len(c.History), len(c.Confusion))
		}
	}
	for _, f := range []string{"report.md", "report.html", "loss.png", "accuracy.png", "cases.png", "confusion_case2.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	// An adapter the experiment wrote is usable by predict.
	adapter := filepath.Join(out, r.Cases[1].AdapterDir)
	if code, _, stderr := lorafit(t, "predict", "--weights", "random", "--adapter", adapter, "--image-size", "28", "testdata/mnist_test0_label7.png"); code != 0 {
		t.Errorf("predict with the case-2 adapter: %s", stderr)
	}
}

// TestExperimentDeterministic: the same seed gives the same numbers.
func TestExperimentDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice")
	}
	var runs []*report.Results
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "run")
		code, _, stderr := lorafit(t, "experiment", "--weights", "random:3", "--cases", "4", "--limit-train", "256",
			"--limit-test", "128", "--batch", "32", "--seed", "11", "--out", out)
		if code != 0 {
			t.Fatalf("run %d: %s", i, stderr)
		}
		runs = append(runs, readResults(t, out))
	}
	a, b := runs[0].Cases[0], runs[1].Cases[0]
	ja, _ := json.Marshal([]any{a.Accuracy, a.MeanLoss, a.History, a.Confusion})
	jb, _ := json.Marshal([]any{b.Accuracy, b.MeanLoss, b.History, b.Confusion})
	if string(ja) != string(jb) {
		t.Errorf("two runs with the same seed differ:\n%s\n%s", ja, jb)
	}
}

// TestTrainVerb: one adaptation trained on a small MNIST sample gives an
// adapter predict can use, and a result.json with the test accuracy.
func TestTrainVerb(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := lorafit(t, "train", "--weights", fixture, "--case", "3", "--rank", "2",
		"--limit-train", "256", "--limit-test", "100", "--batch", "32", "--epochs", "2", "--out", out)
	if code != 0 || !strings.Contains(stdout, "test accuracy") {
		t.Fatalf("exit %d: %s\n%s", code, stdout, stderr)
	}
	var cr report.CaseResult
	raw, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil || json.Unmarshal(raw, &cr) != nil || len(cr.Confusion) != 10 || len(cr.History) == 0 {
		t.Fatalf("result.json: %v %s", err, raw)
	}
	if _, err := os.Stat(filepath.Join(out, "checkpoint.safetensors")); err == nil {
		t.Error("the checkpoint was left behind after the adapter was saved")
	}
	if code, _, stderr := lorafit(t, "predict", "--weights", fixture, "--adapter", filepath.Join(out, "adapter"),
		"--image-size", "28", "testdata/mnist_test1_label2.png"); code != 0 {
		t.Errorf("predict with the trained adapter: %s", stderr)
	}
	// The base already outputs 10 classes here; a 1000-class base would need a head.
	code, _, stderr = lorafit(t, "train", "--weights", "random", "--case", "2", "--head", "none", "--limit-train", "64", "--out", out+"2")
	if code != 2 || !strings.Contains(stderr, "--replace-fc") {
		t.Errorf("1000 outputs for 10 classes: exit %d, %s", code, stderr)
	}
}

// TestPredictUsesAdapterInfo: an adapter trained on 28×28 digits is applied
// at 28×28 with its own class names, without flags.
func TestPredictUsesAdapterInfo(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	if code, _, stderr := lorafit(t, "train", "--weights", fixture, "--case", "4", "--limit-train", "64",
		"--limit-test", "10", "--out", out); code != 0 {
		t.Fatal(stderr)
	}
	code, stdout, stderr := lorafit(t, "predict", "--weights", fixture, "--adapter", filepath.Join(out, "adapter"),
		"--json", "testdata/mnist_test0_label7.png")
	if code != 0 {
		t.Fatal(stderr)
	}
	var p classifier.Prediction
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Top) == 0 || strings.HasPrefix(p.Top[0].Label, "class ") {
		t.Errorf("labels are not the adapter's class names: %+v", p.Top)
	}
	// Same logits as asking for 28×28 explicitly: no resize happened.
	if d := testutil.MaxRelDiff(predictLogits(t, "--weights", fixture, "--adapter", filepath.Join(out, "adapter"),
		"testdata/mnist_test0_label7.png"), p.Logits); d != 0 {
		t.Errorf("default input size is not the adapter's 28: logits differ by %g", d)
	}
}
