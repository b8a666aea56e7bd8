package classifier

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/nn"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
)

// loadBase loads a PyTorch-saved fixture as a base, bound to its file's
// sha256 as weights.Open would.
func loadBase(t *testing.T, path string) *backbone.Base {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	sd, err := pth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	base, err := resnet.FromStateDict(sd, "", path, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// narrowCase2 is case 2 sized for the width-4 fixture, with A and B both
// random so the adapter visibly changes the output.
func narrowCase2() adapter.Spec {
	c := lora.Default()
	c.TargetModules = lora.Targets{Regex: `.*\.2\.conv3`}
	c.R, c.LoraAlpha, c.ModulesToSave, c.InitLoraWeights = 4, 8, []string{"fc", "head"}, lora.InitRandom
	return adapter.Spec{LoRA: c, Head: adapter.Head{16, 8}, NumClasses: 10}
}

func newAdapter(t *testing.T, base *backbone.Base, spec adapter.Spec, seed uint64) *adapter.Adapter {
	t.Helper()
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		t.Fatal(err)
	}
	a.Info.Preprocess = preprocess.Native(28)
	if err := a.Init(base, seed); err != nil {
		t.Fatal(err)
	}
	return a
}

func logits(t *testing.T, base *backbone.Base, a *adapter.Adapter, x *tensors.Tensor) []float32 {
	t.Helper()
	out, err := NewPredictor(testutil.Backend(), base, a).Logits(x)
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out)
}

func input(seed uint64) *tensors.Tensor {
	rng := rand.New(rand.NewPCG(seed, 0))
	v := make([]float32, 2*3*28*28)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, 2, 3, 28, 28)
}

// TestAdapterRoundTrip: save → read → bind reproduces every tensor bit for
// bit and the same logits; the base binding refuses other weights.
func TestAdapterRoundTrip(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	a := newAdapter(t, base, narrowCase2(), 7)
	a.Info.Base = adapter.BaseInfo{Arch: "resnet50", Weights: testutil.ResNet50W4, SHA256: "abc123"}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir, checkpoint.F32); err != nil {
		t.Fatal(err)
	}
	f, err := adapter.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.CheckBase("abc123", false); err != nil {
		t.Fatalf("same base refused: %v", err)
	}
	if _, err := f.CheckBase("def456", false); err == nil || !strings.Contains(err.Error(), "--allow-base-mismatch") {
		t.Fatalf("other base: got %v, want a refusal naming --allow-base-mismatch", err)
	}
	if w, err := f.CheckBase("def456", true); err != nil || w == "" {
		t.Fatalf("allowed mismatch: warning %q, err %v", w, err)
	}
	b, err := f.Bind(base.Net)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := a.StateDict()
	got, _ := b.StateDict()
	if len(want.Names) == 0 || strings.Join(got.Names, ",") != strings.Join(want.Names, ",") {
		t.Fatalf("entries differ: %v vs %v", got.Names, want.Names)
	}
	for _, k := range want.Names {
		if string(got.Get(k).Data) != string(want.Get(k).Data) {
			t.Fatalf("%s: not bit-exact after save → load", k)
		}
	}
	x := input(1)
	if d := testutil.MaxRelDiff(logits(t, base, b, x), logits(t, base, a, x)); d != 0 {
		t.Errorf("logits differ after round trip by %g", d)
	}
	// PEFT's key names are in the file.
	raw, _ := os.ReadFile(filepath.Join(dir, adapter.WeightsFile))
	for _, k := range []string{"base_model.model.layer4.2.conv3.lora_A.weight", "base_model.model.fc.weight", "base_model.model.head.4.bias"} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("%s lacks key %s", adapter.WeightsFile, k)
		}
	}
}

// TestMerge: the merged plain model computes what base + adapter computes,
// and unmerging gives the base weights back.
func TestMerge(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	a := newAdapter(t, base, narrowCase2(), 3)
	merged, err := Merge(base, a)
	if err != nil {
		t.Fatal(err)
	}
	rest, head, err := SplitMerged(merged)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := resnet.FromStateDict(rest, "", "merged", "")
	if err != nil {
		t.Fatal(err)
	}
	h, err := HeadAdapter(plain.Net, head)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Targets) != 0 || len(h.Head) != 3 {
		t.Fatalf("merged model: %d LoRA targets, %d head layers", len(h.Targets), len(h.Head))
	}
	x := input(2)
	unmerged := logits(t, base, a, x)
	if d := testutil.MaxRelDiff(logits(t, plain, h, x), unmerged); d > 1e-5 {
		t.Errorf("merged logits differ by %.2g relative (limit 1e-5)", d)
	}
	noLoRA := narrowCase2()
	noLoRA.LoRA.TargetModules = lora.Targets{}
	if d := testutil.MaxRelDiff(logits(t, base, newAdapter(t, base, noLoRA, 3), x), unmerged); d < 1e-3 {
		t.Fatalf("the LoRA barely changes the output (%g): the test would prove nothing", d)
	}
	if err := Unmerge(merged, a); err != nil {
		t.Fatal(err)
	}
	orig := base.StateDict()
	for _, tg := range a.Targets {
		k := tg.Module.Name + ".weight"
		back, _ := merged.Get(k).Float32s()
		want, _ := orig.Get(k).Float32s()
		if d := testutil.MaxRelDiff(back, want); d > 1e-6 {
			t.Errorf("%s: unmerge is off by %g", k, d)
		}
	}
}

