package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/fsutil"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
	"github.com/lorafit/lorafit/study"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/weights"
)

// Flag groups: one per concept, registered by every verb that needs it, so a
// flag means one thing everywhere.

// baseFlags choose the base network and where it runs.
type baseFlags struct {
	weights, arch, backend string
	download               bool
}

func (f *baseFlags) register(fs *flag.FlagSet, defaultWeights string) {
	fs.StringVar(&f.weights, "weights", defaultWeights, "base weights: a registry name (see: lorafit weights list), a .pth/.safetensors file, or random[:SEED] (torchvision's init, seeded)")
	fs.StringVar(&f.arch, "model", "", "architecture (default: read off the weights; resnet50 for random): "+strings.Join(resnet.Archs(), ", "))
	fs.StringVar(&f.backend, "backend", "", "GoMLX backend: go (pure Go, default), or xla:cpu / xla:cuda in a -tags xla build (default $GOMLX_BACKEND or go)")
	fs.BoolVar(&f.download, "download", true, "download registry weights that are not cached yet")
}

// open creates the backend.
func (f *baseFlags) newBackend() (compute.Backend, error) {
	return backend.New(backend.Resolve(f.backend))
}

// load opens the weights and builds the base (and, for a merged model, the
// adapter holding its head).
func (f *baseFlags) load(ctx context.Context) (*backbone.Base, *adapter.Adapter, *weights.Source, error) {
	base, merged, src, err := weights.Load(ctx, f.weights, weights.OpenOptions{Arch: f.arch, Download: f.download, Progress: errOut})
	if err != nil {
		return nil, nil, nil, err
	}
	slog.Info("base ready", "arch", base.Net.Describe(), "weights", src.String())
	return base, merged, src, nil
}

// adapterFlags name a saved adapter to apply.
type adapterFlags struct {
	dir           string
	allowMismatch bool
}

func (f *adapterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "adapter", "", "adapter directory (adapter_config.json + adapter_model.safetensors) to apply to the base weights")
	fs.BoolVar(&f.allowMismatch, "allow-base-mismatch", false, "load an adapter even if it was trained on other base weights (with a warning)")
}

// load reads the adapter and binds it to base.
func (f *adapterFlags) load(base *backbone.Base) (*adapter.Adapter, error) {
	a, warning, err := adapter.Load(f.dir, base, f.allowMismatch)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		slog.Warn(warning)
	}
	slog.Info("adapter ready", "dir", f.dir, "lora_modules", len(a.Targets), "head", a.Spec.Head.String())
	return a, nil
}

// specFlags choose how to adapt: a preset case or a JSON config, then
// per-field overrides.
type specFlags struct {
	fs                         *flag.FlagSet
	caseN                      int
	config, target, head, save string
	rank                       int
	alpha, dropout             float64
	replaceFC, rslora, full    bool
	numClasses                 int
	init                       string
}

func (s *specFlags) register(fs *flag.FlagSet) {
	s.fs = fs
	fs.IntVar(&s.caseN, "case", 2, "preset from the founding study, 1-4 (see README)")
	fs.StringVar(&s.config, "config", "", "JSON spec file (as printed by lorafit params --print-config); replaces --case")
	fs.StringVar(&s.target, "target", "", "LoRA target_modules: a regex matching whole module names (PEFT's rule), or a comma list of names/suffixes; 'none' for no LoRA")
	fs.IntVar(&s.rank, "rank", 0, "LoRA rank r")
	fs.Float64Var(&s.alpha, "alpha", 0, "lora_alpha (scaling = alpha/r)")
	fs.Float64Var(&s.dropout, "dropout", 0, "lora_dropout")
	fs.BoolVar(&s.rslora, "rslora", false, "use_rslora: scale by alpha/sqrt(r)")
	fs.StringVar(&s.head, "head", "", "head on the logits: none, linear, or widths like 512,256")
	fs.StringVar(&s.save, "save-modules", "", "modules_to_save, comma list (e.g. fc,head; a batch norm inside one trains in train mode)")
	fs.BoolVar(&s.replaceFC, "replace-fc", false, "replace fc by Linear(features → num-classes)")
	fs.IntVar(&s.numClasses, "num-classes", 0, "classes of the task (train: must agree with the data)")
	fs.StringVar(&s.init, "init-lora-weights", "", "true (PEFT default: B=0), gaussian, or false (A and B random)")
	fs.BoolVar(&s.full, "full", false, "full fine-tuning: every module trains (batch norms in train mode), no LoRA; with --replace-fc or --head for a new task head")
}

