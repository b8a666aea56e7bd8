package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/study"
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
	var of outFlags
	of.register(fs, "directory for the result: DIR/adapter (PEFT format), DIR/result.json",
		"continue from DIR/checkpoint.safetensors (left by an interrupted run)")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	if of.dir == "" {
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
	cfg.Resume = of.resume
	if err := of.check(); err != nil {
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
	of.clean()
	job := &study.Job{Backend: b, Base: base, BaseInfo: study.BaseInfo(base, src), Adapter: a, Train: trainSet, Test: testSet,
		Config: cfg, Dir: of.dir, Log: errOut, SaveModel: sf.full}
	if of.resume {
		cr, err := job.Finished()
		if err != nil {
			return of.failed(err, "the same command and --resume")
		}
		if cr != nil {
			fmt.Fprintf(out, "%s: this run had already finished: test accuracy %.4f on %d images; adapter %s (%s bytes)\n",
				strings.TrimSuffix(of.dir, "/"), cr.Accuracy, testSet.Len(), cr.AdapterDir, report.Thousands(cr.AdapterBytes))
			return nil
		}
	}
	cr, err := job.Run(ctx)
	if err != nil {
		return of.failed(err, "the same command and --resume")
	}
	resumed := ""
	if cr.ResumedAtStep > 0 {
		resumed = fmt.Sprintf(" (resumed at step %d)", cr.ResumedAtStep)
	}
	fmt.Fprintf(out, "%s: test accuracy %.4f on %d images%s; adapter %s (%s bytes)\n", strings.TrimSuffix(of.dir, "/"),
		cr.Accuracy, testSet.Len(), resumed, cr.AdapterDir, report.Thousands(cr.AdapterBytes))
	if cr.ModelFile != "" {
		fmt.Fprintf(out, "%s: the whole fine-tuned network, torchvision's keys: use it as --weights\n", cr.ModelFile)
	}
	return nil
}
