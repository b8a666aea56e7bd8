package study

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/weights"
)

// job is case 4 on the small fixture, trained on n MNIST images.
func job(t *testing.T, dir string, n int) *Job {
	t.Helper()
	base, _, src, err := weights.Load(context.Background(), testutil.ResNet50W4, weights.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	trainSet, testSet, err := data.MNIST()
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := adapter.Case(4)
	spec.NumClasses = 10
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Init(base, 0); err != nil {
		t.Fatal(err)
	}
	cfg := train.DefaultConfig()
	cfg.Batch, cfg.Resume = 32, true
	return &Job{Backend: testutil.Backend(), Base: base, Adapter: a, Config: cfg, Dir: dir,
		Train: trainSet.Subset(n), Test: testSet.Subset(32),
		BaseInfo: adapter.BaseInfo{Arch: base.Net.Arch(), Weights: src.Spec, SHA256: src.SHA256}}
}

// TestJobIdentity: a job's checkpoint and result.json record the data it
// trained on, the base and lorafit's version; a job on other data is
// refused at both, naming the fields, and the same job resumes or is found
// finished.
func TestJobIdentity(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one step, then a checkpoint
	if _, err := job(t, dir, 128).Run(ctx); !errors.Is(err, train.ErrInterrupted) {
		t.Fatalf("cancelled job: %v", err)
	}
	id := job(t, dir, 128).Identity()
	for _, k := range []string{"data.train", "data.train.sha256", "data.test.sha256", "base.sha256", "lorafit.version", "adapter", "lr"} {
		if id[k] == "" {
			t.Errorf("the identity lacks %s: %v", k, id)
		}
	}
	other := job(t, dir, 96)
	_, err := other.Run(context.Background())
	var ie *train.IdentityError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "data.train.images: 128 → 96") ||
		!strings.Contains(err.Error(), filepath.Join(dir, CheckpointFile)) {
		t.Fatalf("resuming on other data: %v", err)
	}
	cr, err := job(t, dir, 128).Run(context.Background())
	if err != nil || cr.ResumedAtStep != 1 {
		t.Fatalf("resuming the same job: %v, %+v", err, cr)
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err == nil {
		t.Error("the checkpoint outlived the result")
	}
	if done, err := job(t, dir, 128).Finished(); err != nil || done == nil || done.Accuracy != cr.Accuracy {
		t.Errorf("Finished on the same job: %v, %+v", err, done)
	}
	if _, err := other.Finished(); !errors.As(err, &ie) || !strings.Contains(err.Error(), filepath.Join(dir, ResultFile)+" is from another run") {
		t.Errorf("Finished on other data: %v", err)
	}
	if done, err := job(t, t.TempDir(), 128).Finished(); done != nil || err != nil {
		t.Errorf("Finished in an empty directory: %+v, %v", done, err)
	}
}

func TestQuickCaveat(t *testing.T) {
	got := QuickCaveat(31, 2000, 10, true)
	for _, w := range []string{"31 steps on 2,000 images", "too few for the accuracies to rank the cases", "near chance, 0.10", "without --quick"} {
		if !strings.Contains(got, w) {
			t.Errorf("%q lacks %q", got, w)
		}
	}
	if strings.Contains(QuickCaveat(31, 2000, 10, false), "chance") {
		t.Error("a pretrained base's quick run is not said to be near chance")
	}
}

// TestFullModelBytes: the size of the whole adapted network as a file is
// what safetensors really writes for it (with a tensor of its own each).
func TestFullModelBytes(t *testing.T) {
	a := job(t, t.TempDir(), 64).Adapter
	got, err := FullModelBytes(a)
	if err != nil {
		t.Fatal(err)
	}
	sd := checkpoint.NewStateDict()
	for _, p := range backbone.ParamsOf(a.Modules()) {
		dtype := checkpoint.F32
		if p.Kind == backbone.BNCount {
			dtype = checkpoint.I64
		}
		sd.Set(p.Name, &checkpoint.Tensor{DType: dtype, Shape: p.Shape, Data: make([]byte, p.NumElements()*dtype.Size())})
	}
	path := filepath.Join(t.TempDir(), "full.safetensors")
	if err := safetensors.Save(path, sd, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != got {
		t.Errorf("FullModelBytes %d, the file %d", got, st.Size())
	}
}
