package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
)

// TestUsageErrors: every mistake in a command line — an unknown flag
// included — exits 2 with the problem named, before anything runs.
func TestUsageErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"train", "--no-such-flag", "--out", out}, "flag provided but not defined: -no-such-flag"},
		{"unknown flag after an image", []string{"predict", "testdata/mnist_test0_label7.png", "--frobnicate"}, "-frobnicate"},
		{"bad flag value", []string{"experiment", "--epochs", "one"}, `invalid value "one" for flag -epochs`},
		{"--val-split 0", []string{"train", "--weights", fixture, "--val-split", "0", "--out", out}, "--val-split 0: want a fraction in (0, 1)"},
		{"--val-split 1", []string{"experiment", "--val-split", "1", "--out", out}, "--val-split 1: want a fraction in (0, 1)"},
		{"--epochs 0", []string{"train", "--weights", fixture, "--epochs", "0", "--out", out}, "epochs 0: want at least 1"},
		{"--lr 0", []string{"experiment", "--lr", "0"}, "learning rate 0: want a positive number"},
		{"--batch 0", []string{"train", "--batch", "0", "--out", out}, "batch 0: want 1 to 4096"},
		{"--limit-train -1", []string{"train", "--weights", fixture, "--limit-train", "-1", "--out", out}, "--limit-train and --limit-test: want 0 (all) or more"},
		{"case twice", []string{"experiment", "--cases", "1,1"}, `--cases "1,1": case 1 twice`},
		{"--resume without --out", []string{"experiment", "--resume"}, "--resume needs the --out directory"},
		{"--resume of nothing", []string{"train", "--weights", fixture, "--resume", "--out", out}, "--resume: " + out + " does not exist"},
		{"a previous run's directory", []string{"train", "--weights", fixture, "--out", full}, full + " already holds files: pass --resume"},
		{"--num-classes disagrees with the data", []string{"train", "--weights", fixture, "--case", "4", "--num-classes", "5", "--limit-train", "64", "--out", out},
			"--num-classes 5, but mnist/train (64 of 60000) has 10 classes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := lorafit(t, tc.args...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d (want 2), stdout %q, stderr does not say %q:\n%s", code, stdout, tc.want, stderr)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a refused command created %s", out)
			}
		})
	}
}

// TestInspect896ByteHeader: an adapter whose safetensors header is 896
// bytes long — its first byte is 0x80, pickle's PROTO opcode — is still
// read as safetensors (by structure, not by a first-byte guess).
func TestInspect896ByteHeader(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	code, _, stderr := lorafit(t, "adapter", "init", "--weights", "random", "--case", "1", "--head", "64,32,8", "--out", dir)
	if code != 0 {
		t.Fatalf("adapter init: exit %d\n%s", code, stderr)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(raw); n != 896 {
		t.Fatalf("the header is %d bytes, not the 896 this test is about", n)
	}
	code, stdout, stderr := lorafit(t, "inspect", dir)
	if code != 0 || !strings.Contains(stdout, "safetensors, 8 entries") || !strings.Contains(stdout, "base_model.model.head.6.weight") ||
		!strings.Contains(stdout, "head 64,32,8") {
		t.Errorf("inspect: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = lorafit(t, "inspect", "--json", filepath.Join(dir, "adapter_model.safetensors"))
	var r inspectReport
	if code != 0 || json.Unmarshal([]byte(stdout), &r) != nil || r.Format != "safetensors" || r.Entries != 8 {
		t.Errorf("inspect --json: exit %d, %+v\n%s", code, r, stderr)
	}
}

// TestPredictNaNAdapter: an adapter with NaN weights makes predict fail,
// naming the image and the cause, instead of printing NaN% with exit 0.
func TestPredictNaNAdapter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nan")
	if code, _, stderr := lorafit(t, "adapter", "init", "--weights", fixture, "--case", "4", "--out", dir); code != 0 {
		t.Fatalf("adapter init: %s", stderr)
	}
	file := filepath.Join(dir, "adapter_model.safetensors")
	sd, meta, err := safetensors.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range sd.Names {
		n := sd.Get(k).NumElements()
		nan := make([]float32, n)
		for i := range nan {
			nan[i] = float32(math.NaN())
		}
		sd.Set(k, checkpoint.FromFloat32(sd.Get(k).Shape, nan))
	}
	if err := safetensors.Save(file, sd, meta); err != nil {
		t.Fatal(err)
	}
	img := "testdata/mnist_test0_label7.png"
	for _, extra := range [][]string{nil, {"--json"}} {
		args := append([]string{"predict", "--weights", fixture, "--adapter", dir, img}, extra...)
		code, stdout, stderr := lorafit(t, args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, img+": logit 0 is NaN: the model's weights are broken") {
			t.Errorf("%v: exit %d, stdout %q\n%s", extra, code, stdout, stderr)
		}
	}
}

// TestNewRunDirSameSecond: experiments started in the same second (the
// default runs/<timestamp>) get a directory each, never a shared one.
func TestNewRunDirSameSecond(t *testing.T) {
	t.Chdir(t.TempDir())
	now := time.Now()
	dirs := make([]string, 8)
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Go(func() {
			d, err := newRunDir(now)
			if err != nil {
				t.Error(err)
			}
			dirs[i] = d
		})
	}
	wg.Wait()
	slices.Sort(dirs)
	if len(slices.Compact(slices.Clone(dirs))) != len(dirs) {
		t.Fatalf("two runs share a directory: %v", dirs)
	}
	base := filepath.Join("runs", now.Format("20060102-150405"))
	for i, d := range dirs {
		if st, err := os.Stat(d); err != nil || !st.IsDir() || !strings.HasPrefix(d, base) {
			t.Errorf("run %d: %s (%v)", i, d, err)
		}
	}
}
