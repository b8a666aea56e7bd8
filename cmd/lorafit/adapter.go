package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
	"github.com/lorafit/lorafit/study"
)

func runParams(fs *flag.FlagSet, args []string, out io.Writer) error {
	var sf specFlags
	sf.register(fs)
	arch := fs.String("model", "resnet50", "architecture (counts need shapes only, no weights): "+strings.Join(resnet.Archs(), ", "))
	classes := fs.Int("base-classes", 1000, "classes of the base fc (1000 for ImageNet weights)")
	asJSON := fs.Bool("json", false, `print {"case":N,"trainable":…,"total":…,"modules":[…]}`)
	printConfig := fs.Bool("print-config", false, "print the resolved spec as JSON (a --config file)")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	spec, err := sf.resolve()
	if err != nil {
		return err
	}
	if *printConfig {
		b, err := spec.MarshalIndent()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	cfg, err := resnet.ConfigFor(*arch)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if *classes < 1 || *classes > adapter.MaxHeadWidth {
		return usageErrorf("--base-classes %d: want 1 to %d", *classes, adapter.MaxHeadWidth)
	}
	cfg.NumClasses = *classes
	a, err := adapter.New(resnet.New(cfg), spec)
	if err != nil {
		return err
	}
	r := a.Params()
	if *asJSON {
		v := struct {
			Case int `json:"case,omitempty"`
			adapter.ParamReport
		}{ParamReport: r}
		if sf.config == "" {
			v.Case = sf.caseN
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Fprintln(out, r.String())
	for _, mp := range r.Modules {
		fmt.Fprintf(out, "  %-28s %-6s %12s\n", mp.Module, mp.Kind, commas(mp.Params))
	}
	return nil
}

func runAdapter(fs *flag.FlagSet, args []string, out io.Writer) error {
	var bf baseFlags
	bf.register(fs, "resnet50/IMAGENET1K_V2")
	var sf specFlags
	sf.register(fs)
	dir := fs.String("out", "", "adapter directory to write (replaced atomically if it exists)")
	seed := fs.Uint64("seed", 0, "seed for the adapter's initial weights")
	dtype := fs.String("dtype", "F32", "dtype of the saved tensors: F32, F16 or BF16")
	var size int
	registerImageSize(fs, &size, 28, "the network's input side, recorded in lorafit.json")
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
	if err := checkImageSize(size); err != nil {
		return err
	}
	dt := checkpoint.DType(strings.ToUpper(*dtype))
	if dt != checkpoint.F32 && dt != checkpoint.F16 && dt != checkpoint.BF16 {
		return usageErrorf("--dtype %q: want F32, F16 or BF16", *dtype)
	}
	spec, err := sf.resolve()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	base, merged, src, err := bf.load(ctx)
	if err != nil {
		return err
	}
	if merged != nil {
		return fmt.Errorf("%s already has a head (a merged model?): start from plain base weights", src.Spec)
	}
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		return err
	}
	if err := a.Init(base, *seed); err != nil {
		return err
	}
	a.Info = adapter.Info{
		Base:       study.BaseInfo(base, src),
		Preprocess: preprocess.Native(size),
	}
	if err := a.Save(*dir, dt); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s\n", *dir, a.Params())
	return nil
}

func runMerge(fs *flag.FlagSet, args []string, out io.Writer) error {
	var bf baseFlags
	bf.register(fs, "resnet50/IMAGENET1K_V2")
	var af adapterFlags
	af.register(fs)
	dst := fs.String("out", "", "merged model file (.safetensors), written atomically")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	if af.dir == "" || *dst == "" {
		return usageErrorf("--adapter and --out are required")
	}
	ctx, stop := signalContext()
	defer stop()
	base, merged, src, err := bf.load(ctx)
	if err != nil {
		return err
	}
	if merged != nil {
		return fmt.Errorf("%s already has a head (a merged model?): merge into plain base weights", src.Spec)
	}
	a, err := af.load(base)
	if err != nil {
		return err
	}
	sd, err := classifier.Merge(base, a)
	if err != nil {
		return err
	}
	meta := map[string]string{"format": "pt", "lorafit.merged_from": src.Spec + " + " + af.dir}
	if err := safetensors.Save(*dst, sd, meta); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %d tensors (%d LoRA modules merged)\n", *dst, sd.Len(), len(a.Targets))
	return nil
}
