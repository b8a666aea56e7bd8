package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/transforms"
)

func init() {
	verbs["adapter"] = verb{
		summary: "create an untrained adapter directory in PEFT's format (adapter init)",
		usage:   "adapter init --out DIR [--weights W] [--case N | --config FILE] [overrides] [--seed S] [--dtype F32|F16|BF16]",
		run:     runAdapter,
	}
	verbs["merge"] = verb{
		summary: "fold an adapter into its base weights and write a plain model (.safetensors)",
		usage:   "merge --weights W --adapter DIR --out FILE.safetensors",
		run:     runMerge,
	}
}

func runAdapter(fs *flag.FlagSet, args []string, out io.Writer) error {
	var mf modelFlags
	mf.register(fs)
	var sf specFlags
	sf.register(fs)
	dir := fs.String("out", "", "adapter directory to write (replaced atomically if it exists)")
	seed := fs.Uint64("seed", 0, "seed for the adapter's initial weights")
	dtype := fs.String("dtype", "F32", "dtype of the saved tensors: F32, F16 or BF16")
	imageSize := fs.Int("image-size", 28, "input size recorded in lorafit.json")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || rest[0] != "init" {
		return usageErrorf("want the sub-command init")
	}
	if *dir == "" {
		return usageErrorf("--out DIR is required")
	}
	if mf.adapter != "" {
		return usageErrorf("--adapter does not apply to adapter init")
	}
	spec, err := sf.resolve()
	if err != nil {
		return err
	}
	base, src, err := mf.load(context.Background())
	if err != nil {
		return err
	}
	if base.Head != nil {
		return fmt.Errorf("%s already has a head (a merged model?): start from plain base weights", src.Spec)
	}
	m, err := classifier.New(base.Base, spec)
	if err != nil {
		return err
	}
	if err := m.Init(*seed); err != nil {
		return err
	}
	info := classifier.Info{
		Base:      classifier.BaseInfo{Arch: base.Base.Config.Arch, Weights: src.Spec, SHA256: src.SHA256, NumClasses: base.Base.Config.NumClasses},
		ImageSize: *imageSize, Mean: transforms.ImageNetMean, Std: transforms.ImageNetStd,
	}
	if err := m.SaveAdapter(*dir, info, checkpoint.DType(strings.ToUpper(*dtype))); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s\n", *dir, m.Params())
	return nil
}

func runMerge(fs *flag.FlagSet, args []string, out io.Writer) error {
	var mf modelFlags
	mf.register(fs)
	dst := fs.String("out", "", "merged model file (.safetensors), written atomically")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	if mf.adapter == "" || *dst == "" {
		return usageErrorf("--adapter and --out are required")
	}
	m, src, err := mf.load(context.Background())
	if err != nil {
		return err
	}
	sd, err := m.MergedStateDict()
	if err != nil {
		return err
	}
	meta := map[string]string{"format": "pt", "lorafit.merged_from": src.Spec + " + " + mf.adapter}
	if err := safetensors.Save(*dst, sd, meta); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %d tensors (%d LoRA modules merged)\n", *dst, sd.Len(), len(m.Targets))
	return nil
}
