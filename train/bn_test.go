package train

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/nn"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
)

// bnFixture is what testdata/make_bn_fixture.py recorded with PyTorch.
type bnFixture struct {
	X      []float32
	Labels []int32
	Runs   map[string]struct {
		Losses     []float64
		EvalLogits []float32 `json:"eval_logits"`
	}
	tensors *checkpoint.StateDict // RUN/grads|stats|final/KEY
}

func (f *bnFixture) get(t *testing.T, run, kind, key string) []float32 {
	t.Helper()
	ct := f.tensors.Get(run + "/" + kind + "/" + key)
	if ct == nil {
		t.Fatalf("the fixture has no %s/%s/%s", run, kind, key)
	}
	v, err := ct.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *bnFixture) count(run, kind string) int {
	n := 0
	for _, k := range f.tensors.Names {
		if strings.HasPrefix(k, run+"/"+kind+"/") {
			n++
		}
	}
	return n
}

func loadBNFixture(t *testing.T) *bnFixture {
	t.Helper()
	raw, err := os.ReadFile("testdata/bn_expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var f bnFixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if f.tensors, _, err = safetensors.Load("testdata/bn_expected.safetensors"); err != nil {
		t.Fatal(err)
	}
	return &f
}

// batches hands out the fixture's batches in order, whatever indices the
// trainer asks for: PyTorch trained on images 0-3, 4-7, 8-11.
type batches struct {
	x      []float32
	labels []int32
	n      int
}

func (b *batches) Len() int        { return len(b.labels) }
func (b *batches) Label(i int) int { return int(b.labels[i]) }
func (b *batches) NumClasses() int { return 10 }
func (b *batches) Fill(idx []int, p preprocess.Preprocess, _ *rand.Rand, dst []float32, labels []int32) {
	per := 3 * p.Crop * p.Crop
	for i := range idx {
		j := b.n*len(idx) + i
		copy(dst[i*per:(i+1)*per], b.x[j*per:(j+1)*per])
		labels[i] = b.labels[j]
	}
	b.n++
}

