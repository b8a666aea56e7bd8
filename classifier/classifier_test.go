package classifier

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gomlx/compute"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
	"github.com/lorafit/lorafit/lora"
)

const baseFixture = "../resnet/testdata/resnet50_w4.pth"

func loadBase(t *testing.T) *checkpoint.StateDict {
	t.Helper()
	sd, err := pth.Load(baseFixture)
	if err != nil {
		t.Fatal(err)
	}
	return sd
}

// narrowCase2 is case 2 sized for the width-4 fixture, with A and B both
// random so the adapter visibly changes the output.
func narrowCase2() Spec {
	c := lora.Default()
	c.TargetModules = lora.Targets{Regex: `.*\.2\.conv3`}
	c.R, c.LoraAlpha, c.ModulesToSave, c.InitLoraWeights = 4, 8, []string{"fc", "head"}, lora.InitRandom
	return Spec{LoRA: c, Head: Head{16, 8}, NumClasses: 10}
}

func build(t *testing.T, sd *checkpoint.StateDict, spec Spec) *Model {
	t.Helper()
	base, err := BaseFromStateDict(sd, "", "fixture")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(base, spec)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func logits(t *testing.T, m *Model, x *tensors.Tensor) []float32 {
	t.Helper()
	exec := model.MustNewExec(goBackend(), m.Base.Store, func(_ *model.Scope, x *Node) *Node { return m.Logits(x) })
	return tensors.MustCopyFlatData[float32](exec.MustCall1(x))
}

// goBackend is one backend for the whole test binary: a tensor used on
// one backend cannot be passed to another.
var goBackend = sync.OnceValue(func() compute.Backend {
	b, err := backend.New("go")
	if err != nil {
		panic(err)
	}
	return b
})

func input(seed uint64) *tensors.Tensor {
	rng := rand.New(rand.NewPCG(seed, 0))
	v := make([]float32, 2*3*28*28)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, 2, 3, 28, 28)
}

func maxRelDiff(a, b []float32) float64 {
	if len(a) != len(b) || len(b) == 0 {
		return math.Inf(1)
	}
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	return d / s
}

// TestAdapterRoundTrip: save → read → apply reproduces every tensor bit for
// bit and the same logits; the base binding refuses other weights.
func TestAdapterRoundTrip(t *testing.T) {
	sd := loadBase(t)
	m := build(t, sd, narrowCase2())
	if err := m.Init(7); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	info := Info{Base: BaseInfo{Arch: "resnet50", Weights: baseFixture, SHA256: "abc123"}}
	if err := m.SaveAdapter(dir, info, checkpoint.F32); err != nil {
		t.Fatal(err)
	}
	a, err := ReadAdapter(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CheckBase("abc123", false); err != nil {
		t.Fatalf("same base refused: %v", err)
	}
	if _, err := a.CheckBase("def456", false); err == nil || !strings.Contains(err.Error(), "--allow-base-mismatch") {
		t.Fatalf("other base: got %v, want a refusal naming --allow-base-mismatch", err)
	}
	if w, err := a.CheckBase("def456", true); err != nil || w == "" {
		t.Fatalf("allowed mismatch: warning %q, err %v", w, err)
	}
	m2 := build(t, sd, a.Spec)
	if err := a.Apply(m2); err != nil {
		t.Fatal(err)
	}
	want, _ := m.StateDict(m.AdapterEntries())
	got, _ := m2.StateDict(m2.AdapterEntries())
	if len(want.Names) == 0 || strings.Join(got.Names, ",") != strings.Join(want.Names, ",") {
		t.Fatalf("entries differ: %v vs %v", got.Names, want.Names)
	}
	for _, k := range want.Names {
		if string(got.Get(k).Data) != string(want.Get(k).Data) {
			t.Fatalf("%s: not bit-exact after save → load", k)
		}
	}
	x := input(1)
	if d := maxRelDiff(logits(t, m2, x), logits(t, m, x)); d != 0 {
		t.Errorf("logits differ after round trip by %g", d)
	}
	// PEFT's key names are in the file.
	raw, _ := os.ReadFile(filepath.Join(dir, WeightsFile))
	for _, k := range []string{"base_model.model.layer4.2.conv3.lora_A.weight", "base_model.model.fc.weight", "base_model.model.head.4.bias"} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("%s lacks key %s", WeightsFile, k)
		}
	}
}

// TestMerge: the merged plain model computes what base + adapter computes,
// and unmerging gives the base weights back.
func TestMerge(t *testing.T) {
	sd := loadBase(t)
	m := build(t, sd, narrowCase2())
	if err := m.Init(3); err != nil {
		t.Fatal(err)
	}
	merged, err := m.MergedStateDict()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := FromStateDict(merged, "", "merged")
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Targets) != 0 || len(plain.Head) != 3 {
		t.Fatalf("merged model: %d LoRA targets, %d head layers", len(plain.Targets), len(plain.Head))
	}
	x := input(2)
	unmerged := logits(t, m, x)
	if d := maxRelDiff(logits(t, plain, x), unmerged); d > 1e-5 {
		t.Errorf("merged logits differ by %.2g relative (limit 1e-5)", d)
	}
	noLoRA := build(t, sd, Spec{LoRA: lora.Default()})
	if d := maxRelDiff(logits(t, noLoRA, x)[:10], unmerged[:10]); d < 1e-3 {
		t.Fatalf("the adapter barely changes the output (%g): the test would prove nothing", d)
	}
	if err := m.Unmerge(merged); err != nil {
		t.Fatal(err)
	}
	for _, tg := range m.Targets {
		k := tg.Module.Name + ".weight"
		back, _ := merged.Get(k).Float32s()
		orig, _ := sd.Get(k).Float32s()
		if d := maxRelDiff(back, orig); d > 1e-6 {
			t.Errorf("%s: unmerge is off by %g", k, d)
		}
	}
}

func TestAdapterErrors(t *testing.T) {
	sd := loadBase(t)
	m := build(t, sd, narrowCase2())
	if err := m.Init(1); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	// Saving under a path whose parent is a file fails and leaves nothing.
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveAdapter(filepath.Join(file, "adapter"), Info{}, checkpoint.F32); err == nil {
		t.Fatal("saving under a file: no error")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Fatalf("a failed save left %d entries", len(entries))
	}
	dir := filepath.Join(tmp, "adapter")
	if err := m.SaveAdapter(dir, Info{}, checkpoint.F16); err != nil {
		t.Fatal(err)
	}
	a, err := ReadAdapter(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The same adapter on a spec with another rank: shapes do not fit.
	other := narrowCase2()
	other.LoRA.R = 2
	err = a.Apply(build(t, sd, other))
	if err == nil || !strings.Contains(err.Error(), "expected shape [2 16 1 1], found [4 16 1 1]") {
		t.Fatalf("rank mismatch: got %v", err)
	}
	// fp16 adapters load, within fp16 precision.
	m2 := build(t, sd, a.Spec)
	if err := a.Apply(m2); err != nil {
		t.Fatal(err)
	}
	x := input(5)
	if d := maxRelDiff(logits(t, m2, x), logits(t, m, x)); d > 1e-2 || d == 0 {
		t.Errorf("fp16 adapter: logits differ by %g (want small but nonzero)", d)
	}
	if err := os.Remove(filepath.Join(dir, ConfigFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAdapter(dir); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Fatalf("missing config: got %v", err)
	}
}
