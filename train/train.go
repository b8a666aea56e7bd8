// Package train fine-tunes a classifier.Model: a mini-batch loop over GoMLX
// with Adam, AdamW or SGD+momentum written out in the graph (so the
// learning rate, bias correction and state are plain and checkpointable),
// a cosine schedule with warmup, label smoothing, and gradients computed
// for trainable variables only. Runs are deterministic for a seed, and a
// checkpoint at every epoch end (or on Ctrl-C) lets a killed run resume to
// the same final weights.
package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/report"
)

// Data is what training and evaluation read: a labelled image set that
// fills NCHW float32 batches (normalized, 3 channels, size×size).
type Data interface {
	Len() int
	NumClasses() int
	// Fill writes images idx into dst ([len(idx),3,size,size]) and their
	// labels into labels; rng, when not nil, drives augmentation.
	Fill(idx []int, size int, mean, std [3]float32, rng *rand.Rand, dst []float32, labels []int32)
}

// Config is the training budget and recipe.
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
	ImageSize      int
	Mean, Std      [3]float32
	Augment        bool
	LimitSteps     int // stop after this many steps in total (tests)

	Checkpoint string // file written at each epoch end and on interruption; "" for none
	Resume     bool   // continue from Checkpoint if it exists

	Progress io.Writer // progress bar or log lines; nil for silence
}

// Defaults fills zero fields with lorafit's defaults.
func (c *Config) Defaults() {
	if c.Epochs == 0 {
		c.Epochs = 1
	}
	if c.Batch == 0 {
		c.Batch = 64
	}
	if c.LR == 0 {
		c.LR = 1e-3
	}
	if c.Optimizer == "" {
		c.Optimizer = "adam"
	}
	if c.Momentum == 0 {
		c.Momentum = 0.9
	}
	if c.Schedule == "" {
		c.Schedule = "cosine"
	}
	if c.ImageSize == 0 {
		c.ImageSize = 28
	}
}

func (c *Config) validate() error {
	switch {
	case c.Optimizer != "adam" && c.Optimizer != "adamw" && c.Optimizer != "sgd":
		return fmt.Errorf("optimizer %q: want adam, adamw or sgd", c.Optimizer)
	case c.Schedule != "cosine" && c.Schedule != "constant":
		return fmt.Errorf("schedule %q: want cosine or constant", c.Schedule)
	case c.Epochs < 1 || c.Batch < 1 || c.LR <= 0:
		return fmt.Errorf("epochs, batch and lr must be positive")
	case c.Warmup < 0 || c.Warmup >= 1 || c.LabelSmoothing < 0 || c.LabelSmoothing >= 1:
		return fmt.Errorf("warmup and label smoothing must be in [0, 1)")
	}
	return nil
}

// Result is what Fit measured.
type Result struct {
	History   []report.Point
	Steps     int
	Seconds   float64 // wall time of the loop, first-step compilation included
	ImgPerSec float64 // steady state: first step (compilation) excluded
	Resumed   bool
}

// ErrInterrupted is returned when ctx was cancelled; the checkpoint holds
// the state to resume from.
var ErrInterrupted = errors.New("training interrupted")

// Trainer owns the compiled train step of one model.
type Trainer struct {
	cfg     Config
	net     *classifier.Model
	backend compute.Backend
	vars    []*model.Variable // trainable, in path order (determinism)
	exec    *model.Exec
	step    int // optimizer steps done

	// Carried through checkpoints, so a resumed run reports the whole run.
	history []report.Point
	seconds float64 // training wall time before this Fit
}

// New prepares training of net's trainable variables.
func New(b compute.Backend, net *classifier.Model, cfg Config) (*Trainer, error) {
	cfg.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, net: net, backend: b, vars: net.Trainable()}
	if len(t.vars) == 0 {
		return nil, fmt.Errorf("nothing to train: no trainable variables")
	}
	sort.Slice(t.vars, func(i, j int) bool { return t.vars[i].Path() < t.vars[j].Path() })
	store := net.Base.Store
	for _, v := range t.vars {
		for _, slot := range t.slots() {
			zero := tensors.FromShape(v.Shape())
			sv, err := store.CreateVariable(slotPath(slot, v), zero)
			if err != nil {
				return nil, err
			}
			sv.SetTrainable(false)
		}
	}
	var err error
	t.exec, err = model.NewExec(b, store, t.stepGraph)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// slots are the optimizer's per-variable states.
