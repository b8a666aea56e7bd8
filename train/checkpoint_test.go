package train

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/preprocess"
)

// interrupted leaves a checkpoint of cfg's run at step n and returns its
// path.
func interrupted(t *testing.T, cfg Config, n int) string {
	t.Helper()
	cfg.Checkpoint = filepath.Join(t.TempDir(), "ckpt.safetensors")
	base, a := newNet(t)
	tr, err := New(goBackend(), base, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := tr.Fit(ctx, &cancelAfter{synth: newSynth(48, 1), n: n + 1, cancel: cancel}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	return cfg.Checkpoint
}

// TestResumeRefusesAnyDifference: every field of the run's identity — each
// recipe field, the adapter's spec, and what the caller adds (data, base,
// version) — is checked on resume, and the error names it, old → new.
func TestResumeRefusesAnyDifference(t *testing.T) {
	cfg := recipe
	cfg.Identity = map[string]string{"data.train": "synth (48)", "base.sha256": "abc", "lorafit.version": "v1"}
	ckpt := interrupted(t, cfg, 3)
	cfg.Checkpoint, cfg.Resume = ckpt, true
	for _, tc := range []struct {
		field, old, new string
		change          func(c *Config)
	}{
		{"epochs", "2", "3", func(c *Config) { c.Epochs = 3 }},
		{"batch", "8", "4", func(c *Config) { c.Batch = 4 }},
		{"lr", "0.003", "0.01", func(c *Config) { c.LR = 0.01 }},
		{"optimizer", "adamw", "adam", func(c *Config) { c.Optimizer = "adam" }},
		{"momentum", "0.9", "0.5", func(c *Config) { c.Momentum = 0.5 }},
		{"weight-decay", "0.01", "0", func(c *Config) { c.WeightDecay = 0 }},
		{"schedule", "cosine", "constant", func(c *Config) { c.Schedule = "constant" }},
		{"warmup", "0.1", "0.2", func(c *Config) { c.Warmup = 0.2 }},
		{"label-smoothing", "0.1", "0", func(c *Config) { c.LabelSmoothing = 0 }},
		{"seed", "5", "6", func(c *Config) { c.Seed = 6 }},
		{"augment", "false", "true", func(c *Config) { c.Augment = true }},
		{"limit-steps", "0", "4", func(c *Config) { c.LimitSteps = 4 }},
		{"preprocess", recipe.Preprocess.String(), preprocess.Native(32).String(), func(c *Config) { c.Preprocess = preprocess.Native(32) }},
		{"data.train", "synth (48)", "synth (40)", func(c *Config) {
			c.Identity = map[string]string{"data.train": "synth (40)", "base.sha256": "abc", "lorafit.version": "v1"}
		}},
		{"base.sha256", "abc", "abd", func(c *Config) {
			c.Identity = map[string]string{"data.train": "synth (48)", "base.sha256": "abd", "lorafit.version": "v1"}
		}},
		{"lorafit.version", "v1", "(none)", func(c *Config) { c.Identity = map[string]string{"data.train": "synth (48)", "base.sha256": "abc"} }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			c := cfg
			tc.change(&c)
			base, a := newNet(t)
			tr, err := New(goBackend(), base, a, c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tr.Fit(context.Background(), newSynth(48, 1))
			var ie *IdentityError
			if !errors.As(err, &ie) || len(ie.Differences) != 1 || ie.Differences[0].Field != tc.field {
				t.Fatalf("err = %v, want a refusal naming only %s", err, tc.field)
			}
			want := tc.field + ": " + tc.old + " → " + tc.new
			if !strings.Contains(err.Error(), ckpt) || !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s and %q", err, ckpt, want)
			}
		})
	}
	t.Run("adapter", func(t *testing.T) {
		base, a := newNet(t)
		spec := a.Spec
		spec.LoRA.LoraAlpha = 8 // same tensors, another scaling
		b, err := adapter.New(base.Net, spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Init(base, 1); err != nil {
			t.Fatal(err)
		}
		tr, err := New(goBackend(), base, b, cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tr.Fit(context.Background(), newSynth(48, 1))
		var ie *IdentityError
		if !errors.As(err, &ie) || len(ie.Differences) != 1 || ie.Differences[0].Field != "adapter" ||
			!strings.Contains(ie.Differences[0].Saved, `"lora_alpha":4`) || !strings.Contains(ie.Differences[0].Now, `"lora_alpha":8`) {
			t.Fatalf("err = %v, want a refusal naming the adapter's spec", err)
		}
	})
	t.Run("same run resumes", func(t *testing.T) {
		base, a := newNet(t)
		tr, err := New(goBackend(), base, a, cfg)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tr.Fit(context.Background(), newSynth(48, 1))
		if err != nil || !res.Resumed || res.ResumedAt != 3 {
			t.Fatalf("err %v, result %+v", err, res)
		}
	})
}

// TestResumeBetweenCurvePoints: a run interrupted between two points of
// the training curve records the same curve, and the same weights, as an
// uninterrupted one (the checkpoint carries the sums since the last point).
func TestResumeBetweenCurvePoints(t *testing.T) {
	cfg := recipe
	cfg.Epochs, cfg.Batch = 1, 1 // 48 steps per epoch: a point every 2
	want, wantRes, err := fit(t, cfg, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(wantRes.History) != 24 {
		t.Fatalf("%d curve points, want 24 (one every 2 steps)", len(wantRes.History))
	}
	cfg.Checkpoint = interrupted(t, cfg, 7) // step 7: one step past a point
	cfg.Resume = true
	base, a := newNet(t)
	tr, err := New(goBackend(), base, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Fit(context.Background(), newSynth(48, 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedAt != 7 || !slices.Equal(res.History, wantRes.History) {
		t.Errorf("resumed at %d; curve\n%v\nwant\n%v", res.ResumedAt, res.History, wantRes.History)
	}
	w1, w2 := weightsOf(t, want), weightsOf(t, tr.Adapter())
	for _, k := range w1.Names {
		if string(w1.Get(k).Data) != string(w2.Get(k).Data) {
			t.Fatalf("%s: resumed run differs from the uninterrupted one", k)
		}
	}
}

// TestResumeOldCheckpoint: a checkpoint without an identity (an older
// lorafit's) is refused rather than trusted.
func TestResumeOldCheckpoint(t *testing.T) {
	err := CheckIdentity("x.safetensors", nil, map[string]string{"seed": "1"})
	var ie *IdentityError
	if !errors.As(err, &ie) || !ie.Missing || !strings.Contains(err.Error(), "x.safetensors records no run identity") {
		t.Errorf("err = %v", err)
	}
}
