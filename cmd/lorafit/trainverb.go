package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/transforms"
	"github.com/lorafit/lorafit/weights"
)

func init() {
	verbs["train"] = verb{
		summary: "fine-tune one adaptation (a case or a config) on a dataset and save its adapter",
		usage:   "train --out DIR [--weights W] [--case N | --config FILE] [overrides] [--data mnist] [--epochs 1] ...",
		run:     runTrain,
	}
}

// trainFlags are the data and training flags `train` and `experiment` share.
type trainFlags struct {
	data, dataDir, optimizer                string
	epochs, batch, imageSize                int
	limitTrain, limitTest                   int
	lr, weightDecay, labelSmoothing, warmup float64
	valSplit                                float64
	seed                                    uint64
	augment, resume                         bool
}

func (f *trainFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.data, "data", "mnist", "mnist (built in), fashion-mnist (Debian's dataset-fashion-mnist), or an ImageFolder directory (one sub-folder per class)")
	fs.StringVar(&f.dataDir, "data-dir", "", "where fashion-mnist's idx files are (default: Debian's install)")
	fs.Float64Var(&f.valSplit, "val-split", 0.2, "for an ImageFolder without train/ and val/: the fraction of each class held out for testing")
	fs.StringVar(&f.optimizer, "optimizer", "adam", "adam, adamw or sgd (momentum 0.9)")
	fs.IntVar(&f.epochs, "epochs", 1, "epochs")
	fs.IntVar(&f.batch, "batch", 64, "batch size")
	fs.IntVar(&f.imageSize, "image-size", 28, "input side: 28 is MNIST's native size and what 2 CPU cores afford; 224 matches ImageNet pretraining (use a GPU)")
	fs.IntVar(&f.limitTrain, "limit-train", 0, "use only N training images, a class-balanced sample (0: all)")
	fs.IntVar(&f.limitTest, "limit-test", 0, "use only N test images (0: all)")
	fs.Float64Var(&f.lr, "lr", 1e-3, "peak learning rate")
	fs.Float64Var(&f.weightDecay, "weight-decay", 0, "weight decay (decoupled for adamw)")
	fs.Float64Var(&f.labelSmoothing, "label-smoothing", 0, "label smoothing ε")
	fs.Float64Var(&f.warmup, "warmup", 0.05, "fraction of steps with linear warmup before the cosine decay")
	fs.Uint64Var(&f.seed, "seed", 0, "seed for init, data order and augmentation")
	fs.BoolVar(&f.augment, "augment", false, "random shifts of up to ±2 pixels")
}

// loadData opens --data and applies the limits.
func (f *trainFlags) loadData() (trainSet, testSet *data.Dataset, err error) {
	trainSet, testSet, err = data.Load(f.data, data.Options{Size: f.imageSize, ValSplit: f.valSplit, Seed: f.seed, FashionDir: f.dataDir})
	if err != nil {
		return nil, nil, err
	}
	if f.limitTrain > 0 && f.limitTrain < trainSet.Len() {
		trainSet = trainSet.Subset(f.limitTrain)
	}
	if f.limitTest > 0 && f.limitTest < testSet.Len() {
		testSet = testSet.Subset(f.limitTest)
	}
	if trainSet.NumClasses() != testSet.NumClasses() {
		return nil, nil, fmt.Errorf("train and test sets have %d and %d classes", trainSet.NumClasses(), testSet.NumClasses())
	}
	return trainSet, testSet, nil
}

