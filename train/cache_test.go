package train

import (
	"context"
	"testing"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/features"
	"github.com/lorafit/lorafit/internal/testutil"
)

// TestFeatureCache: training from a cache of the frozen prefix gives the
// adapter training from images gives (float tolerance), fp32 and bf16
// caches hold what they should, and evaluation from the cache equals
// evaluation from images.
func TestFeatureCache(t *testing.T) {
	base, a := newNet(t)
	prefix := classifier.FrozenPrefix(base.Net, a)
	if want := base.Net.StageOf("layer1.2"); prefix != want {
		t.Fatalf("frozen prefix of a LoRA on .*\\.2\\.conv3: %d stages, want %d", prefix, want)
	}
	train, test := newSynth(48, 1), newSynth(20, 2)
	caches, err := features.Build(context.Background(), goBackend(), base, train, recipe.Preprocess, []int{prefix, base.Net.StageOf("fc")}, features.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c := caches[1]; len(c.Dims) != 1 || c.Dims[0] != base.Net.FeatureDim() || c.N != 48 {
		t.Fatalf("pooled cache: %d images of %v", c.N, c.Dims)
	}
	_, want, err := fitFrom(t, recipe)
	if err != nil {
		t.Fatal(err)
	}
	cfg := recipe
	cfg.Features = caches[0]
	_, got, err := fitFrom(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w1, w2 := weightsOf(t, want), weightsOf(t, got)
	for _, k := range w1.Names {
		a, _ := w1.Get(k).Float32s()
		b, _ := w2.Get(k).Float32s()
		testutil.AssertClose(t, "cached vs uncached: "+k, b, a, 1e-4)
	}
	// Evaluation from cached test features.
	testCaches, err := features.Build(context.Background(), goBackend(), base, test, recipe.Preprocess, []int{prefix}, features.Options{BF16: true})
	if err != nil {
		t.Fatal(err)
	}
	full, err := Evaluate(context.Background(), classifier.NewPredictor(goBackend(), base, got), test, recipe.Preprocess, 8)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := Evaluate(context.Background(), classifier.NewStages(goBackend(), base, got, prefix, len(base.Net.Stages())),
		features.Cached{Cache: testCaches[0], Data: test}, recipe.Preprocess, 8)
	if err != nil {
		t.Fatal(err)
	}
	if d := cached.MeanLoss - full.MeanLoss; d > 1e-2*full.MeanLoss || d < -1e-2*full.MeanLoss {
		t.Errorf("evaluation from a bf16 cache: mean loss %g, from images %g", cached.MeanLoss, full.MeanLoss)
	}
	// Prefixes compiled once serve a second data set (and its short last
	// batch, padded) as a Build of its own does.
	prefixes, err := features.NewPrefixes(goBackend(), base, train, recipe.Preprocess, []int{prefix}, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prefixes.Build(context.Background(), train, features.Options{}); err != nil {
		t.Fatal(err)
	}
	reused, err := prefixes.Build(context.Background(), test, features.Options{})
	if err != nil {
		t.Fatal(err)
	}
	own, err := features.Build(context.Background(), goBackend(), base, test, recipe.Preprocess, []int{prefix}, features.Options{Batch: 20})
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, test.Len())
	for i := range idx {
		idx[i] = i
	}
	r, o := make([]float32, test.Len()*reused[0].Size()), make([]float32, test.Len()*own[0].Size())
	reused[0].Fill(idx, 0, r)
	own[0].Fill(idx, 0, o)
	testutil.AssertClose(t, "reused prefixes vs a Build of its own", r, o, 1e-5)
	// A cache past what the adapter trains is refused.
	cfg.Features = caches[1]
	if _, err := New(goBackend(), base, a, cfg); err == nil {
		t.Error("a cache of the pooled features accepted for an adapter that trains layer1.2")
	}
	// Over budget: a clear error, nothing built.
	if _, err := features.Build(context.Background(), goBackend(), base, train, recipe.Preprocess, []int{prefix}, features.Options{Budget: 1000}); err == nil {
		t.Error("a 1000-byte budget accepted")
	}
}

// fitFrom trains newNet's adapter with cfg.
func fitFrom(t *testing.T, cfg Config) (*Trainer, *adapter.Adapter, error) {
	t.Helper()
	base, a := newNet(t)
	tr, err := New(goBackend(), base, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Fit(context.Background(), newSynth(48, 1))
	return tr, tr.Adapter(), err
}
