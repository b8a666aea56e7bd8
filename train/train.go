// Package train fine-tunes an adapter on a frozen base: a mini-batch loop
// over GoMLX with Adam, AdamW or SGD+momentum written out in the graph (so
// the learning rate, bias correction and state are plain and
// checkpointable), a cosine schedule with warmup, label smoothing, and
// gradients computed for the adapter's trainable tensors only. The base is
// read, never written; the trainer owns the optimizer state. Runs are
// deterministic for a seed, and a checkpoint at every epoch end (or on
// Ctrl-C) lets a killed run resume to the same final weights.
package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/nn"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/report"
)

// Data is what training and evaluation read: a labelled image set that
// fills NCHW float32 batches as a preprocessing says.
type Data interface {
	Len() int
	NumClasses() int
	// Fill writes images idx into dst ([len(idx),3,p.Crop,p.Crop]) and
	// their labels into labels; rng, when not nil, drives augmentation.
	Fill(idx []int, p preprocess.Preprocess, rng *rand.Rand, dst []float32, labels []int32)
}

// Config is the training budget and recipe. Start from DefaultConfig: every
// field means what it says, zero included (Validate refuses what makes no
// sense rather than substituting a default).
type Config struct {
	Epochs         int
	Batch          int
	LR             float64
	Optimizer      string  // "adam", "adamw" or "sgd"
	Momentum       float64 // SGD
	WeightDecay    float64 // AdamW: decoupled; Adam/SGD: added to the gradient
	Schedule       string  // "cosine" or "constant"
	Warmup         float64 // fraction of steps with linear warmup
	LabelSmoothing float64
	Seed           uint64
	Preprocess     preprocess.Preprocess
	Augment        bool
	LimitSteps     int // stop after this many steps in total (tests); 0: no limit

	Checkpoint string // file written at each epoch end and on interruption; "" for none
	Resume     bool   // continue from Checkpoint if it exists
	// Identity is what defines the run besides this Config and the
	// adapter: the data, the base, lorafit's version (study.Job fills it).
	// Checkpoints record it with the rest (see RunIdentity); Resume refuses
	// a checkpoint whose identity differs in any field.
	Identity map[string]string

	Progress io.Writer // progress bar or log lines; nil for silence
}

// DefaultConfig is lorafit's recipe: one epoch of Adam at 1e-3, batch 64,
// cosine decay after 5% warmup, MNIST's 28×28 inputs with ImageNet's
// statistics. The CLI's flag defaults are these values.
func DefaultConfig() Config {
	return Config{Epochs: 1, Batch: 64, LR: 1e-3, Optimizer: "adam", Momentum: 0.9, Schedule: "cosine",
		Warmup: 0.05, Preprocess: preprocess.Native(28)}
}

// MaxBatch bounds the batch size: beyond it a batch of 224×224 images
// alone is gigabytes.
const MaxBatch = 4096

// Validate refuses a recipe that cannot run or would not mean what it says.
func (c *Config) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case c.Optimizer != "adam" && c.Optimizer != "adamw" && c.Optimizer != "sgd":
		return fmt.Errorf("optimizer %q: want adam, adamw or sgd", c.Optimizer)
	case c.Schedule != "cosine" && c.Schedule != "constant":
		return fmt.Errorf("schedule %q: want cosine or constant", c.Schedule)
	case c.Epochs < 1:
		return fmt.Errorf("epochs %d: want at least 1", c.Epochs)
	case c.Batch < 1 || c.Batch > MaxBatch:
		return fmt.Errorf("batch %d: want 1 to %d", c.Batch, MaxBatch)
	case !(c.LR > 0) || !finite(c.LR):
		return fmt.Errorf("learning rate %v: want a positive number", c.LR)
	case !(c.Momentum >= 0 && c.Momentum < 1):
		return fmt.Errorf("momentum %v: want [0, 1)", c.Momentum)
	case !(c.WeightDecay >= 0) || !finite(c.WeightDecay):
		return fmt.Errorf("weight decay %v: want a non-negative number", c.WeightDecay)
	case !(c.Warmup >= 0 && c.Warmup < 1):
		return fmt.Errorf("warmup %v: want a fraction in [0, 1)", c.Warmup)
	case !(c.LabelSmoothing >= 0 && c.LabelSmoothing < 1):
		return fmt.Errorf("label smoothing %v: want [0, 1)", c.LabelSmoothing)
	case c.LimitSteps < 0:
		return fmt.Errorf("step limit %d: want 0 (none) or more", c.LimitSteps)
	}
	return c.Preprocess.Validate()
}

