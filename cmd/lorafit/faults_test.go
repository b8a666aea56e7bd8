//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/report"
)

func readCaseResult(t *testing.T, path string) report.CaseResult {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cr report.CaseResult
	if err := json.Unmarshal(raw, &cr); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cr
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ", a, b)
	}
}

// TestSIGTERMThenResume: SIGTERM in the middle of `lorafit train` ends it
// cleanly (exit 1, a resume hint, a checkpoint, no adapter); --resume with
// other settings is refused naming each field and leaves the checkpoint
// alone; --resume with the same flags cleans what killed writes left and
// ends with the bytes of an uninterrupted run's adapter.
func TestSIGTERMThenResume(t *testing.T) {
	bin := buildCLI(t, "")
	env := isolatedEnv(t)
	tmp := t.TempDir()
	// 1,024 steps of batch 8 on the small fixture: a few seconds.
	flags := []string{"train", "--weights", fixture, "--case", "3", "--rank", "2", "--limit-train", "4096",
		"--limit-test", "64", "--batch", "8", "--epochs", "2"}
	dir := filepath.Join(tmp, "interrupted")
	p := startCLI(t, bin, env, append(flags, "--out", dir)...)
	p.waitFor(t, `^step \d+/1024 `, 2*time.Minute)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, stdout, stderr := p.wait(t)
	if !st.Exited() || st.ExitCode() != 1 || stdout != "" {
		t.Fatalf("after SIGTERM: %v (want a clean exit 1), stdout %q\n%s", st, stdout, stderr)
	}
	m := regexp.MustCompile(`training interrupted at step (\d+) of 1024; checkpoint saved to (\S+); rerun with --resume`).FindStringSubmatch(stderr)
	if m == nil || m[2] != filepath.Join(dir, "checkpoint.safetensors") {
		t.Fatalf("no interruption message with the step and checkpoint:\n%s", stderr)
	}
	stoppedAt := m[1]
	ckpt := m[2]
	before, err := os.ReadFile(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"adapter", "result.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("an interrupted run left %s", f)
		}
	}

	for _, tc := range []struct {
		flags []string
		want  []string
	}{
		{[]string{"--lr", "0.002"}, []string{"lr: 0.001 → 0.002"}},
		{[]string{"--epochs", "3"}, []string{"epochs: 2 → 3"}},
		{[]string{"--label-smoothing", "0.1", "--image-size", "32"}, []string{"label-smoothing: 0 → 0.1", "preprocess: resize 28, crop 28", "→ resize 32, crop 32"}},
		{[]string{"--limit-train", "1024"}, []string{"data.train: mnist/train (4096 of 60000) → mnist/train (1024 of 60000)", "data.train.images: 4096 → 1024"}},
		{[]string{"--weights", "random:3", "--model", "resnet34", "--head", "16"}, []string{"base.sha256: ", "base.arch: resnet50-w4 → resnet34", "adapter: "}},
	} {
		args := append(append(append([]string{}, flags...), tc.flags...), "--out", dir, "--resume")
		code, stdout, stderr := runCLI(t, bin, env, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, ckpt+" is from another run") {
			t.Errorf("--resume %v: exit %d (want 2), stdout %q\n%s", tc.flags, code, stdout, stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("--resume %v: the refusal does not say %q:\n%s", tc.flags, w, stderr)
			}
		}
	}
	if after, err := os.ReadFile(ckpt); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("a refused resume changed the checkpoint (%v)", err)
	}

	// What killed writes leave; the next run removes it.
	os.Mkdir(filepath.Join(dir, ".adapter.tmp-123"), 0o755)
	os.WriteFile(filepath.Join(dir, ".result.json.tmp-456"), []byte("{"), 0o644)
	code, stdout, stderr := runCLI(t, bin, env, append(flags, "--out", dir, "--resume")...)
	if code != 0 || !strings.Contains(stdout, "(resumed at step "+stoppedAt+")") ||
		!strings.Contains(stderr, "resuming from "+ckpt+" at step "+stoppedAt) {
		t.Fatalf("--resume: exit %d\n%s\n%s", code, stdout, stderr)
	}
	noLeftovers(t, dir)
	if _, err := os.Stat(ckpt); err == nil {
		t.Error("the checkpoint outlived the saved adapter")
	}
	resumed := readCaseResult(t, filepath.Join(dir, "result.json"))
	if strconv.Itoa(resumed.ResumedAtStep) != stoppedAt {
		t.Errorf("result.json: resumed_at_step %d, the run stopped at %s", resumed.ResumedAtStep, stoppedAt)
	}

	whole := filepath.Join(tmp, "whole")
	if code, _, stderr := runCLI(t, bin, env, append(flags, "--out", whole)...); code != 0 {
		t.Fatalf("uninterrupted run: exit %d\n%s", code, stderr)
	}
	sameFile(t, filepath.Join(dir, "adapter", "adapter_model.safetensors"), filepath.Join(whole, "adapter", "adapter_model.safetensors"))
	w := readCaseResult(t, filepath.Join(whole, "result.json"))
	ja, _ := json.Marshal([]any{resumed.Accuracy, resumed.MeanLoss, resumed.Confusion, resumed.History, resumed.Identity})
	jb, _ := json.Marshal([]any{w.Accuracy, w.MeanLoss, w.Confusion, w.History, w.Identity})
	if !bytes.Equal(ja, jb) {
		t.Errorf("resumed and uninterrupted runs' results differ:\n%s\n%s", ja, jb)
	}

	// Resuming a finished run trains nothing and says so.
	code, stdout, _ = runCLI(t, bin, env, append(flags, "--out", dir, "--resume")...)
	if code != 0 || !strings.Contains(stdout, "had already finished") {
		t.Errorf("--resume of a finished run: exit %d, %s", code, stdout)
	}
}

