package serve

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
	"github.com/lorafit/lorafit/weights"
)

func loadFixtureBase(t testing.TB) *backbone.Base {
	t.Helper()
	base, _, _, err := weights.Load(context.Background(), testutil.ResNet50W4, weights.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func loadAdapter(t testing.TB, base *backbone.Base, dir string) *adapter.Adapter {
	t.Helper()
	a, _, err := adapter.Load(dir, base, false)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newAdapter makes an adapter of spec with random LoRA weights (B ≠ 0, so
// the deltas are felt), on the fixture base.
func newAdapter(t testing.TB, base *backbone.Base, spec adapter.Spec, seed uint64) *adapter.Adapter {
	t.Helper()
	spec.LoRA.InitLoraWeights = lora.InitRandom
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Init(base, seed); err != nil {
		t.Fatal(err)
	}
	return a
}

func loraSpec(targets []string, r int, alpha float64, save ...string) adapter.Spec {
	c := lora.Default()
	c.TargetModules, c.R, c.LoraAlpha, c.ModulesToSave = lora.Targets{List: targets}, r, alpha, save
	return adapter.Spec{LoRA: c}
}

func randomImage(rng *rand.Rand, side int) []float32 {
	x := make([]float32, 3*side*side)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// reference is what classifier.Predictor gives for one model alone.
func reference(t testing.TB, base *backbone.Base, m *Model, x []float32) []float32 {
	t.Helper()
	p := classifier.NewPredictor(testutil.Backend(), base, m.Adapter)
	s := m.Pre.Crop
	out, err := p.Logits(tensors.FromFlatDataAndDimensions(x, 1, 3, s, s))
	if err != nil {
		t.Fatal(err)
	}
	defer out.FinalizeAll()
	return tensors.MustCopyFlatData[float32](out)
}

// TestMixedBatchExact: one batch mixing the base, adapters with different
// LoRA targets, ranks (padded slots), rsLoRA, a LoRA on fc, a saved and a
// replaced fc, heads of different widths, two input sizes, and an adapter
// that saves a batch norm inside the network (run on its own) gives every
// sample what classifier.Predictor gives for its adapter alone.
func TestMixedBatchExact(t *testing.T) {
	base := loadFixtureBase(t)
	e := NewEngine(testutil.Backend(), base, EngineOptions{MaxBatch: 16})
	defer e.Close()
	native := preprocess.Native(28)

	case2 := loadAdapter(t, base, testutil.Path("lora/testdata/case2_like"))
	case4 := loadAdapter(t, base, testutil.Path("lora/testdata/case4_like"))
	strided := loadAdapter(t, base, testutil.Path("lora/testdata/strided_rslora"))
	// Rank 3 on a module case2 adapts with rank 4: slots padded to 4.
	odd := newAdapter(t, base, loraSpec([]string{"layer1.2.conv3", "layer3.0.conv2"}, 3, 5), 1)
	soloSpec := loraSpec([]string{"layer1.0.conv1"}, 2, 4, "layer4.2.bn3")
	solo := newAdapter(t, base, soloSpec, 2)
	bn := solo.Tensor("layer4.2.bn3.weight")
	v := tensors.MustCopyFlatData[float32](bn)
	for i := range v {
		v[i] *= 1.5
	}
	if err := solo.SetTensor("layer4.2.bn3.weight", tensors.FromFlatDataAndDimensions(v, bn.Shape().Dimensions...)); err != nil {
		t.Fatal(err)
	}

	// Heads narrower than fc: fc is multiplied into their first layer,
	// with its LoRA in the second adapter.
	narrow := loraSpec([]string{"layer2.0.conv1"}, 2, 4, "fc", "head")
	narrow.Head, narrow.NumClasses = adapter.Head{4}, 3
	narrowHead := newAdapter(t, base, narrow, 3)
	fcLoRA := loraSpec([]string{"fc", "layer1.1.conv2"}, 2, 3, "head")
	fcLoRA.Head, fcLoRA.NumClasses = adapter.Head{2}, 5
	fcLoRAHead := newAdapter(t, base, fcLoRA, 4)

	models := map[string]*Model{}
	for _, c := range []struct {
		name string
		a    *adapter.Adapter
		pre  preprocess.Preprocess
	}{
		{"base", nil, native},
		{"case2", case2, native},
		{"case2-32px", case2, preprocess.Native(32)},
		{"case4", case4, native},
		{"strided", strided, native},
		{"odd", odd, native},
		{"solo", solo, native},
		{"narrow", narrowHead, native},
		{"fc-lora", fcLoRAHead, native},
	} {
		m, err := e.Prepare(c.name, c.a, c.pre, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		models[c.name] = m
	}
	if models["solo"].Shared || !models["case2"].Shared || !models["strided"].Shared {
		t.Fatalf("shared: solo %v case2 %v strided %v", models["solo"].Shared, models["case2"].Shared, models["strided"].Shared)
	}
	if !models["narrow"].collapsed || !models["fc-lora"].collapsed || models["case2"].collapsed {
		t.Fatalf("collapsed: narrow %v fc-lora %v case2 %v", models["narrow"].collapsed, models["fc-lora"].collapsed, models["case2"].collapsed)
	}

	rng := rand.New(rand.NewPCG(7, 7))
	order := []string{"case2", "base", "strided", "narrow", "case2", "odd", "case4", "solo", "case2-32px", "fc-lora", "strided", "odd", "solo", "case2-32px", "base", "narrow"}
	items := make([]Item, len(order))
	for i, name := range order {
		m := models[name]
		items[i] = Item{Model: m, X: randomImage(rng, m.Pre.Crop)}
	}
	got, st, err := e.Run(items)
	if err != nil {
		t.Fatal(err)
	}
	// 12 images of 28 px run as one part per core, 2 of 32 px as one.
	trunks := min(e.shards, 12/minPart) + 1
	if st.Trunks != trunks || st.Solo != 1 || st.Adapters != 9 || st.Padded < len(items) {
		t.Errorf("stats %+v: want %d shared passes (28 px in parts, 32 px), 1 solo sub-batch, 9 models", st, trunks)
	}
	for i, it := range items {
		want := reference(t, base, it.Model, it.X)
		testutil.AssertClose(t, fmt.Sprintf("item %d (%s)", i, order[i]), got[i], want, 1e-5)
	}
	// The same adapter twice in one batch and in different batches agrees.
	again, _, err := e.Run(items[:5])
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		testutil.AssertClose(t, fmt.Sprintf("rerun item %d", i), again[i], got[i], 1e-6)
	}
}

// TestMixedBatchGroupedConv: on a ResNeXt-style base, a LoRA on a grouped
// 3×3 conv (whose lora_B is grouped) mixed with another adapter is exact.
func TestMixedBatchGroupedConv(t *testing.T) {
	cfg, err := resnet.ConfigFor("resnext50_32x4d")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Width, cfg.Groups, cfg.WidthPerGroup, cfg.NumClasses = 4, 2, 64, 10
	base, err := resnet.FromStateDict(resnet.RandomStateDict(cfg, 3), "", "random grouped", "sha-grouped")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(testutil.Backend(), base, EngineOptions{MaxBatch: 8})
	defer e.Close()
	g1 := newAdapter(t, base, loraSpec([]string{"layer1.0.conv2", "layer2.1.conv2"}, 4, 8), 4)
	g2 := newAdapter(t, base, loraSpec([]string{"layer1.0.conv2"}, 2, 2), 5)
	var models []*Model
	for i, a := range []*adapter.Adapter{g1, g2} {
		m, err := e.Prepare(fmt.Sprint("g", i), a, preprocess.Native(28), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		models = append(models, m)
	}
	rng := rand.New(rand.NewPCG(8, 8))
	if models[0].merged != nil {
		t.Error("a LoRA on a grouped conv was merged")
	}
	items := []Item{{models[0], randomImage(rng, 28)}, {models[1], randomImage(rng, 28)}, {models[0], randomImage(rng, 28)}}
	got, _, err := e.Run(items)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		testutil.AssertClose(t, fmt.Sprintf("item %d", i), got[i], reference(t, base, it.Model, it.X), 1e-5)
	}
}

func TestSplitParts(t *testing.T) {
	idx := func(n int) []int {
		v := make([]int, n)
		for i := range v {
			v[i] = i
		}
		return v
	}
	for _, c := range []struct {
		n, shards int
		want      []int // part sizes
	}{
		{1, 2, []int{1}},
		{7, 2, []int{7}},
		{8, 2, []int{4, 4}},
		{9, 2, []int{4, 5}},
		{64, 2, []int{32, 32}},
		{64, 1, []int{64}},
		{13, 4, []int{4, 4, 5}},
	} {
		parts := splitParts(idx(c.n), c.shards)
		var sizes, all []int
		for _, p := range parts {
			sizes = append(sizes, len(p))
			all = append(all, p...)
		}
		if !slices.Equal(sizes, c.want) || !slices.Equal(all, idx(c.n)) {
			t.Errorf("splitParts(%d, %d) = %v, want sizes %v covering every index in order", c.n, c.shards, parts, c.want)
		}
	}
}

func TestBucket(t *testing.T) {
	e := &Engine{buckets: []int{4, 8, 12, 16}}
	for _, c := range [][2]int{{1, 4}, {4, 4}, {5, 8}, {13, 16}, {17, 32}} {
		if got := e.Bucket(c[0]); got != c[1] {
			t.Errorf("Bucket(%d) = %d, want %d", c[0], got, c[1])
		}
	}
}

// TestSingleAdapterMerged: a batch of one adapter alone runs the plain
// trunk on its merged weights, with the same logits as Predictor; a
// grouped conv's LoRA cannot be merged and takes the mixed path.
func TestSingleAdapterMerged(t *testing.T) {
	base := loadFixtureBase(t)
	e := NewEngine(testutil.Backend(), base, EngineOptions{MaxBatch: 8})
	defer e.Close()
	rng := rand.New(rand.NewPCG(9, 9))
	for _, c := range []struct {
		name string
		a    *adapter.Adapter
	}{
		{"case2", loadAdapter(t, base, testutil.Path("lora/testdata/case2_like"))},
		{"strided", loadAdapter(t, base, testutil.Path("lora/testdata/strided_rslora"))},
		{"3x3", newAdapter(t, base, loraSpec([]string{"layer1.0.conv2", "layer3.0.conv2", "conv1"}, 3, 5), 3)},
	} {
		m, err := e.Prepare(c.name, c.a, preprocess.Native(28), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if m.merged == nil {
			t.Fatalf("%s: not mergeable", c.name)
		}
		items := []Item{{m, randomImage(rng, 28)}, {m, randomImage(rng, 28)}, {m, randomImage(rng, 28)}}
		got, st, err := e.Run(items)
		if err != nil {
			t.Fatal(err)
		}
		if st.Merged != 1 {
			t.Errorf("%s: stats %+v, want the merged path", c.name, st)
		}
		for i, it := range items {
			testutil.AssertClose(t, fmt.Sprintf("%s item %d", c.name, i), got[i], reference(t, base, m, it.X), 1e-5)
		}
	}
}

// TestWarm: Warm compiles the plain trunk for every batch size, and a batch
// then compiles nothing new.
func TestWarm(t *testing.T) {
	base := loadFixtureBase(t)
	e := NewEngine(testutil.Backend(), base, EngineOptions{MaxBatch: 16})
	defer e.Close()
	if err := e.Warm(context.Background(), 28); err != nil {
		t.Fatal(err)
	}
	n := e.Compiles()
	if n != int64(len(e.buckets)) {
		t.Errorf("compiled %d graphs for %d buckets", n, len(e.buckets))
	}
	m, err := e.Prepare("base", nil, preprocess.Native(28), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	if _, _, err := e.Run([]Item{{m, randomImage(rng, 28)}, {m, randomImage(rng, 28)}}); err != nil {
		t.Fatal(err)
	}
	if e.Compiles() != n {
		t.Errorf("a batch after Warm compiled %d more graphs", e.Compiles()-n)
	}
}
