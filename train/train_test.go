package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
)

var goBackend = testutil.Backend

// synth is a small learnable set: the class is which image quadrant is
// bright, plus noise.
type synth struct {
	x      [][]float32
	labels []int32
}

func newSynth(n int, seed uint64) *synth {
	rng := rand.New(rand.NewPCG(seed, 9))
	s := &synth{}
	for i := range n {
		c := i % 4
		img := make([]float32, 3*28*28)
		for ch := range 3 {
			for y := range 28 {
				for x := range 28 {
					v := float32(rng.NormFloat64()) * 0.3
					if (y/14)*2+x/14 == c {
						v += 1.5
					}
					img[(ch*28+y)*28+x] = v
				}
			}
		}
		s.x = append(s.x, img)
		s.labels = append(s.labels, int32(c))
	}
	return s
}

func (s *synth) Len() int        { return len(s.x) }
func (s *synth) Label(i int) int { return int(s.labels[i]) }
func (s *synth) NumClasses() int { return 4 }
func (s *synth) Fill(idx []int, p preprocess.Preprocess, _ *rand.Rand, dst []float32, labels []int32) {
	n := 3 * p.Crop * p.Crop
	for i, j := range idx {
		copy(dst[i*n:(i+1)*n], s.x[j])
		labels[i] = s.labels[j]
	}
}

// fixtureBase is the width-4 ResNet-50 fixture, loaded once.
var fixtureBase = sync.OnceValues(func() (*backbone.Base, error) {
	sd, err := pth.Load(testutil.ResNet50W4)
	if err != nil {
		return nil, err
	}
	return resnet.FromStateDict(sd, "", "fixture", "")
})

