package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
)

var fixture = testutil.ResNet50W4

// lorafit runs one command line in-process.
func lorafit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestPredictMatchesPyTorch: `predict --json` on MNIST digits with a
// PyTorch-saved ResNet-50-topology checkpoint gives PyTorch's logits.
func TestPredictMatchesPyTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct{ Logits map[string][]float64 }
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	args := []string{"predict", "--weights", fixture, "--image-size", "28", "--json", "--top", "3", "--batch", "2"}
	for name := range exp.Logits {
		args = append(args, filepath.Join("testdata", name))
	}
	code, stdout, stderr := lorafit(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != len(exp.Logits) {
		t.Fatalf("%d output lines for %d images", len(lines), len(exp.Logits))
	}
	for _, line := range lines {
		var p classifier.Prediction
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatal(err)
		}
		want := exp.Logits[filepath.Base(p.Image)]
		var maxDiff, scale float64
		for i := range want {
			maxDiff = math.Max(maxDiff, math.Abs(float64(p.Logits[i])-want[i]))
			scale = math.Max(scale, math.Abs(want[i]))
		}
		if len(p.Logits) != len(want) || maxDiff > 1e-4*scale {
			t.Errorf("%s: logits differ from PyTorch's by %.3g (scale %.3g)", p.Image, maxDiff, scale)
		}
		if len(p.Top) != 3 || p.Top[0].Prob < p.Top[1].Prob {
			t.Errorf("%s: top-3 not sorted: %+v", p.Image, p.Top)
		}
	}
}

// TestErrors: bad input gives a clear message naming the file, a non-zero
// exit code and nothing on stdout.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.pth")
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, data[:len(data)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	notImage := filepath.Join(dir, "notes.png")
	if err := os.WriteFile(notImage, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LORAFIT_CACHE", dir)
	t.Setenv("TORCH_HOME", dir)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"truncated checkpoint", []string{"inspect", truncated}, 1, []string{truncated}},
		{"pickle names a forbidden global", []string{"inspect", "../../checkpoint/pth/testdata/malicious.pth"}, 1, []string{"malicious.pth", "posix.system"}},
		{"image is not an image", []string{"predict", "--weights", fixture, notImage}, 1, []string{notImage}},
		{"weights file missing", []string{"predict", "--weights", filepath.Join(dir, "nope.pth"), "testdata/mnist_test0_label7.png"}, 1, []string{"nope.pth"}},
		{"registry weights not cached", []string{"predict", "--download=false", "--weights", "resnet50/IMAGENET1K_V2", "testdata/mnist_test0_label7.png"}, 1, []string{"not downloaded yet", "lorafit weights download resnet50/IMAGENET1K_V2"}},
		{"unknown weights name", []string{"predict", "--weights", "resnet50/IMAGENET9K", "testdata/mnist_test0_label7.png"}, 1, []string{"resnet50/IMAGENET1K_V2"}},
		{"wrong architecture", []string{"predict", "--weights", fixture, "--model", "resnet18", "testdata/mnist_test0_label7.png"}, 1, []string{"holds a resnet50-w4"}},
		{"unknown verb", []string{"fly"}, 2, []string{`unknown verb "fly"`}},
		{"no image", []string{"predict", "--weights", fixture}, 2, []string{"no IMAGE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := lorafit(t, tc.args...)
			if code != tc.code || stdout != "" {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %s", code, tc.code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not mention %q", stderr, w)
				}
			}
		})
	}
}

func TestInspect(t *testing.T) {
	raw, err := os.ReadFile("../../resnet/testdata/resnet50_w4.json")
	if err != nil {
		t.Fatal(err)
	}
	var torch struct {
		NumParams  int `json:"num_params"`
		NumEntries int `json:"num_entries"`
	}
	if err := json.Unmarshal(raw, &torch); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := lorafit(t, "inspect", "--json", fixture)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r inspectReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	if r.Entries != torch.NumEntries || len(r.Tensors) != torch.NumEntries || r.Params != torch.NumParams || r.Format != "pth" {
		t.Errorf("inspect: %d entries, %d params, format %q; torch: %d entries, %d params",
			r.Entries, r.Params, r.Format, torch.NumEntries, torch.NumParams)
	}
	code, stdout, _ = lorafit(t, "inspect", fixture)
	if code != 0 || !strings.Contains(stdout, "layer4.2.conv3") || !strings.Contains(stdout, "total: "+commas(torch.NumParams)+" parameters") {
		t.Errorf("text inspect lacks the module tree or total:\n%s", stdout)
	}
}