// fullSpec is --full's spec on net: every module saved, fc replaced or a
// head added as --replace-fc and --head say.
func (s *specFlags) fullSpec(net backbone.Network) (adapter.Spec, error) {
	set := setFlags(s.fs)
	for _, f := range []string{"case", "config", "target", "rank", "alpha", "dropout", "rslora", "save-modules", "init-lora-weights"} {
		if set[f] {
			return adapter.Spec{}, usageErrorf("--full trains every module without LoRA: --%s does not apply", f)
		}
	}
	spec := adapter.Full(net)
	spec.ReplaceFC = s.replaceFC
	if set["head"] {
		var err error
		if spec.Head, err = adapter.ParseHead(s.head); err != nil {
			return spec, usageErrorf("%v", err)
		}
		if spec.Head != nil {
			spec.LoRA.ModulesToSave = append(spec.LoRA.ModulesToSave, "head")
		}
	}
	return spec, nil
}

// resolve builds the Spec: preset or file, then the flags the user set.
func (s *specFlags) resolve() (adapter.Spec, error) {
	var spec adapter.Spec
	var err error
	set := setFlags(s.fs)
	if set["config"] && set["case"] {
		return spec, usageErrorf("--config and --case exclude each other")
	}
	if s.config != "" {
		spec, err = adapter.ReadSpec(s.config)
	} else {
		spec, err = adapter.Case(s.caseN)
	}
	if err != nil {
		return spec, usageErrorf("%v", err)
	}
	if set["target"] {
		spec.LoRA.TargetModules = parseTargets(s.target)
	}
	if set["rank"] {
		spec.LoRA.R = s.rank
	}
	if set["alpha"] {
		spec.LoRA.LoraAlpha = s.alpha
	}
	if set["dropout"] {
		spec.LoRA.LoraDropout = s.dropout
	}
	if set["rslora"] {
		spec.LoRA.UseRSLora = s.rslora
	}
	if set["head"] {
		if spec.Head, err = adapter.ParseHead(s.head); err != nil {
			return spec, usageErrorf("%v", err)
		}
	}
	if set["save-modules"] {
		spec.LoRA.ModulesToSave = splitList(s.save)
	}
	if set["replace-fc"] {
		spec.ReplaceFC = s.replaceFC
	}
	if set["num-classes"] {
		if s.numClasses < 1 {
			return spec, usageErrorf("--num-classes %d: want at least 1", s.numClasses)
		}
		spec.NumClasses = s.numClasses
	}
	if set["init-lora-weights"] {
		if err := spec.LoRA.InitLoraWeights.Set(s.init); err != nil {
			return spec, usageErrorf("%v", err)
		}
	}
	if err := spec.Validate(); err != nil {
		return spec, usageErrorf("%v", err)
	}
	return spec, nil
}

func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// parseTargets reads --target: a comma list of plain names is a list (suffix
// match); anything with regex syntax is one regex.
func parseTargets(s string) lora.Targets {
	if s == "none" || s == "" {
		return lora.Targets{}
	}
	if strings.ContainsAny(s, `\.*+?[](){}|^$`) {
		return lora.Targets{Regex: s}
	}
	return lora.Targets{List: splitList(s)}
}