func (t *Trainer) slots() []string {
	if t.cfg.Optimizer == "sgd" {
		return []string{"momentum"}
	}
	return []string{"m", "v"}
}

func slotPath(slot string, v *model.Variable) string { return "/optimizer/" + slot + v.Path() }

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
// trainable variables, update. Inputs: images, labels, learning rate, the
// optimizer step number (for Adam's bias correction) and a dropout RNG state.
func (t *Trainer) stepGraph(scope *model.Scope, x, labels, lr, stepNum, rng *Node) (loss, correct *Node) {
	g := x.Graph()
	// Before any variable is read: the Go backend otherwise bakes variables
	// into inference graphs as constants, and a train step would keep
	// reading the weights it was compiled with.
	scope.Store().SetTraining(g, true)
	t.net.StartTraining(rng)
	defer t.net.StopTraining()
	logits := t.net.Logits(x)
	loss = CrossEntropy(logits, labels, t.cfg.LabelSmoothing)
	correct = numCorrect(logits, labels)

	params := make([]*Node, len(t.vars))
	for i, v := range t.vars {
		params[i] = v.NodeValue(g)
	}
	grads := Gradient(loss, params...)
	store := scope.Store()
	for i, v := range t.vars {
		vars := make([]*model.Variable, len(t.slots()))
		slots := make([]*Node, len(vars))
		for j, name := range t.slots() {
			vars[j] = store.GetVariable(slotPath(name, v))
			slots[j] = vars[j].NodeValue(g)
		}
		w, slots := OptimizerStep(t.cfg, params[i], grads[i], slots, lr, stepNum)
		v.SetNodeValue(w)
		for j := range vars {
			vars[j].SetNodeValue(slots[j])
		}
	}
	return loss, correct
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
	}
	res.History = t.history
	prior := t.seconds
	if c.LimitSteps > 0 && c.LimitSteps < total {
		total = c.LimitSteps
	}
	bar := newProgress(c.Progress, total)
	x := make([]float32, c.Batch*3*c.ImageSize*c.ImageSize)
	labels := make([]int32, c.Batch)
	start := time.Now()
	var steadyStart time.Time
	var sumLoss, sumCorrect float64
	var sinceLast int
	every := max(1, min(perEpoch/20, 50)) // ~20 curve points per epoch
	for t.step < total {
		epoch, b := t.step/perEpoch, t.step%perEpoch
		order := permutation(n, c.Seed, epoch)
		idx := order[b*c.Batch : (b+1)*c.Batch]
		var aug *rand.Rand
		if c.Augment {
			aug = rand.New(rand.NewPCG(c.Seed^0x617567, uint64(t.step)))
		}
		d.Fill(idx, c.ImageSize, c.Mean, c.Std, aug, x, labels)
		rngState, err := RNGStateFromSeed(int64(c.Seed) + int64(t.step))
		if err != nil {
			return nil, err
		}
		out, err := t.exec.Call(
			tensors.FromFlatDataAndDimensions(x, c.Batch, 3, c.ImageSize, c.ImageSize),
			tensors.FromFlatDataAndDimensions(labels, c.Batch),
			tensors.FromScalar(float32(t.LR(t.step, total))),
			tensors.FromScalar(float32(t.step+1)),
			rngState)
		if err != nil {
			return nil, fmt.Errorf("train step %d: %w", t.step, err)
		}
		loss := float64(tensors.ToScalar[float32](out[0]))
		hits := float64(tensors.ToScalar[float32](out[1]))
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("train step %d: loss is %v (learning rate %g too high?)", t.step, loss, c.LR)
		}
		t.step++
		res.Steps++
		if res.Steps == 1 {
			steadyStart = time.Now()
		}
		sumLoss += loss
		sumCorrect += hits
		sinceLast++
		if t.step%every == 0 || t.step == total {
			res.History = append(res.History, report.Point{
				Step: t.step, Epoch: float64(t.step) / float64(perEpoch),
				Loss: sumLoss / float64(sinceLast), Accuracy: sumCorrect / float64(sinceLast*c.Batch),
			})
			sumLoss, sumCorrect, sinceLast = 0, 0, 0
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