// Result is what Fit measured.
type Result struct {
	History   []report.Point
	Steps     int
	Seconds   float64 // wall time of the loop, first-step compilation included
	ImgPerSec float64 // steady state: first step (compilation) excluded
	Resumed   bool
	// ResumedAt is the step the run continued from (0 if not resumed).
	ResumedAt int
}

// ErrInterrupted is returned when ctx was cancelled; the checkpoint holds
// the state to resume from.
var ErrInterrupted = errors.New("training interrupted")

// Trainer owns the compiled train step of one adapter on one base.
type Trainer struct {
	cfg     Config
	base    *backbone.Base
	ad      *adapter.Adapter // a clone of the adapter given, updated every step
	backend compute.Backend

	params  []string // trainable entries, in entry order
	buffers []string // running statistics of the adapter's own batch norms
	slots   map[string][]*tensors.Tensor
	bake    bool
	frozen  *classifier.Feed // base tensors fed as parameters (unless baked)
	exec    *Exec
	step    int // optimizer steps done

	// Carried through checkpoints, so a resumed run reports the whole run.
	history  []report.Point
	pending  pending // curve sums since the last point
	seconds  float64 // training wall time before this Fit
	identity map[string]string
}

// New prepares training of a's trainable tensors on base. a is not modified:
// the trainer works on a clone, returned by Adapter.
func New(b compute.Backend, base *backbone.Base, a *adapter.Adapter, cfg Config) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, base: base, ad: a.Clone(), backend: b, slots: map[string][]*tensors.Tensor{}, bake: classifier.BakeBase(b),
		identity: RunIdentity(cfg, a)}
	for _, e := range a.Entries() {
		if a.Tensor(e.Key) == nil {
			return nil, fmt.Errorf("adapter has no value for %q: Init it or load it first", e.Key)
		}
		switch {
		case e.Trainable():
			t.params = append(t.params, e.Key)
			for range t.numSlots() {
				t.slots[e.Key] = append(t.slots[e.Key], tensors.FromShape(a.Tensor(e.Key).Shape()))
			}
		case e.Kind == "buffer":
			t.buffers = append(t.buffers, e.Key)
		}
	}
	if len(t.params) == 0 {
		return nil, fmt.Errorf("nothing to train: the adapter has no trainable tensors")
	}
	t.frozen = classifier.BaseFeed(base, a)
	var err error
	t.exec, err = NewExec(b, t.stepGraph)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Adapter is the adapter being trained, with the weights of the last step.
func (t *Trainer) Adapter() *adapter.Adapter { return t.ad }

// numSlots is the optimizer's per-tensor state count.
func (t *Trainer) numSlots() int {
	if t.cfg.Optimizer == "sgd" {
		return 1 // momentum buffer
	}
	return 2 // Adam's m and v
}

// LR is the learning rate at a step: linear warmup, then cosine decay to 0
// (or constant).
func (t *Trainer) LR(step, total int) float64 {
	warm := int(math.Round(t.cfg.Warmup * float64(total)))
	if step < warm {
		return t.cfg.LR * float64(step+1) / float64(warm)
	}
	if t.cfg.Schedule == "constant" || total <= warm {
		return t.cfg.LR
	}
	p := float64(step-warm) / float64(total-warm)
	return t.cfg.LR * 0.5 * (1 + math.Cos(math.Pi*p))
}

// stepGraph is one optimizer step: forward, loss, gradients of the
// trainable tensors, update. Inputs: images, labels, learning rate, the
// optimizer step number (for Adam's bias correction), a dropout RNG state,
// then the base's tensors (unless baked in), the trainable tensors, their
// optimizer slots and the adapter's batch-norm statistics. Outputs: loss,
// number correct, then the new trainable tensors, slots and statistics.
func (t *Trainer) stepGraph(inputs []*Node) []*Node {
	x, labels, lr, stepNum, rng := inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]
	g := x.Graph()
	rest := inputs[5:]
	w := nn.Weights{}
	if t.bake {
		t.frozen.Consts(g, w)
	} else {
		t.frozen.Bind(rest[:len(t.frozen.Keys)], w)
		rest = rest[len(t.frozen.Keys):]
	}
	np, ns := len(t.params), t.numSlots()
	params := rest[:np]
	slots := rest[np : np+np*ns]
	buffers := rest[np+np*ns:]
	for i, k := range t.params {
		w[k] = params[i]
	}
	for i, k := range t.buffers {
		w[k] = buffers[i]
	}
	f := &classifier.Forward{Net: t.base.Net, Adapter: t.ad, Weights: w, Training: true, RNG: rng, Updated: nn.Weights{}}
	logits := f.Logits(x, 0)
	loss := CrossEntropy(logits, labels, t.cfg.LabelSmoothing)
	outs := []*Node{loss, numCorrect(logits, labels)}
	grads := Gradient(loss, params...)
	var newSlots []*Node
	for i := range t.params {
		nw, s := OptimizerStep(t.cfg, params[i], grads[i], slots[i*ns:(i+1)*ns], lr, stepNum)
		outs = append(outs, nw)
		newSlots = append(newSlots, s...)
	}
	outs = append(outs, newSlots...)
	for _, k := range t.buffers {
		outs = append(outs, f.Updated.Get(k))
	}
	return outs
}