func splitList(s string) []string {
	out := []string{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// dataFlags choose the dataset and how much of it.
type dataFlags struct {
	data, dir             string
	valSplit              float64
	limitTrain, limitTest int
}

func (f *dataFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.data, "data", "mnist", "mnist (built in), fashion-mnist (Debian's dataset-fashion-mnist), or an ImageFolder directory (one sub-folder per class)")
	fs.StringVar(&f.dir, "data-dir", "", "where fashion-mnist's idx files are (default: Debian's install)")
	fs.Float64Var(&f.valSplit, "val-split", 0.2, "for an ImageFolder without train/ and val/: the fraction of each class held out for testing, in (0, 1)")
	fs.IntVar(&f.limitTrain, "limit-train", 0, "use only N training images, a class-balanced sample (0: all)")
	fs.IntVar(&f.limitTest, "limit-test", 0, "use only N test images (0: all)")
}

// check refuses values that make no sense, before anything is loaded.
func (f *dataFlags) check() error {
	if !(f.valSplit > 0 && f.valSplit < 1) {
		return usageErrorf("--val-split %v: want a fraction in (0, 1)", f.valSplit)
	}
	if f.limitTrain < 0 || f.limitTest < 0 {
		return usageErrorf("--limit-train and --limit-test: want 0 (all) or more")
	}
	return nil
}

// load opens the dataset at the input side the run uses and applies the limits.
func (f *dataFlags) load(side int, seed uint64) (trainSet, testSet *data.Dataset, err error) {
	if err := f.check(); err != nil {
		return nil, nil, err
	}
	trainSet, testSet, err = data.Load(f.data, data.Options{Size: side, ValSplit: f.valSplit, Seed: seed, FashionDir: f.dir})
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

// recipeFlags are the training recipe; defaults are train.DefaultConfig's.
type recipeFlags struct {
	cfg       train.Config
	imageSize int
}

func (f *recipeFlags) register(fs *flag.FlagSet) {
	d := train.DefaultConfig()
	f.cfg = d
	c := &f.cfg
	fs.StringVar(&c.Optimizer, "optimizer", d.Optimizer, "adam, adamw or sgd")
	fs.Float64Var(&c.Momentum, "momentum", d.Momentum, "SGD momentum")
	fs.IntVar(&c.Epochs, "epochs", d.Epochs, "epochs")
	fs.IntVar(&c.Batch, "batch", d.Batch, "batch size")
	fs.Float64Var(&c.LR, "lr", d.LR, "peak learning rate")
	fs.Float64Var(&c.WeightDecay, "weight-decay", d.WeightDecay, "weight decay (decoupled for adamw)")
	fs.Float64Var(&c.LabelSmoothing, "label-smoothing", d.LabelSmoothing, "label smoothing ε")
	fs.Float64Var(&c.Warmup, "warmup", d.Warmup, "fraction of steps with linear warmup before the cosine decay")
	fs.StringVar(&c.Schedule, "schedule", d.Schedule, "cosine or constant")
	fs.Uint64Var(&c.Seed, "seed", d.Seed, "seed for init, data order and augmentation")
	fs.BoolVar(&c.Augment, "augment", d.Augment, "random shifts of up to ±2 pixels")
	registerImageSize(fs, &f.imageSize, d.Preprocess.Crop, "the network's input side: 28 is MNIST's native size and what 2 CPU cores afford; 224 matches ImageNet pretraining (use a GPU)")
}

// config is the validated recipe.
func (f *recipeFlags) config() (train.Config, error) {
	c := f.cfg
	c.Preprocess = preprocess.Native(f.imageSize)
	if err := c.Validate(); err != nil {
		return c, usageErrorf("%v", err)
	}
	return c, nil
}

// registerImageSize is --image-size everywhere: the network's input side.
func registerImageSize(fs *flag.FlagSet, v *int, def int, help string) {
	fs.IntVar(v, "image-size", def, fmt.Sprintf("%s (1 to %d)", help, preprocess.MaxSide))
}

func checkImageSize(n int) error {
	if n < 1 || n > preprocess.MaxSide {
		return usageErrorf("--image-size %d: want 1 to %d", n, preprocess.MaxSide)
	}
	return nil
}

// outFlags is a run's output directory and what may happen to a previous
// run found there (train, experiment).
type outFlags struct {
	dir           string
	resume, force bool
}

func (of *outFlags) register(fs *flag.FlagSet, dirUsage, resumeUsage string) {
	fs.StringVar(&of.dir, "out", "", dirUsage)
	fs.BoolVar(&of.resume, "resume", false, resumeUsage)
	fs.BoolVar(&of.force, "force", false, "overwrite a previous run in --out")
}

// check runs before anything else: the directory must not hold a previous
// run unless resuming or forced, so two runs never mix their files. It is
// created only once the run starts.
func (of *outFlags) check() error {
	entries, err := os.ReadDir(of.dir)
	switch {
	case os.IsNotExist(err):
		if of.resume {
			return usageErrorf("--resume: %s does not exist", of.dir)
		}
		return nil
	case err != nil:
		return err
	case len(entries) > 0 && !of.resume && !of.force:
		return usageErrorf("%s already holds files: pass --resume to continue that run or --force to overwrite it", of.dir)
	}
	return nil
}

// clean removes what a killed run's writes left (temporary files) once the
// run starts.
func (of *outFlags) clean() {
	if _, err := os.Stat(of.dir); err == nil {
		_, _ = fsutil.Clean(of.dir)
	}
}

// failed explains a run's failure: how to continue an interrupted one, a
// refused resume as a usage error, and which checkpoints survived
// anything else (a full disk, say).
func (of *outFlags) failed(err error, continueWith string) error {
	if errors.Is(err, train.ErrInterrupted) {
		return fmt.Errorf("%w\n  continue with %s", err, continueWith)
	}
	var ie *train.IdentityError
	if errors.As(err, &ie) {
		return usageErrorf("%v\n  --resume continues a run with the same settings: repeat the first run's flags, or start over with --force", err)
	}
	ckpts, _ := filepath.Glob(filepath.Join(of.dir, study.CheckpointFile))
	more, _ := filepath.Glob(filepath.Join(of.dir, "*", study.CheckpointFile))
	var kept []string
	for _, c := range append(ckpts, more...) {
		if st, serr := os.Stat(c); serr == nil && st.Mode().IsRegular() {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		return err
	}
	verb := " is"
	if len(kept) > 1 {
		verb = " are"
	}
	return fmt.Errorf("%w\n  %s%s intact: once the cause is fixed, continue with %s", err, strings.Join(kept, ", "), verb, continueWith)
}
