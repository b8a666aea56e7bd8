package train

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint/pth"
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
		Losses []float64
		Grads  map[string][]float32
		Stats  map[string][]float32 `json:"stats_after_first"`
		Final  map[string][]float32
	}
}

// batches hands out the fixture's batches in order, whatever indices the
// trainer asks for: PyTorch trained on images 0-3, 4-7, 8-11.
type batches struct {
	x      []float32
	labels []int32
	n      int
}

func (b *batches) Len() int        { return len(b.labels) }
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

// TestSavedBatchNormMatchesPyTorch: batch norms inside modules_to_save train
// as PyTorch's model.train() runs them — batch statistics in the forward,
// running statistics updated, num_batches_tracked counted — and three SGD or
// Adam steps end where PyTorch's do: losses, first-step gradients, running
// statistics and every adapter tensor within 1e-4.
func TestSavedBatchNormMatchesPyTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/bn_expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var f bnFixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	sd, err := pth.Load(testutil.ResNet18W4)
	if err != nil {
		t.Fatal(err)
	}
	file, err := adapter.ReadDir("testdata/bn_adapter")
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
	if !a.HasTrainBatchNorm() || !a.TrainsBatchNorm("layer4.1.bn2") || a.TrainsBatchNorm("layer4.0.bn2") {
		t.Fatal("layer4.1's batch norms should train, the others not")
	}
	x := tensors.FromFlatDataAndDimensions(f.X[:4*3*28*28], 4, 3, 28, 28)
	y := tensors.FromFlatDataAndDimensions(f.Labels[:4], 4)
	checkFirstStep(t, base, a, x, y, f)
	for name, run := range f.Runs {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Optimizer, cfg.Batch, cfg.Schedule, cfg.Warmup, cfg.Preprocess = name, 4, "constant", 0, a.Info.Preprocess
			cfg.LR = map[string]float64{"sgd": 0.05, "adam": 0.001}[name]
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
				testutil.AssertClose(t, "loss", []float32{float32(p.Loss)}, []float32{float32(run.Losses[i])}, 1e-4)
			}
			got, err := tr.Adapter().StateDict()
			if err != nil {
				t.Fatal(err)
			}
			if len(run.Final) != got.Len() {
				t.Fatalf("PyTorch's adapter has %d tensors, lorafit's %d", len(run.Final), got.Len())
			}
			for k, want := range run.Final {
				v, err := got.Get(k).Float32s()
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				testutil.AssertClose(t, "after 3 steps: "+k, v, want, 1e-4)
			}
		})
	}
}

// checkFirstStep compares the first step's gradients and updated running
// statistics with PyTorch's (they do not depend on the optimizer).
func checkFirstStep(t *testing.T, base *backbone.Base, a *adapter.Adapter, x, y *tensors.Tensor, f bnFixture) {
	t.Helper()
	run := f.Runs["sgd"]
	var keys []string
	for _, e := range a.Entries() {
		if e.Trainable() {
			keys = append(keys, e.Key)
		}
	}
	if len(keys) != len(run.Grads) {
		t.Fatalf("PyTorch has gradients for %d tensors, the adapter trains %d", len(run.Grads), len(keys))
	}
	var stats []string
	for k := range run.Stats {
		stats = append(stats, k)
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
		testutil.AssertClose(t, "first-step d loss/d "+k, e.Layout.ToTorch(tensors.MustCopyFlatData[float32](outs[i]), e.Shape), run.Grads[k], 1e-4)
	}
	for i, k := range stats {
		testutil.AssertClose(t, "after the first forward: "+k, tensors.MustCopyFlatData[float32](outs[len(keys)+i]), run.Stats[k], 1e-5)
	}
}
