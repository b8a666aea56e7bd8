package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/fsutil"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/study"
	"github.com/lorafit/lorafit/train"
)

func runTrain(fs *flag.FlagSet, args []string, out io.Writer) error {
	var bf baseFlags
	bf.register(fs, "resnet50/IMAGENET1K_V2")
	var sf specFlags
	sf.register(fs)
	var df dataFlags
	df.register(fs)
	var rf recipeFlags
	rf.register(fs)
	dir := fs.String("out", "", "directory for the result: DIR/adapter (PEFT format), DIR/result.json")
	resume := fs.Bool("resume", false, "continue from DIR/checkpoint.safetensors (left by an interrupted run)")
	force := fs.Bool("force", false, "overwrite a previous run in --out")
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
	spec, err := sf.resolve()
	if err != nil {
		return err
	}
	cfg, err := rf.config()
	if err != nil {
		return err
	}
	cfg.Resume = *resume
	if err := checkOutDir(*dir, *resume, *force); err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	b, err := bf.newBackend()
	if err != nil {
		return err
	}
	trainSet, testSet, err := df.load(cfg.Preprocess.Crop, cfg.Seed)
	if err != nil {
		return err
	}
	base, merged, src, err := bf.load(ctx)
	if err != nil {
		return err
	}
	if merged != nil {
		return fmt.Errorf("%s already has a head (a merged model?): start from plain base weights", src.Spec)
	}
	classes := trainSet.NumClasses()
	if setFlags(fs)["num-classes"] && spec.NumClasses != classes {
		return usageErrorf("--num-classes %d, but %s has %d classes", spec.NumClasses, trainSet.Name, classes)
	}
	if sf.full {
		if spec, err = sf.fullSpec(base.Net); err != nil {
			return err
		}
	}
	fits := base.Net.NumClasses() == classes || sf.full && base.Net.NumClasses() > classes
	if !spec.ReplaceFC && spec.Head == nil && !fits {
		return usageErrorf("the network outputs %d classes and %s has %d: add a head (--head) or --replace-fc",
			base.Net.NumClasses(), trainSet.Name, classes)
	}
	if !spec.ReplaceFC && spec.Head == nil && base.Net.NumClasses() > classes {
		fmt.Fprintf(errOut, "note: fc keeps its %d outputs; %s uses the first %d\n", base.Net.NumClasses(), trainSet.Name, classes)
	} else {
		spec.NumClasses = classes
	}
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		return err
	}
	if err := a.Init(base, cfg.Seed); err != nil {
		return err
	}
	fmt.Fprintf(errOut, "%s\n", a.Params())
	if _, err := os.Stat(*dir); err == nil {
		_, _ = fsutil.Clean(*dir) // what a killed run's writes left
	}
	job := &study.Job{Backend: b, Base: base, Adapter: a, Train: trainSet, Test: testSet, Config: cfg, Dir: *dir, Log: errOut, SaveModel: sf.full,
		BaseInfo: adapter.BaseInfo{Arch: base.Net.Arch(), Weights: src.Spec, SHA256: src.SHA256, NumClasses: base.Net.NumClasses()}}
	if *resume {
		cr, err := job.Finished()
		if err != nil {
			return resumeError(err)
		}
		if cr != nil {
			fmt.Fprintf(out, "%s: this run had already finished: test accuracy %.4f on %d images; adapter %s (%s bytes)\n",
				strings.TrimSuffix(*dir, "/"), cr.Accuracy, testSet.Len(), cr.AdapterDir, report.Thousands(cr.AdapterBytes))
			return nil
		}
	}
	cr, err := job.Run(ctx)
	if err != nil {
		if errors.Is(err, train.ErrInterrupted) {
			return fmt.Errorf("%w\n  continue with the same command and --resume", err)
		}
		return withCheckpointHint(resumeError(err), "the same command and --resume", filepath.Join(*dir, study.CheckpointFile))
	}
	resumed := ""
	if cr.ResumedAtStep > 0 {
		resumed = fmt.Sprintf(" (resumed at step %d)", cr.ResumedAtStep)
	}
	fmt.Fprintf(out, "%s: test accuracy %.4f on %d images%s; adapter %s (%s bytes)\n", strings.TrimSuffix(*dir, "/"),
		cr.Accuracy, testSet.Len(), resumed, cr.AdapterDir, report.Thousands(cr.AdapterBytes))
	if cr.ModelFile != "" {
		fmt.Fprintf(out, "%s: the whole fine-tuned network, torchvision's keys: use it as --weights\n", cr.ModelFile)
	}
	return nil
}

// withCheckpointHint adds to a failure after training made progress (a
// full disk, say) that the checkpoints are intact and how to continue.
func withCheckpointHint(err error, continueWith string, checkpoints ...string) error {
	var ie *train.IdentityError
	if errors.As(err, &ie) {
		return err
	}
	var kept []string
	for _, c := range checkpoints {
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

// resumeError makes a refused resume (a checkpoint or result of another
// run) a usage error: the fix is in the command line.
func resumeError(err error) error {
	var ie *train.IdentityError
	if errors.As(err, &ie) {
		return usageErrorf("%v\n  --resume continues a run with the same settings: repeat the first run's flags, or start over with --force", err)
	}
	return err
}
