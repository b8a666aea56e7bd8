package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/resnet"
)

func init() {
	verbs["params"] = verb{
		summary: "count trainable and total parameters of an adaptation (PEFT's print_trainable_parameters)",
		usage:   "params [--case N | --config FILE] [overrides] [--model resnet50] [--json] [--print-config]",
		run:     runParams,
	}
}

func runParams(fs *flag.FlagSet, args []string, out io.Writer) error {
	var sf specFlags
	sf.register(fs)
	arch := fs.String("model", "resnet50", "architecture (counts need shapes only, no weights)")
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
	cfg.NumClasses = *classes
	m, err := classifier.New(resnet.New(cfg), spec)
	if err != nil {
		return err
	}
	r := m.Params()
	if *asJSON {
		v := struct {
			Case int `json:"case,omitempty"`
			classifier.ParamReport
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