// TestExperimentKill9ThenResume: kill -9 during an experiment's second
// case, then --resume: the finished case is kept (its identity checked:
// other flags are refused, naming the case and field), the interrupted one
// continues from its last checkpoint, and every number and adapter byte
// equals an uninterrupted run's.
func TestExperimentKill9ThenResume(t *testing.T) {
	bin := buildCLI(t, "")
	env := isolatedEnv(t)
	tmp := t.TempDir()
	flags := []string{"experiment", "--weights", "random:1", "--cases", "1,4", "--limit-train", "256", "--limit-test", "64",
		"--batch", "32", "--epochs", "2"}
	dir := filepath.Join(tmp, "killed")
	p := startCLI(t, bin, env, append(flags, "--out", dir)...)
	p.waitFor(t, `^== case 4`, 5*time.Minute)
	p.waitFor(t, `^step 10/16 `, 2*time.Minute) // past the checkpoint at the end of epoch 1 (step 8)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, _, stderr := p.wait(t); st.Exited() {
		t.Fatalf("lorafit was not killed: %v\n%s", st, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "case1", "result.json")); err != nil {
		t.Fatalf("case 1 had finished: %v", err)
	}
	ckpt := filepath.Join(dir, "case4", "checkpoint.safetensors")
	if _, err := os.Stat(ckpt); err != nil {
		t.Fatalf("case 4 had passed its first checkpoint: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "results.json")); err == nil {
		t.Fatal("a killed experiment left results.json")
	}

	refused := []struct {
		flags []string
		want  []string
	}{
		{[]string{"--lr", "0.002"}, []string{"case 1: ", filepath.Join(dir, "case1", "result.json") + " is from another run", "lr: 0.001 → 0.002"}},
		{[]string{"--limit-test", "32"}, []string{"case 1: ", "data.test.images: 64 → 32"}},
		{[]string{"--cases", "4", "--epochs", "3"}, []string{"case 4: ", ckpt + " is from another run", "epochs: 2 → 3"}},
	}
	for _, tc := range refused {
		args := append(append(append([]string{}, flags...), tc.flags...), "--out", dir, "--resume")
		code, _, stderr := runCLI(t, bin, env, args...)
		if code != 2 {
			t.Errorf("--resume %v: exit %d, want 2\n%s", tc.flags, code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("--resume %v: the refusal does not say %q:\n%s", tc.flags, w, stderr)
			}
		}
	}

	os.WriteFile(filepath.Join(dir, ".results.json.tmp-1"), []byte("{"), 0o644)
	os.Mkdir(filepath.Join(dir, "case4", ".adapter.tmp-2"), 0o755)
	code, stdout, stderr := runCLI(t, bin, env, append(flags, "--out", dir, "--resume")...)
	if code != 0 {
		t.Fatalf("--resume: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "== case 1: finished before the interruption; kept") || !strings.Contains(stderr, "resuming from "+ckpt+" at step 8") {
		t.Errorf("the resumed run does not say what it kept and resumed:\n%s", stderr)
	}
	if !regexp.MustCompile(`(?m)^run\s+kept\s+resumed@8$`).MatchString(stdout) {
		t.Errorf("the table does not mark the kept and resumed cases:\n%s", stdout)
	}
	noLeftovers(t, dir)

	whole := filepath.Join(tmp, "whole")
	if code, _, stderr := runCLI(t, bin, env, append(flags, "--out", whole)...); code != 0 {
		t.Fatalf("uninterrupted run: exit %d\n%s", code, stderr)
	}
	got, want := readResults(t, dir), readResults(t, whole)
	if len(got.Cases) != 2 || len(want.Cases) != 2 {
		t.Fatalf("%d and %d cases", len(got.Cases), len(want.Cases))
	}
	if !got.Cases[0].Kept || got.Cases[1].ResumedAtStep != 8 || want.Cases[0].Kept || want.Cases[1].ResumedAtStep != 0 {
		t.Errorf("results.json: case 1 kept=%v, case 4 resumed at %d; uninterrupted: %v, %d",
			got.Cases[0].Kept, got.Cases[1].ResumedAtStep, want.Cases[0].Kept, want.Cases[1].ResumedAtStep)
	}
	for i := range got.Cases {
		g, w := got.Cases[i], want.Cases[i]
		jg, _ := json.Marshal([]any{g.Case, g.Accuracy, g.MeanLoss, g.PerClassAccuracy, g.Confusion, g.History, g.AdapterBytes, g.AdapterParts, g.Identity})
		jw, _ := json.Marshal([]any{w.Case, w.Accuracy, w.MeanLoss, w.PerClassAccuracy, w.Confusion, w.History, w.AdapterBytes, w.AdapterParts, w.Identity})
		if !bytes.Equal(jg, jw) {
			t.Errorf("case %d differs from the uninterrupted run's:\n%s\n%s", g.Case, jg, jw)
		}
		sameFile(t, filepath.Join(dir, g.AdapterDir, "adapter_model.safetensors"), filepath.Join(whole, w.AdapterDir, "adapter_model.safetensors"))
	}
	if got.Budget != want.Budget || got.Data.Train != want.Data.Train || got.Weights.SHA256 != want.Weights.SHA256 {
		t.Errorf("results.json setup differs: %+v %+v", got.Budget, want.Budget)
	}
	if got.Environment.GoExperiment != backend.Experiments() {
		t.Errorf("results.json go_experiment %q; built with %q", got.Environment.GoExperiment, backend.Experiments())
	}
}