// newNet is a case-2-like adaptation of the width-4 ResNet-50 fixture.
func newNet(t *testing.T) (*backbone.Base, *adapter.Adapter) {
	t.Helper()
	base, err := fixtureBase()
	if err != nil {
		t.Fatal(err)
	}
	c := lora.Default()
	c.TargetModules, c.R, c.LoraAlpha, c.ModulesToSave = lora.Targets{Regex: `.*\.2\.conv3`}, 2, 4, []string{"fc", "head"}
	c.LoraDropout = 0.1
	a, err := adapter.New(base.Net, adapter.Spec{LoRA: c, Head: adapter.Head{8}, NumClasses: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Init(base, 1); err != nil {
		t.Fatal(err)
	}
	return base, a
}

func weightsOf(t *testing.T, a *adapter.Adapter) *checkpoint.StateDict {
	t.Helper()
	sd, err := a.StateDict()
	if err != nil {
		t.Fatal(err)
	}
	return sd
}

func fit(t *testing.T, cfg Config, ctx context.Context) (*adapter.Adapter, *Result, error) {
	t.Helper()
	base, a := newNet(t)
	tr, err := New(goBackend(), base, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Fit(ctx, newSynth(48, 1))
	return tr.Adapter(), res, err
}

var recipe = func() Config {
	c := DefaultConfig()
	c.Epochs, c.Batch, c.LR, c.Optimizer, c.WeightDecay, c.Warmup, c.LabelSmoothing, c.Seed = 2, 8, 3e-3, "adamw", 0.01, 0.1, 0.1, 5
	return c
}()

// TestTrainingLearnsAndFreezes: loss falls, only trainable tensors move.
func TestTrainingLearnsAndFreezes(t *testing.T) {
	base, a := newNet(t)
	before, baseBefore := weightsOf(t, a), base.Digest()
	tr, err := New(goBackend(), base, a, recipe)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Fit(context.Background(), newSynth(48, 1))
	if err != nil {
		t.Fatal(err)
	}
	h := res.History
	if len(h) < 4 || h[len(h)-1].Loss >= h[0].Loss {
		t.Errorf("training loss did not fall: %+v", h)
	}
	if base.Digest() != baseBefore {
		t.Error("training an adapter changed the base")
	}
	if d := weightsOf(t, a); string(d.Get("fc.weight").Data) != string(before.Get("fc.weight").Data) {
		t.Error("training changed the adapter it was given, not its own copy")
	}
	after := weightsOf(t, tr.Adapter())
	moved := 0
	for _, k := range before.Names {
		if string(before.Get(k).Data) != string(after.Get(k).Data) {
			moved++
		}
	}
	if moved != len(before.Names) {
		t.Errorf("%d of %d trainable tensors changed", moved, len(before.Names))
	}
	ev, err := Evaluate(context.Background(), classifier.NewPredictor(goBackend(), base, tr.Adapter()), newSynth(40, 2), recipe.Preprocess, recipe.Batch)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, row := range ev.Confusion {
		for _, v := range row {
			total += v
		}
	}
	if ev.N != 40 || total != 40 || ev.Accuracy < 0 || ev.Accuracy > 1 {
		t.Errorf("eval: N=%d, confusion total %d, accuracy %g", ev.N, total, ev.Accuracy)
	}
}

// TestDeterministic: same seed, same data order, same numbers.
func TestDeterministic(t *testing.T) {
	cfg := recipe
	cfg.Epochs = 1
	a1, r1, err := fit(t, cfg, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a2, r2, err := fit(t, cfg, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range r1.History {
		if r1.History[i] != r2.History[i] {
			t.Fatalf("history differs at %d: %+v vs %+v", i, r1.History[i], r2.History[i])
		}
	}
	a, b := weightsOf(t, a1), weightsOf(t, a2)
	for _, k := range a.Names {
		if string(a.Get(k).Data) != string(b.Get(k).Data) {
			t.Fatalf("%s differs between two runs with the same seed", k)
		}
	}
}

// cancelAfter is Data that cancels a context after n batches were filled.
// cancelAfter cancels once n batches have been filled. The trainer fills
// the next batch while the current step runs, so the run stops after step
// n-1: cancelAfter{n: k + 1} interrupts at step k exactly.
type cancelAfter struct {
	*synth
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Fill(idx []int, p preprocess.Preprocess, rng *rand.Rand, dst []float32, labels []int32) {
	c.synth.Fill(idx, p, rng, dst, labels)
	if c.n--; c.n == 0 {
		c.cancel()
	}
}

// newFull is full fine-tuning of the width-4 ResNet-50 fixture: every
// weight trainable, batch norms in train mode with running statistics.
func newFull(t *testing.T) (*backbone.Base, *adapter.Adapter) {
	t.Helper()
	base, err := fixtureBase()
	if err != nil {
		t.Fatal(err)
	}
	spec := adapter.Full(base.Net)
	spec.ReplaceFC, spec.NumClasses = true, 4
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Init(base, 1); err != nil {
		t.Fatal(err)
	}
	return base, a
}

// TestResume: a run interrupted mid-epoch and resumed from its checkpoint
// ends with the same weights — and, for full fine-tuning, the same batch
// norm running statistics and counts — as an uninterrupted run.
func TestResume(t *testing.T) {
	for _, tc := range []struct {
		name string
		net  func(*testing.T) (*backbone.Base, *adapter.Adapter)
	}{{"lora", newNet}, {"full", newFull}} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(cfg Config, data Data) (*Trainer, *Result, error) {
				base, a := tc.net(t)
				tr, err := New(goBackend(), base, a, cfg)
				if err != nil {
					t.Fatal(err)
				}
				res, err := tr.Fit(context.Background(), data)
				return tr, res, err
			}
			whole, wantRes, err := run(recipe, newSynth(48, 1))
			if err != nil {
				t.Fatal(err)
			}
			cfg := recipe
			cfg.Checkpoint = filepath.Join(t.TempDir(), "ckpt.safetensors")
			base, a := tc.net(t)
			tr, err := New(goBackend(), base, a, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			_, err = tr.Fit(ctx, &cancelAfter{synth: newSynth(48, 1), n: 9, cancel: cancel}) // step 8: epoch 2, step 2
			if !errors.Is(err, ErrInterrupted) {
				t.Fatalf("interrupted run: %v", err)
			}
			cfg.Resume = true
			tr2, res, err := run(cfg, newSynth(48, 1))
			if err != nil {
				t.Fatal(err)
			}
			if !res.Resumed || res.ResumedAt != 8 || res.Steps != 4 {
				t.Fatalf("resumed=%v at step %d, ran %d steps; want 4 from step 8 of 12", res.Resumed, res.ResumedAt, res.Steps)
			}
			if !slices.Equal(res.History, wantRes.History) {
				t.Errorf("the resumed run's history is not the whole run's:\n%v\n%v", res.History, wantRes.History)
			}
			w1, w2 := weightsOf(t, whole.Adapter()), weightsOf(t, tr2.Adapter())
			buffers := 0
			for _, k := range w1.Names {
				if strings.HasSuffix(k, ".running_var") || strings.HasSuffix(k, ".num_batches_tracked") {
					buffers++
				}
				if w2.Get(k) == nil || string(w1.Get(k).Data) != string(w2.Get(k).Data) {
					t.Fatalf("%s: resumed run differs from the uninterrupted one", k)
				}
			}
			if tc.name == "full" && buffers != 2*53 { // ResNet-50 has 53 batch norms
				t.Errorf("%d running_var/num_batches_tracked tensors compared, want %d", buffers, 2*53)
			}
		})
	}
	// A checkpoint of another recipe is refused, naming the field.
	cfg := recipe
	cfg.Checkpoint = filepath.Join(t.TempDir(), "ckpt.safetensors")
	if _, _, err := fit(t, cfg, context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg.Resume, cfg.Seed = true, 6
	_, _, err := fit(t, cfg, context.Background())
	var ie *IdentityError
	if !errors.As(err, &ie) || len(ie.Differences) != 1 || ie.Differences[0] != (Difference{"seed", "5", "6"}) {
		t.Fatalf("resumed a checkpoint saved with another seed: %v", err)
	}
}

// TestCrossEntropyMatchesPyTorch: the loss equals torch.nn.CrossEntropyLoss,
// label smoothing included, on values PyTorch computed.
func TestCrossEntropyMatchesPyTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/cross_entropy.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []struct {
			Logits    [][]float32
			Labels    []int32
			Smoothing float64
			Loss      float64
		}
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) == 0 {
		t.Fatal("no cases in the fixture")
	}
	for _, c := range f.Cases {
		var flat []float32
		for _, row := range c.Logits {
			flat = append(flat, row...)
		}
		got := MustExecOnce(goBackend(), func(logits, labels *Node) *Node {
			return CrossEntropy(logits, labels, c.Smoothing)
		}, tensors.FromFlatDataAndDimensions(flat, len(c.Logits), len(c.Logits[0])),
			tensors.FromFlatDataAndDimensions(c.Labels, len(c.Labels)))
		if v := float64(tensors.ToScalar[float32](got)); math.Abs(v-c.Loss) > 1e-5*math.Max(1, math.Abs(c.Loss)) {
			t.Errorf("%dx%d, ε=%g: loss %g, PyTorch %g", len(c.Logits), len(c.Logits[0]), c.Smoothing, v, c.Loss)
		}
	}
}

// TestOptimizerStepMatchesPyTorch follows a weight through five steps of
// torch.optim Adam, Adam with L2 weight decay, AdamW and SGD with momentum,
// with the learning rate changing every step, as a schedule does.
func TestOptimizerStepMatchesPyTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/optimizer.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		W0    []float32
		Grads [][]float32
		LRs   []float32
		Runs  []struct {
			Name, Optimizer string
			WeightDecay     float64 `json:"weight_decay"`
			Momentum        float64
			Trajectory      [][]float32
		}
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Runs) != 4 {
		t.Fatalf("%d runs in the fixture", len(f.Runs))
	}
	for _, run := range f.Runs {
		t.Run(run.Name, func(t *testing.T) {
			c := DefaultConfig()
			c.Optimizer, c.WeightDecay, c.Momentum = run.Optimizer, run.WeightDecay, run.Momentum
			nSlots := 2
			if c.Optimizer == "sgd" {
				nSlots = 1
			}
			w := slices.Clone(f.W0)
			slots := make([][]float32, nSlots)
			for i := range slots {
				slots[i] = make([]float32, len(w))
			}
			for k, g := range f.Grads {
				// The optimizer takes gradient sums over a batch: one of 1.
				optimizer{c}.step([]task{{w: w, slots: slots, grads: [][]float32{g}, decay: true}}, float64(f.LRs[k]), k+1, 1)
				got, want := w, run.Trajectory[k]
				for i := range want {
					if math.Abs(float64(got[i]-want[i])) > 1e-6*math.Max(1, math.Abs(float64(want[i]))) {
						t.Fatalf("step %d: w[%d] = %.8g, PyTorch %.8g", k+1, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// TestShardsAddUp: a batch split into parts run at once trains to the same
// adapter as the whole batch in one part, up to float rounding (no dropout:
// masks are drawn per part).
func TestShardsAddUp(t *testing.T) {
	var got []*checkpoint.StateDict
	for _, shards := range []int{1, 2, 3} {
		cfg := recipe
		cfg.Shards = shards
		base, a := newNet(t)
		a.Spec.LoRA.LoraDropout = 0
		tr, err := New(goBackend(), base, a, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Fit(context.Background(), newSynth(24, 1)); err != nil {
			t.Fatal(err)
		}
		got = append(got, weightsOf(t, tr.Adapter()))
	}
	for i := 1; i < len(got); i++ {
		for _, k := range got[0].Names {
			a, _ := got[0].Get(k).Float32s()
			b, _ := got[i].Get(k).Float32s()
			testutil.AssertClose(t, fmt.Sprintf("%d parts vs 1: %s", i+1, k), b, a, 1e-4)
		}
	}
}

// TestFlushSubnormals: Adam's moments of a weight whose gradient stays zero
// decay into subnormals (100× slower arithmetic on x86); the optimizer
// makes them zero, as PyTorch's set_flush_denormal does, and nothing else.
func TestFlushSubnormals(t *testing.T) {
	smallest := math.Float32frombits(0x00800000) // the least normal float32
	for _, tc := range []struct{ in, want float32 }{
		{0, 0}, {1, 1}, {-2.5, -2.5}, {smallest, smallest}, {-smallest, -smallest},
		{smallest / 2, 0}, {-smallest / 4, 0}, {math.Float32frombits(1), 0},
	} {
		if got := flush(tc.in); got != tc.want {
			t.Errorf("flush(%g) = %g, want %g", tc.in, got, tc.want)
		}
	}
	// 2,000 Adam steps of a zero gradient after one of 1e-3: m decays by
	// 0.9 a step, far below the subnormal range, and ends exactly 0.
	cfg := DefaultConfig()
	w, m, v := []float32{1}, []float32{0}, []float32{0}
	o := optimizer{cfg}
	for s := 1; s <= 2000; s++ {
		g := float32(0)
		if s == 1 {
			g = 1e-3
		}
		o.update(task{w: w, slots: [][]float32{m, v}, grads: [][]float32{{g}}}, 1e-3, s, 1)
		if m[0] != 0 && math.Float32bits(m[0])&0x7f800000 == 0 {
			t.Fatalf("step %d: m = %g is subnormal", s, m[0])
		}
	}
	if m[0] != 0 {
		t.Errorf("m = %g after 2,000 zero gradients, want 0", m[0])
	}
}

// TestAdamLanes: the 16-lane Adam(W) update is bit-identical to the scalar
// loop (the reference, torch.optim.Adam's float32 arithmetic), tail and
// subnormal flushing included, with one and two gradient parts.
func TestAdamLanes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		adamw bool
		parts int
	}{{false, 1}, {false, 2}, {true, 1}, {true, 2}} {
		const n = 8*10 + 7
		mk := func(scale float64) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64() * scale)
			}
			return v
		}
		w, m, v := mk(1), mk(1e-3), mk(1e-6)
		var grads [][]float32
		for range c.parts {
			grads = append(grads, mk(1e-2))
		}
		// Zero gradients where the moments decay into subnormals.
		m[3], v[5], m[84], w[3], w[5], w[84] = 1.2e-38, 1e-38, 1.2e-38, 0, 0, 0
		for _, g := range grads {
			g[3], g[5], g[84] = 0, 0, 0
		}
		a := adam{lr: 1e-3, wd: 0.01, n: 64, c1: 0.1, c2: 0.001, adamw: c.adamw}
		if !c.adamw {
			a.l2 = a.wd
		}
		want := task{w: slices.Clone(w), slots: [][]float32{slices.Clone(m), slices.Clone(v)}, grads: grads}
		a.scalar(want, 0)
		got := task{w: slices.Clone(w), slots: [][]float32{slices.Clone(m), slices.Clone(v)}, grads: grads}
		done := a.lanes(got)
		a.scalar(got, done)
		if want := n &^ 7; avx2 && done != want || !avx2 && done != 0 {
			t.Errorf("lanes did %d of %d elements (AVX2: %v)", done, n, avx2)
		}
		for i := range n {
			for k, pair := range [][2][]float32{{got.w, want.w}, {got.slots[0], want.slots[0]}, {got.slots[1], want.slots[1]}} {
				if math.Float32bits(pair[0][i]) != math.Float32bits(pair[1][i]) {
					t.Fatalf("adamw=%v parts=%d: %s[%d] = %g, scalar %g", c.adamw, c.parts, []string{"w", "m", "v"}[k], i, pair[0][i], pair[1][i])
				}
			}
		}
	}
}