// call runs one step and takes its outputs as the new state.
func (t *Trainer) call(x []float32, labels []int32, lr float64, rngState *tensors.Tensor) (loss, hits float64, err error) {
	c := t.cfg
	n := len(labels)
	side := c.Preprocess.Crop
	args := []any{
		tensors.FromFlatDataAndDimensions(x, n, 3, side, side),
		tensors.FromFlatDataAndDimensions(labels, n),
		tensors.FromScalar(float32(lr)),
		tensors.FromScalar(float32(t.step + 1)),
		rngState,
	}
	if !t.bake {
		args = append(args, t.frozen.Args()...)
	}
	for _, k := range t.params {
		args = append(args, t.ad.Tensor(k))
	}
	for _, k := range t.params {
		for _, s := range t.slots[k] {
			args = append(args, s)
		}
	}
	for _, k := range t.buffers {
		args = append(args, t.ad.Tensor(k))
	}
	out, err := t.exec.Call(args...)
	if err != nil {
		return 0, 0, fmt.Errorf("train step %d: %w", t.step, err)
	}
	loss = float64(tensors.ToScalar[float32](out[0]))
	hits = float64(tensors.ToScalar[float32](out[1]))
	out = out[2:]
	for i, k := range t.params {
		if err := t.ad.SetTensor(k, out[i]); err != nil {
			return 0, 0, err
		}
	}
	out = out[len(t.params):]
	ns := t.numSlots()
	for i, k := range t.params {
		t.slots[k] = slices.Clone(out[i*ns : (i+1)*ns])
	}
	out = out[len(t.params)*ns:]
	for i, k := range t.buffers {
		if err := t.ad.SetTensor(k, out[i]); err != nil {
			return 0, 0, err
		}
	}
	return loss, hits, nil
}

// OptimizerStep updates one weight w given its gradient, as torch.optim's
// Adam, AdamW and SGD do: slots are the optimizer's state for w (SGD: the
// momentum buffer; Adam: m and v), lr the learning rate and stepNum the
// 1-based step, for Adam's bias correction. It returns the new weight and
// slots.
func OptimizerStep(c Config, w, grad *Node, slots []*Node, lr, stepNum *Node) (*Node, []*Node) {
	g := w.Graph()
	if c.WeightDecay > 0 && c.Optimizer != "adamw" {
		grad = Add(grad, MulScalar(w, c.WeightDecay)) // L2, as torch's weight_decay
	}
	switch c.Optimizer {
	case "sgd": // buf = μ·buf + g; w -= lr·buf
		buf := Add(MulScalar(slots[0], c.Momentum), grad)
		return Sub(w, Mul(buf, lr)), []*Node{buf}
	}
	// Adam(W) with PyTorch's defaults β=(0.9, 0.999), ε=1e-8.
	const b1, b2, eps = 0.9, 0.999, 1e-8
	m := Add(MulScalar(slots[0], b1), MulScalar(grad, 1-b1))
	v := Add(MulScalar(slots[1], b2), MulScalar(Square(grad), 1-b2))
	c1 := OneMinus(Pow(Scalar(g, dtypes.Float32, b1), stepNum))
	c2 := OneMinus(Pow(Scalar(g, dtypes.Float32, b2), stepNum))
	update := Mul(Div(Div(m, c1), AddScalar(Sqrt(Div(v, c2)), eps)), lr)
	if c.Optimizer == "adamw" && c.WeightDecay > 0 { // decoupled: w -= lr·wd·w
		update = Add(update, Mul(MulScalar(w, c.WeightDecay), lr))
	}
	return Sub(w, update), []*Node{m, v}
}

// CrossEntropy is the mean cross-entropy of logits [N,C] against integer
// labels [N], with label smoothing ε (target (1-ε)·onehot + ε/C), as
// torch.nn.CrossEntropyLoss(label_smoothing=ε) computes it.
func CrossEntropy(logits, labels *Node, smoothing float64) *Node {
	return ReduceAllMean(crossEntropyPerSample(logits, labels, smoothing))
}