func TestHelpAndWeightsList(t *testing.T) {
	if code, stdout, _ := lorafit(t, "help"); code != 0 || !strings.Contains(stdout, "predict") {
		t.Errorf("help: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := lorafit(t, "help", "predict"); code != 0 || !strings.Contains(stdout, "-image-size") {
		t.Errorf("help predict: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := lorafit(t, "weights", "list"); code != 0 || !strings.Contains(stdout, "resnet50/IMAGENET1K_V2") {
		t.Errorf("weights list: exit %d, %q", code, stdout)
	}
}

func predictLogits(t *testing.T, args ...string) []float32 {
	t.Helper()
	code, stdout, stderr := lorafit(t, append([]string{"predict", "--image-size", "28", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("predict %v: exit %d: %s", args, code, stderr)
	}
	var p classifier.Prediction
	if err := json.Unmarshal([]byte(strings.SplitN(stdout, "\n", 2)[0]), &p); err != nil {
		t.Fatal(err)
	}
	return p.Logits
}

// TestAdapterWorkflow: adapter init → predict --adapter → merge → predict
// on the merged file agrees; another base is refused.
func TestAdapterWorkflow(t *testing.T) {
	dir := t.TempDir()
	adapter := filepath.Join(dir, "case2")
	img := "testdata/mnist_test0_label7.png"
	code, stdout, stderr := lorafit(t, "adapter", "init", "--weights", fixture, "--case", "2", "--head", "16,8",
		"--rank", "4", "--init-lora-weights", "false", "--seed", "3", "--out", adapter)
	if code != 0 || !strings.Contains(stdout, "trainable params:") {
		t.Fatalf("adapter init: exit %d, %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = lorafit(t, "inspect", adapter)
	if code != 0 || !strings.Contains(stdout, `adapter: target_modules ".*\\.2\\.conv3", r=4`) ||
		!strings.Contains(stdout, "base_model.model.layer1.2.conv3.lora_A.weight") {
		t.Errorf("inspect on the adapter directory: exit %d\n%s%s", code, stdout, stderr)
	}
	adapted := predictLogits(t, "--weights", fixture, "--adapter", adapter, img)
	plain := predictLogits(t, "--weights", fixture, img)
	if len(adapted) != 10 || testutil.MaxRelDiff(adapted, plain) < 1e-3 {
		t.Fatalf("the adapter does not change the output: %v vs %v", adapted, plain)
	}
	merged := filepath.Join(dir, "merged.safetensors")
	if code, _, stderr := lorafit(t, "merge", "--weights", fixture, "--adapter", adapter, "--out", merged); code != 0 {
		t.Fatalf("merge: exit %d: %s", code, stderr)
	}
	if d := testutil.MaxRelDiff(predictLogits(t, "--weights", merged, img), adapted); d > 1e-5 {
		t.Errorf("merged model's logits differ by %.2g relative (limit 1e-5)", d)
	}
	code, stdout, stderr = lorafit(t, "predict", "--weights", "random", "--model", "resnet50", "--adapter", adapter, img)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "--allow-base-mismatch") {
		t.Errorf("adapter on another base: exit %d, stderr %s", code, stderr)
	}
}

func TestParamsCases(t *testing.T) {
	want := map[string]int{"1": 646410, "2": 2733810, "3": 2135810, "4": 20490}
	for c, n := range want {
		code, stdout, stderr := lorafit(t, "params", "--case", c, "--json")
		var r struct{ Case, Trainable, Total int }
		if code != 0 || json.Unmarshal([]byte(stdout), &r) != nil || r.Trainable != n || fmt.Sprint(r.Case) != c {
			t.Errorf("params --case %s: exit %d, %s %s", c, code, stdout, stderr)
		}
	}
	code, _, stderr := lorafit(t, "params", "--target", `.*.2.conv`)
	if code != 1 || !strings.Contains(stderr, "closest names: ") || !strings.Contains(stderr, "layer1.2.conv1") {
		t.Errorf("the blog's regex: exit %d, %s", code, stderr)
	}
}

// TestTuneGC: computing verbs lower the GC target, unless $GOGC is set.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		env  string
		want int
	}{{"", computeGCPercent}, {"100", 100}} {
		t.Setenv("GOGC", c.env)
		debug.SetGCPercent(100)
		tuneGC()
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", c.env, got, c.want)
		}
	}
}
