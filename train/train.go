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
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/features"
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
	// Label is image i's class.
	Label(i int) int
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
	WeightDecay    float64 // on weights, not biases or batch norms; AdamW: decoupled; Adam/SGD: added to the gradient
	Schedule       string  // "cosine" or "constant"
	Warmup         float64 // fraction of steps with linear warmup
	LabelSmoothing float64
	Seed           uint64
	Preprocess     preprocess.Preprocess
	Augment        bool
	LimitSteps     int // stop after this many steps in total (tests); 0: no limit
	// Features, if set, holds the frozen prefix's output for every training
	// image (see package features): steps start at its stage instead of
	// recomputing the prefix, and epoch e reads view e mod Views. It must
	// be of the data Fit is given, at Preprocess; with Augment it must hold
	// augmented views.
	Features *features.Cache
	// Shards is how many parts each batch is split into, run at once (one
	// per core on lorafit's Go backend): the gradients of the parts add up
	// to the batch's, exactly up to float rounding. 0 means backend.Shards;
	// an adapter whose batch norms train needs the whole batch's statistics
	// and runs as one part. With lora_dropout, masks are drawn per part.
	Shards int

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
	case c.Shards < 0 || c.Shards > c.Batch:
		return fmt.Errorf("shards %d: want 0 (one per core) to the batch size %d", c.Shards, c.Batch)
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
	decay   []bool   // whether each takes weight decay: weights, not biases or batch norms
	buffers []string // running statistics of the adapter's own batch norms
	slots   map[string][]*tensors.Tensor
	bake    bool
	frozen  *classifier.Feed // base tensors fed as parameters (unless baked)
	shards  int
	from    int   // the stage steps start at (a cached prefix's end)
	grads   *Exec // one part of a batch: loss and gradient sums
	step    int   // optimizer steps done

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
			t.decay = append(t.decay, e.Layout != nn.Plain)
			// The optimizer updates weights in place: the trainer's own copy.
			own, err := a.Tensor(e.Key).LocalClone()
			if err != nil {
				return nil, err
			}
			if err := t.ad.SetTensor(e.Key, own); err != nil {
				return nil, err
			}
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
	if f := cfg.Features; f != nil {
		if limit := classifier.FrozenPrefix(base.Net, a); f.Stage > limit {
			return nil, fmt.Errorf("the feature cache ends at stage %d, but the adapter trains from stage %d (%s)", f.Stage, limit, base.Net.Stages()[limit])
		}
		if cfg.Augment && f.Views < cfg.Epochs {
			return nil, fmt.Errorf("the feature cache holds %d augmented view(s) per image for %d epochs: augmentation would repeat shifts (build it with one view per epoch)", f.Views, cfg.Epochs)
		}
		t.from = f.Stage
	}
	t.shards = cfg.Shards
	if t.shards == 0 {
		t.shards = min(backend.Shards(b), cfg.Batch)
	}
	if len(t.buffers) > 0 {
		if cfg.Shards > 1 {
			return nil, fmt.Errorf("shards %d: the adapter's own batch norms train on the whole batch's statistics; use 1", cfg.Shards)
		}
		t.shards = 1
	}
	var err error
	if t.grads, err = NewExec(b, t.gradGraph); err != nil {
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

// gradGraph is the forward and backward pass of one part of a batch.
// Inputs: images, labels, a dropout RNG state, then the base's tensors
// (unless baked in), the trainable tensors and the adapter's batch-norm
// statistics. Outputs: the part's summed loss, its number correct, the
// gradients of the summed loss, and the new batch-norm statistics. Sums, not
// means, so the parts of a batch add up to it whatever their sizes.
func (t *Trainer) gradGraph(inputs []*Node) []*Node {
	x, labels, rng := inputs[0], inputs[1], inputs[2]
	g := x.Graph()
	rest := inputs[3:]
	w := nn.Weights{}
	if t.bake {
		t.frozen.Consts(g, w)
	} else {
		t.frozen.Bind(rest[:len(t.frozen.Keys)], w)
		rest = rest[len(t.frozen.Keys):]
	}
	params, buffers := rest[:len(t.params)], rest[len(t.params):]
	for i, k := range t.params {
		w[k] = params[i]
	}
	for i, k := range t.buffers {
		w[k] = buffers[i]
	}
	f := &classifier.Forward{Net: t.base.Net, Adapter: t.ad, Weights: w, Training: true, RNG: rng, Updated: nn.Weights{}}
	logits := f.Logits(x, t.from)
	loss := ReduceAllSum(crossEntropyPerSample(logits, labels, t.cfg.LabelSmoothing))
	outs := []*Node{loss, numCorrect(logits, labels)}
	outs = append(outs, Gradient(loss, params...)...)
	for _, k := range t.buffers {
		outs = append(outs, f.Updated.Get(k))
	}
	return outs
}

// call runs one step — every part of the batch at once, then the
// optimizer — and takes its outputs as the new state.
func (t *Trainer) call(x []float32, labels []int32, lr float64, seed int64) (loss, hits float64, err error) {
	n := len(labels)
	dims := t.sampleDims()
	per := len(x) / n
	shared := append([]*tensors.Tensor(nil), t.frozen.Values...)
	for _, k := range append(append([]string(nil), t.params...), t.buffers...) {
		shared = append(shared, t.ad.Tensor(k))
	}
	if err := classifier.Materialize(t.backend, shared); err != nil {
		return 0, 0, err
	}
	parts := make([][]*tensors.Tensor, t.shards)
	err = backend.AtOnce(t.shards, t.shards, func(p int) error {
		lo, hi := p*n/t.shards, (p+1)*n/t.shards
		rng, err := RNGStateFromSeed(seed*int64(t.shards) + int64(p))
		if err != nil {
			return err
		}
		args := []any{
			tensors.FromFlatDataAndDimensions(x[lo*per:hi*per], append([]int{hi - lo}, dims...)...),
			tensors.FromFlatDataAndDimensions(labels[lo:hi], hi-lo),
			rng,
		}
		if !t.bake {
			args = append(args, t.frozen.Args()...)
		}
		for _, k := range t.params {
			args = append(args, t.ad.Tensor(k))
		}
		for _, k := range t.buffers {
			args = append(args, t.ad.Tensor(k))
		}
		parts[p], err = t.grads.Call(args...)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("train step %d: %w", t.step, err)
	}
	np := len(t.params)
	tasks := make([]task, np)
	for i, k := range t.params {
		tasks[i] = task{w: mutableFlat(t.ad.Tensor(k)), decay: t.decay[i]}
		for _, s := range t.slots[k] {
			tasks[i].slots = append(tasks[i].slots, mutableFlat(s))
		}
	}
	for _, out := range parts {
		loss += float64(tensors.ToScalar[float32](out[0]))
		hits += float64(tensors.ToScalar[float32](out[1]))
		for i, g := range out[2 : 2+np] {
			tasks[i].grads = append(tasks[i].grads, constFlat(g))
		}
	}
	optimizer{t.cfg}.step(tasks, lr, t.step+1, n)
	for _, out := range parts {
		for _, g := range out[2 : 2+np] {
			g.FinalizeAll()
		}
	}
	for i, k := range t.buffers { // one part when batch norms train
		if err := t.ad.SetTensor(k, parts[0][2+np+i]); err != nil {
			return 0, 0, err
		}
	}
	return loss / float64(n), hits, nil
}

// constFlat is t's values without a copy (on a backend that shares host
// memory, the output buffer itself), valid until t is finalized: the
// optimizer reads each gradient once, and copying 2.7M of them per part
// was 2% of a case-2 step.
func constFlat(t *tensors.Tensor) []float32 {
	var flat []float32
	if err := t.ConstFlatData(func(f any) { flat = f.([]float32) }); err != nil {
		panic(err) // an output the trainer's own graph made: a bug
	}
	return flat
}

// mutableFlat is t's values, to update in place: the trainer owns its
// weights and slots, and nothing else reads them while it does.
func mutableFlat(t *tensors.Tensor) []float32 {
	var flat []float32
	if err := t.MutableFlatData(func(f any) { flat = f.([]float32) }); err != nil {
		panic(err) // a tensor the trainer made itself: a bug
	}
	return flat
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
	per := 1
	for _, d := range t.sampleDims() {
		per *= d
	}
	// fill writes step's batch into x and labels. The next batch is filled
	// while the current step runs, so its preparation is off the critical
	// path.
	fill := func(step int, x []float32, labels []int32) {
		epoch, b := step/perEpoch, step%perEpoch
		idx := permutation(n, c.Seed, epoch)[b*c.Batch : (b+1)*c.Batch]
		if f := c.Features; f != nil {
			f.Fill(idx, epoch, x)
			for k, i := range idx {
				labels[k] = int32(d.Label(i))
			}
			return
		}
		var aug *rand.Rand
		if c.Augment {
			aug = rand.New(rand.NewPCG(c.Seed^0x617567, uint64(step)))
		}
		d.Fill(idx, c.Preprocess, aug, x, labels)
	}
	x, nx := make([]float32, c.Batch*per), make([]float32, c.Batch*per)
	labels, nlabels := make([]int32, c.Batch), make([]int32, c.Batch)
	if t.step < total {
		fill(t.step, x, labels)
	}
	start := time.Now()
	var steadyStart time.Time
	acc := &t.pending
	every := max(1, min(perEpoch/20, 50)) // ~20 curve points per epoch
	for t.step < total {
		prefetched := make(chan struct{})
		go func(step int) {
			defer close(prefetched)
			if step < total {
				fill(step, nx, nlabels)
			}
		}(t.step + 1)
		loss, hits, err := t.call(x, labels, t.LR(t.step, total), int64(c.Seed)+int64(t.step))
		<-prefetched
		x, nx, labels, nlabels = nx, x, nlabels, labels
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

// sampleDims is one training input's shape: an image, or its cached
// features.
func (t *Trainer) sampleDims() []int {
	if f := t.cfg.Features; f != nil {
		return f.Dims
	}
	side := t.cfg.Preprocess.Crop
	return []int{3, side, side}
}

// permutation is the data order of an epoch: a function of seed and epoch
// only, so a resumed run sees the same batches.
func permutation(n int, seed uint64, epoch int) []int {
	rng := rand.New(rand.NewPCG(seed, uint64(epoch)+1))
	return rng.Perm(n)
}