// crossEntropyPerSample is CrossEntropy before the mean: [N].
func crossEntropyPerSample(logits, labels *Node, smoothing float64) *Node {
	classes := logits.Shape().Dimensions[1]
	target := OneHot(labels, classes, logits.DType())
	if smoothing > 0 {
		target = AddScalar(MulScalar(target, 1-smoothing), smoothing/float64(classes))
	}
	return Neg(ReduceSum(Mul(target, LogSoftmax(logits, 1)), 1))
}

func numCorrect(logits, labels *Node) *Node {
	hit := Equal(ArgMax(logits, 1, dtypes.Int32), labels)
	return ReduceAllSum(ConvertDType(hit, dtypes.Float32))
}

// Fit trains for the configured epochs. On ctx cancellation it saves a
// checkpoint (if configured) and returns ErrInterrupted.
func (t *Trainer) Fit(ctx context.Context, d Data) (*Result, error) {
	c := t.cfg
	n := d.Len()
	perEpoch := n / c.Batch // drop_last, as DataLoader(drop_last=True)
	if perEpoch == 0 {
		return nil, fmt.Errorf("%d training images: fewer than one batch of %d", n, c.Batch)
	}
	total := perEpoch * c.Epochs
	res := &Result{}
	if c.Resume && c.Checkpoint != "" {
		ok, err := t.load(c.Checkpoint)
		if err != nil {
			return nil, err
		}
		res.Resumed = ok
		if ok {
			res.ResumedAt = t.step
		}
	}
	res.History = t.history
	prior := t.seconds
	if c.LimitSteps > 0 && c.LimitSteps < total {
		total = c.LimitSteps
	}
	if t.step > total { // the identity matched, so the checkpoint is corrupt
		return nil, fmt.Errorf("%s: at step %d of a %d-step run", c.Checkpoint, t.step, total)
	}
	bar := newProgress(c.Progress, total)
	side := c.Preprocess.Crop
	x := make([]float32, c.Batch*3*side*side)
	labels := make([]int32, c.Batch)
	start := time.Now()
	var steadyStart time.Time
	acc := &t.pending
	every := max(1, min(perEpoch/20, 50)) // ~20 curve points per epoch
	for t.step < total {
		epoch, b := t.step/perEpoch, t.step%perEpoch
		order := permutation(n, c.Seed, epoch)
		idx := order[b*c.Batch : (b+1)*c.Batch]
		var aug *rand.Rand
		if c.Augment {
			aug = rand.New(rand.NewPCG(c.Seed^0x617567, uint64(t.step)))
		}
		d.Fill(idx, c.Preprocess, aug, x, labels)
		rngState, err := RNGStateFromSeed(int64(c.Seed) + int64(t.step))
		if err != nil {
			return nil, err
		}
		loss, hits, err := t.call(x, labels, t.LR(t.step, total), rngState)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("train step %d: loss is %v (learning rate %g too high?)", t.step, loss, c.LR)
		}
		t.step++
		res.Steps++
		if res.Steps == 1 {
			steadyStart = time.Now()
		}
		acc.Loss += loss
		acc.Correct += hits
		acc.Steps++
		if t.step%every == 0 || t.step == total {
			res.History = append(res.History, report.Point{
				Step: t.step, Epoch: float64(t.step) / float64(perEpoch),
				Loss: acc.Loss / float64(acc.Steps), Accuracy: acc.Correct / float64(acc.Steps*c.Batch),
			})
			*acc = pending{}
		}
		bar.update(t.step, loss, hits/float64(c.Batch), c.Batch)
		t.history = res.History
		t.seconds = prior + time.Since(start).Seconds()
		endOfEpoch := t.step%perEpoch == 0
		if c.Checkpoint != "" && (endOfEpoch || t.step == total || ctx.Err() != nil) {
			if err := t.save(c.Checkpoint); err != nil {
				return nil, err
			}
		}
		if ctx.Err() != nil && t.step < total {
			bar.done()
			return res, fmt.Errorf("%w at step %d of %d; %s", ErrInterrupted, t.step, total, resumeHint(c.Checkpoint))
		}
	}
	bar.done()
	res.Seconds = prior + time.Since(start).Seconds()
	if res.Steps > 1 {
		res.ImgPerSec = float64((res.Steps-1)*c.Batch) / time.Since(steadyStart).Seconds()
	}
	return res, nil
}

func resumeHint(ckpt string) string {
	if ckpt == "" {
		return "no checkpoint was configured"
	}
	return "checkpoint saved to " + ckpt + "; rerun with --resume to continue"
}

// permutation is the data order of an epoch: a function of seed and epoch
// only, so a resumed run sees the same batches.
func permutation(n int, seed uint64, epoch int) []int {
	rng := rand.New(rand.NewPCG(seed, uint64(epoch)+1))
	return rng.Perm(n)
}