// bnSetup loads the resnet18_w4 base and one of the fixture's adapters.
func bnSetup(t *testing.T, dir string) (*backbone.Base, *adapter.Adapter) {
	t.Helper()
	sd, err := pth.Load(testutil.ResNet18W4)
	if err != nil {
		t.Fatal(err)
	}
	file, err := adapter.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	base, err := resnet.FromStateDict(sd, "", "fixture", file.Info.Base.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	a, err := file.Bind(base.Net)
	if err != nil {
		t.Fatal(err)
	}
	return base, a
}

// TestSavedBatchNormMatchesPyTorch: batch norms inside modules_to_save train
// as PyTorch's model.train() runs them — batch statistics in the forward,
// running statistics updated, num_batches_tracked counted — and three SGD or
// Adam steps end where PyTorch's do: losses, first-step gradients, running
// statistics and every adapter tensor within 1e-4.
func TestSavedBatchNormMatchesPyTorch(t *testing.T) {
	f := loadBNFixture(t)
	base, a := bnSetup(t, "testdata/bn_adapter")
	if !a.HasTrainBatchNorm() || !a.TrainsBatchNorm("layer4.1.bn2") || a.TrainsBatchNorm("layer4.0.bn2") {
		t.Fatal("layer4.1's batch norms should train, the others not")
	}
	checkFirstStep(t, base, a, f, "sgd")
	for _, run := range []string{"sgd", "adam"} {
		t.Run(run, func(t *testing.T) { checkRun(t, base, a, f, run, run, 0) })
	}
}

// TestFullFineTuningMatchesPyTorch: full fine-tuning (every module saved:
// every parameter trains, every batch norm in train mode, weight decay on
// weights only) ends three SGD and AdamW steps where PyTorch does, and the
// merged model — torchvision's keys, as --weights takes it — gives PyTorch's
// eval-mode logits, in lorafit and loaded back into PyTorch.
func TestFullFineTuningMatchesPyTorch(t *testing.T) {
	f := loadBNFixture(t)
	base, a := bnSetup(t, "testdata/full_adapter")
	if !a.Spec.IsFull(base.Net) || len(a.Targets) != 0 {
		t.Fatalf("the fixture's adapter is not full fine-tuning: %v", a.Spec.LoRA.ModulesToSave)
	}
	checkFirstStep(t, base, a, f, "full_sgd")
	for run, opt := range map[string]string{"full_sgd": "sgd", "full_adam": "adamw"} {
		t.Run(run, func(t *testing.T) {
			trained := checkRun(t, base, a, f, run, opt, 0.05)
			merged, err := classifier.Merge(base, trained)
			if err != nil {
				t.Fatal(err)
			}
			model, err := resnet.FromStateDict(merged, "", "merged", "")
			if err != nil {
				t.Fatal(err)
			}
			x := tensors.FromFlatDataAndDimensions(f.X[:2*3*28*28], 2, 3, 28, 28)
			out, err := classifier.NewPredictor(goBackend(), model, nil).Logits(x)
			if err != nil {
				t.Fatal(err)
			}
			want := f.Runs[run].EvalLogits
			testutil.AssertClose(t, "merged model's eval logits", tensors.MustCopyFlatData[float32](out), want, 1e-4)
			torchLoads(t, merged, want)
		})
	}
}

// checkRun trains a copy of a for the fixture's three steps with opt and
// compares losses and every final tensor with run's.
func checkRun(t *testing.T, base *backbone.Base, a *adapter.Adapter, f *bnFixture, run, opt string, wd float64) *adapter.Adapter {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Optimizer, cfg.Batch, cfg.Schedule, cfg.Warmup, cfg.Preprocess, cfg.WeightDecay = opt, 4, "constant", 0, a.Info.Preprocess, wd
	cfg.LR = map[string]float64{"sgd": 0.05, "full_sgd": 0.01, "adam": 0.001, "full_adam": 0.001}[run]
	tr, err := New(goBackend(), base, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Fit(context.Background(), &batches{x: f.X, labels: f.Labels})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.History) != 3 {
		t.Fatalf("%d history points for 3 steps", len(res.History))
	}
	for i, p := range res.History {
		testutil.AssertClose(t, "loss", []float32{float32(p.Loss)}, []float32{float32(f.Runs[run].Losses[i])}, 1e-4)
	}
	got, err := tr.Adapter().StateDict()
	if err != nil {
		t.Fatal(err)
	}
	if n := f.count(run, "final"); n != got.Len() {
		t.Fatalf("PyTorch's adapter has %d tensors, lorafit's %d", n, got.Len())
	}
	for _, k := range got.Names {
		v, err := got.Get(k).Float32s()
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		testutil.AssertClose(t, "after 3 steps: "+k, v, f.get(t, run, "final", k), 1e-4)
	}
	return tr.Adapter()
}

// checkFirstStep compares the first step's gradients and updated running
// statistics with PyTorch's (they do not depend on the optimizer).
func checkFirstStep(t *testing.T, base *backbone.Base, a *adapter.Adapter, f *bnFixture, run string) {
	t.Helper()
	x := tensors.FromFlatDataAndDimensions(f.X[:4*3*28*28], 4, 3, 28, 28)
	y := tensors.FromFlatDataAndDimensions(f.Labels[:4], 4)
	var keys, stats []string
	for _, e := range a.Entries() {
		switch {
		case e.Trainable():
			keys = append(keys, e.Key)
		case e.Kind == "buffer":
			stats = append(stats, e.Key)
		}
	}
	if len(keys) != f.count(run, "grads") || len(stats) != f.count(run, "stats") {
		t.Fatalf("PyTorch has gradients for %d tensors and %d statistics, the adapter %d and %d",
			f.count(run, "grads"), f.count(run, "stats"), len(keys), len(stats))
	}
	frozen, own := classifier.BaseFeed(base, a), classifier.AdapterFeed(a, nil)
	exec, err := NewExec(goBackend(), func(inputs []*Node) []*Node {
		x, labels := inputs[0], inputs[1]
		w := nn.Weights{}
		frozen.Bind(inputs[2:2+len(frozen.Keys)], w)
		own.Bind(inputs[2+len(frozen.Keys):], w)
		fw := &classifier.Forward{Net: base.Net, Adapter: a, Weights: w, Training: true, Updated: nn.Weights{}}
		loss := CrossEntropy(fw.Logits(x, 0), labels, 0)
		var wrt []*Node
		for _, k := range keys {
			wrt = append(wrt, w[k])
		}
		outs := Gradient(loss, wrt...)
		for _, k := range stats {
			outs = append(outs, ConvertDType(fw.Updated.Get(k), x.DType()))
		}
		return outs
	})
	if err != nil {
		t.Fatal(err)
	}
	outs, err := exec.Call(append(append([]any{x, y}, frozen.Args()...), own.Args()...)...)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]adapter.Entry{}
	for _, e := range a.Entries() {
		entries[e.Key] = e
	}
	for i, k := range keys {
		e := entries[k]
		testutil.AssertClose(t, "first-step d loss/d "+k, e.Layout.ToTorch(tensors.MustCopyFlatData[float32](outs[i]), e.Shape), f.get(t, run, "grads", k), 1e-4)
	}
	for i, k := range stats {
		testutil.AssertClose(t, "after the first forward: "+k, tensors.MustCopyFlatData[float32](outs[len(keys)+i]), f.get(t, run, "stats", k), 1e-5)
	}
}

// torchLoads saves a merged model as lorafit merge does and has PyTorch load
// it into the fixture's torchvision ResNet-18 (width 4) with load_state_dict
// (strict) and compute the eval-mode logits of the fixture's first images.
func torchLoads(t *testing.T, merged *checkpoint.StateDict, want []float32) {
	t.Helper()
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import torch, torchvision").Run() != nil {
		t.Log("no PyTorch at /usr/bin/python3: not checking that PyTorch loads the merged model")
		return
	}
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := safetensors.Save(path, merged, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import peft_ref as pr
sd, _, _ = pr.read_safetensors(sys.argv[2])
net = pr.base_from_state_dict(sd, "resnet18")  # load_state_dict, strict
fx = json.load(open(sys.argv[3]))
x = torch.tensor(fx["x"][:2*3*28*28]).reshape(2, 3, 28, 28)
with torch.no_grad():
    print(json.dumps([float(v) for v in net.eval()(x).reshape(-1)]))
`
	out, err := exec.Command(py, "-c", script, testutil.Path("lora/testdata"), path, "testdata/bn_expected.json").Output()
	if err != nil {
		t.Fatalf("PyTorch could not load the merged model: %v", err)
	}
	var got []float32
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	testutil.AssertClose(t, "PyTorch's logits of the merged model", got, want, 1e-4)
}