// TestMergeGrouped: LoRA on a ResNeXt's grouped 3×3 conv (PEFT refuses to
// merge it) merges into an ordinary conv whose model computes the same
// logits, and the merged file's architecture is recognized.
func TestMergeGrouped(t *testing.T) {
	base := loadBase(t, testutil.Path("resnet/testdata/resnext_w8.pth"))
	c := lora.Default()
	c.TargetModules, c.R, c.LoraAlpha, c.InitLoraWeights = lora.Targets{List: []string{"layer1.0.conv2", "layer2.1.conv2"}}, 4, 8, lora.InitRandom
	a := newAdapter(t, base, adapter.Spec{LoRA: c}, 5)
	if g := a.Targets[0].Module.Groups; g != 2 {
		t.Fatalf("layer1.0.conv2 has %d groups, the fixture 2", g)
	}
	merged, err := Merge(base, a)
	if err != nil {
		t.Fatal(err)
	}
	if s := merged.Get("layer1.0.conv2.weight").Shape; s[1] != 8 {
		t.Fatalf("merged grouped conv has shape %v, want an ordinary conv [8 8 3 3]", s)
	}
	plain, err := resnet.FromStateDict(merged, "", "merged", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := plain.Net.(*resnet.Net).Config; cfg.Groups != 2 || len(cfg.Dense) != 2 {
		t.Errorf("merged file read as %+v", cfg)
	}
	x := input(4)
	want := logits(t, base, a, x)
	if d := testutil.MaxRelDiff(logits(t, plain, nil, x), want); d > 1e-5 {
		t.Errorf("merged grouped logits differ by %.2g relative (limit 1e-5)", d)
	}
	if d := testutil.MaxRelDiff(logits(t, base, nil, x), want); d < 1e-3 {
		t.Fatalf("the LoRA barely changes the output (%g)", d)
	}
}

func TestAdapterErrors(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	a := newAdapter(t, base, narrowCase2(), 1)
	tmp := t.TempDir()
	// Saving under a path whose parent is a file fails and leaves nothing.
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(filepath.Join(file, "adapter"), checkpoint.F32); err == nil {
		t.Fatal("saving under a file: no error")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Fatalf("a failed save left %d entries", len(entries))
	}
	dir := filepath.Join(tmp, "adapter")
	if err := a.Save(dir, checkpoint.F16); err != nil {
		t.Fatal(err)
	}
	f, err := adapter.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The same file on a spec with another rank: shapes do not fit.
	other := *f
	other.Spec.LoRA.R = 2
	if _, err := other.Bind(base.Net); err == nil || !strings.Contains(err.Error(), "expected shape [2 16 1 1], found [4 16 1 1]") {
		t.Fatalf("rank mismatch: got %v", err)
	}
	// fp16 adapters load, within fp16 precision.
	b, err := f.Bind(base.Net)
	if err != nil {
		t.Fatal(err)
	}
	x := input(5)
	if d := testutil.MaxRelDiff(logits(t, base, b, x), logits(t, base, a, x)); d > 1e-2 || d == 0 {
		t.Errorf("fp16 adapter: logits differ by %g (want small but nonzero)", d)
	}
	if err := os.Remove(filepath.Join(dir, adapter.ConfigFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := adapter.ReadDir(dir); err == nil || !strings.Contains(err.Error(), adapter.ConfigFile) {
		t.Fatalf("missing config: got %v", err)
	}
}

// TestFoldedBatchNorm: folding frozen batch norms into their convs (what
// every pass does) computes what conv then batch norm computes, LoRA deltas
// on folded convs included, within float rounding.
func TestFoldedBatchNorm(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	a := newAdapter(t, base, narrowCase2(), 6)
	x := input(3)
	for _, ad := range []*adapter.Adapter{nil, a} {
		frozen, own := UnfoldedFeed(base, ad), AdapterFeed(ad, nil)
		exec, err := NewExec(testutil.Backend(), func(inputs []*Node) *Node {
			w := nn.Weights{}
			frozen.Bind(inputs[1:1+len(frozen.Keys)], w)
			own.Bind(inputs[1+len(frozen.Keys):], w)
			return (&Forward{Net: base.Net, Adapter: ad, Weights: w}).Logits(inputs[0], 0)
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Call(append(append([]any{x}, frozen.Args()...), own.Args()...)...)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(BaseFeed(base, ad).Keys); n >= len(frozen.Keys) {
			t.Fatalf("the folded feed has %d tensors, the unfolded %d: nothing was folded", n, len(frozen.Keys))
		}
		testutil.AssertClose(t, "folded vs unfolded logits", logits(t, base, ad, x), tensors.MustCopyFlatData[float32](out[0]), 1e-5)
	}
}

// TestPredictorParts: a batch run as parts at once (padded to one compiled
// size) gives the logits of running it whole.
func TestPredictorParts(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	a := newAdapter(t, base, narrowCase2(), 2)
	rng := rand.New(rand.NewPCG(9, 9))
	v := make([]float32, 5*3*28*28)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	x := tensors.FromFlatDataAndDimensions(v, 5, 3, 28, 28)
	whole := NewPredictor(testutil.Backend(), base, a)
	whole.shards = 1
	parts := NewPredictor(testutil.Backend(), base, a)
	parts.shards = 2 // parts of 3: the second is padded
	testutil.AssertClose(t, "parts vs whole", logits2(t, parts, x), logits2(t, whole, x), 1e-6)
}

// TestPredictorShortBatch: a batch shorter than one already run (a test
// set's remainder) is padded to the compiled size, not compiled anew, and
// gives the logits a predictor compiled for its own size gives (up to
// rounding: the backend picks its matmul kernel by size).
func TestPredictorShortBatch(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	a := newAdapter(t, base, narrowCase2(), 2)
	rng := rand.New(rand.NewPCG(7, 7))
	images := func(n int) *tensors.Tensor {
		v := make([]float32, n*3*28*28)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return tensors.FromFlatDataAndDimensions(v, n, 3, 28, 28)
	}
	for _, shards := range []int{1, 2} {
		p := NewPredictor(testutil.Backend(), base, a)
		p.shards = shards
		logits2(t, p, images(8))
		short := images(3)
		got := logits2(t, p, short)
		if want := []int{8 / shards}; !slices.Equal(p.sizes, want) {
			t.Errorf("%d shard(s): compiled part sizes %v, want %v", shards, p.sizes, want)
		}
		own := NewPredictor(testutil.Backend(), base, a)
		own.shards = shards
		want := logits2(t, own, short)
		testutil.AssertClose(t, fmt.Sprintf("%d shard(s): padded short batch", shards), got, want, 1e-5)
	}
}

func logits2(t *testing.T, p *Predictor, x *tensors.Tensor) []float32 {
	t.Helper()
	out, err := p.Logits(x)
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out)
}

// TestOutputs: one pass that yields several stages' outputs (run as parts
// at once, the second padded) gives what predictors of each stage range,
// chained, give; and bad stage lists and short inputs are refused.
func TestOutputs(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	net := base.Net
	ends := []int{net.StageOf("layer1.2"), net.StageOf("layer3.0"), net.StageOf("fc"), len(net.Stages())}
	rng := rand.New(rand.NewPCG(5, 5))
	v := make([]float32, 5*3*28*28)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	dims := []int{5, 3, 28, 28}
	p := NewOutputs(testutil.Backend(), base, nil, 0, ends)
	p.shards = 2
	got := make([][]float32, len(ends))
	var mu sync.Mutex
	err := p.Parts(v, dims, func(lo, hi int, ys []*tensors.Tensor) error {
		if len(ys) != len(ends) {
			return fmt.Errorf("%d outputs, want %d", len(ys), len(ends))
		}
		mu.Lock()
		defer mu.Unlock()
		for i, y := range ys {
			d := y.Shape().Dimensions
			per := y.Shape().Size() / d[0]
			if d[0] != 3 {
				return fmt.Errorf("output %d of part [%d,%d): %v, want parts of 3", i, lo, hi, d)
			}
			if got[i] == nil {
				got[i] = make([]float32, 5*per)
			}
			copy(got[i][lo*per:hi*per], tensors.MustCopyFlatData[float32](y)[:(hi-lo)*per])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	x := tensors.FromFlatDataAndDimensions(v, dims...)
	from := 0
	for i, e := range ends {
		stage := NewStages(testutil.Backend(), base, nil, from, e)
		stage.shards = 1
		y, err := stage.Logits(x)
		if err != nil {
			t.Fatal(err)
		}
		// Parts of 3 images against one of 5: the backend picks its matmul
		// kernels by row count, and layer3's dense products on 2×2 maps have
		// one row an image, so sums run in other orders (as the padded
		// short batch above).
		testutil.AssertClose(t, fmt.Sprintf("stages [0,%d) in one pass vs chained", e), got[i], tensors.MustCopyFlatData[float32](y), 1e-5)
		x, from = y, e
	}
	if err := p.Parts(v[:len(v)-1], dims, func(int, int, []*tensors.Tensor) error { return nil }); err == nil {
		t.Error("Parts ran images one value short")
	}
	for _, bad := range [][]int{{}, {0}, {3, 3}, {4, 2}, {len(net.Stages()) + 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewOutputs(%v) did not refuse", bad)
				}
			}()
			NewOutputs(testutil.Backend(), base, nil, 0, bad)
		}()
	}
}