// fitAndSave trains m, evaluates it on the test set and saves its adapter
// under dir/adapter, filling cr's measurements. The checkpoint lives in dir
// while training and is removed once the adapter is saved.
func (f *trainFlags) fitAndSave(ctx context.Context, b compute.Backend, m *classifier.Model, src *weights.Source,
	trainSet, testSet *data.Dataset, dir string, cr *report.CaseResult) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := train.Config{
		Epochs: f.epochs, Batch: f.batch, LR: f.lr, Optimizer: f.optimizer, WeightDecay: f.weightDecay,
		Warmup: f.warmup, LabelSmoothing: f.labelSmoothing, Seed: f.seed, ImageSize: f.imageSize,
		Mean: transforms.ImageNetMean, Std: transforms.ImageNetStd, Augment: f.augment,
		Checkpoint: filepath.Join(dir, "checkpoint.safetensors"), Resume: f.resume, Progress: errOut,
	}
	tr, err := train.New(b, m, cfg)
	if err != nil {
		return err
	}
	fit, err := tr.Fit(ctx, trainSet)
	if err != nil {
		return err
	}
	cr.History, cr.TrainSeconds, cr.TrainImgPerSec = fit.History, fit.Seconds, fit.ImgPerSec
	ev, err := train.Evaluate(ctx, b, m, testSet, cfg)
	if err != nil {
		return err
	}
	cr.Accuracy, cr.MeanLoss, cr.PerClassAccuracy, cr.Confusion, cr.EvalImgPerSec = ev.Accuracy, ev.MeanLoss, ev.PerClass, ev.Confusion, ev.ImgPerSec
	adapterDir := filepath.Join(dir, "adapter")
	info := classifier.Info{
		Base:       classifier.BaseInfo{Arch: m.Base.Config.Arch, Weights: src.Spec, SHA256: src.SHA256, NumClasses: m.Base.Config.NumClasses},
		ClassNames: trainSet.ClassNames, ImageSize: f.imageSize, Mean: transforms.ImageNetMean, Std: transforms.ImageNetStd,
		Dataset: datasetName(trainSet.Name),
		Metrics: map[string]any{"accuracy": ev.Accuracy, "mean_loss": ev.MeanLoss, "test_images": ev.N, "epochs": f.epochs},
	}
	if err := m.SaveAdapter(adapterDir, info, checkpoint.F32); err != nil {
		return err
	}
	st, err := os.Stat(filepath.Join(adapterDir, classifier.WeightsFile))
	if err != nil {
		return err
	}
	cr.AdapterDir, cr.AdapterBytes = adapterDir, st.Size()
	_ = os.Remove(cfg.Checkpoint) // the adapter is the result now
	fmt.Fprintf(errOut, "   test accuracy %.4f, adapter %s bytes, %.0f s\n", ev.Accuracy, commas(int(cr.AdapterBytes)), fit.Seconds)
	return nil
}

func runTrain(fs *flag.FlagSet, args []string, out io.Writer) error {
	var tf trainFlags
	tf.register(fs)
	var mf modelFlags
	mf.register(fs)
	var sf specFlags
	sf.register(fs)
	dir := fs.String("out", "", "directory for the result: DIR/adapter (PEFT format), DIR/result.json")
	fs.BoolVar(&tf.resume, "resume", false, "continue from DIR/checkpoint.safetensors (left by an interrupted run)")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	if *dir == "" {
		return usageErrorf("--out DIR is required")
	}
	if mf.adapter != "" {
		return usageErrorf("--adapter: training starts a new adapter (continue one with --resume)")
	}
	spec, err := sf.resolve()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	b, err := backend.New(backend.Resolve(mf.backend))
	if err != nil {
		return err
	}
	trainSet, testSet, err := tf.loadData()
	if err != nil {
		return err
	}
	base, src, err := mf.load(ctx)
	if err != nil {
		return err
	}
	if base.Head != nil {
		return fmt.Errorf("%s already has a head (a merged model?): start from plain base weights", src.Spec)
	}
	if !spec.ReplaceFC && spec.Head == nil && base.Base.Config.NumClasses != trainSet.NumClasses() {
		return usageErrorf("the network outputs %d classes and %s has %d: add a head (--head) or --replace-fc",
			base.Base.Config.NumClasses, trainSet.Name, trainSet.NumClasses())
	}
	spec.NumClasses = trainSet.NumClasses()
	m, err := classifier.New(base.Base, spec)
	if err != nil {
		return err
	}
	if err := m.Init(tf.seed); err != nil {
		return err
	}
	params := m.Params()
	fmt.Fprintf(errOut, "%s\n", params)
	cr := &report.CaseResult{Trainable: params.Trainable, Total: params.Total, Description: describe(spec)}
	if err := tf.fitAndSave(ctx, b, m, src, trainSet, testSet, *dir, cr); err != nil {
		if errors.Is(err, train.ErrInterrupted) {
			return fmt.Errorf("%w\n  continue with the same command and --resume", err)
		}
		return err
	}
	if err := writeJSON(filepath.Join(*dir, "result.json"), cr); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: test accuracy %.4f on %d images; adapter %s (%s bytes)\n", strings.TrimSuffix(*dir, "/"),
		cr.Accuracy, testSet.Len(), cr.AdapterDir, commas(int(cr.AdapterBytes)))
	return nil
}
