package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/resnet"
	"github.com/lorafit/lorafit/weights"
)

type inspectTensor struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

type inspectReport struct {
	File         string              `json:"file"`
	Format       string              `json:"format"`
	SHA256       string              `json:"sha256"`
	Architecture string              `json:"architecture,omitempty"`
	Entries      int                 `json:"entries"`
	Params       int                 `json:"params"`
	BufferValues int                 `json:"buffer_values"`
	Tensors      []inspectTensor     `json:"tensors"`
	Modules      []checkpoint.Module `json:"modules"`
	Adapter      *adapterSummary     `json:"adapter,omitempty"`
}

// adapterSummary is what an adapter directory says about itself.
type adapterSummary struct {
	Spec adapter.Spec `json:"spec"`
	Info adapter.Info `json:"lorafit"`
}

func runInspect(fs *flag.FlagSet, args []string, out io.Writer) error {
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	files, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return usageErrorf("want exactly one FILE, got %d", len(files))
	}
	path := files[0]
	var summary *adapterSummary
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		a, err := adapter.ReadDir(path)
		if err != nil {
			return err
		}
		summary = &adapterSummary{Spec: a.Spec, Info: a.Info}
		path = filepath.Join(path, adapter.WeightsFile)
	}
	sd, info, err := weights.ReadFile(path)
	if err != nil {
		return err
	}
	r := inspectReport{File: path, Format: info.Format, SHA256: info.SHA256, Entries: sd.Len(), Modules: checkpoint.Modules(sd), Adapter: summary}
	r.Params, r.BufferValues = checkpoint.Counts(sd)
	if cfg, err := resnet.InferConfig(sd); err == nil {
		r.Architecture = cfg.Describe()
	}
	for _, n := range sd.Names {
		t := sd.Get(n)
		r.Tensors = append(r.Tensors, inspectTensor{n, string(t.DType), t.Shape})
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(out, "%s: %s, %d entries, sha256 %s\n", r.File, r.Format, r.Entries, r.SHA256)
	if r.Architecture != "" {
		fmt.Fprintf(out, "architecture: %s\n", r.Architecture)
	}
	if a := r.Adapter; a != nil {
		c := a.Spec.LoRA
		fmt.Fprintf(out, "adapter: target_modules %q, r=%d, lora_alpha=%g, rslora=%v, modules_to_save %v\n",
			c.TargetModules.String(), c.R, c.LoraAlpha, c.UseRSLora, c.ModulesToSave)
		fmt.Fprintf(out, "  head %s, replace_fc %v, %d classes %v\n", a.Spec.Head, a.Spec.ReplaceFC, a.Info.NumClasses, a.Info.ClassNames)
		fmt.Fprintf(out, "  base %s %s (sha256 %s), trained on %q, preprocess %s, metrics %v\n", a.Info.Base.Arch,
			a.Info.Base.Weights, a.Info.Base.SHA256, a.Info.Dataset, a.Info.Preprocess, a.Info.Metrics)
	}
	fmt.Fprintf(out, "\ntensors:\n")
	for _, t := range r.Tensors {
		fmt.Fprintf(out, "  %-44s %-5s %v\n", t.Name, t.DType, t.Shape)
	}
	fmt.Fprintf(out, "\nmodules (LoRA targets are matched against these names):\n")
	for _, m := range r.Modules {
		fmt.Fprintf(out, "  %-44s %-24s %12s\n", strings.Repeat("  ", m.Depth)+m.Name, m.Type, commas(m.Params))
	}
	fmt.Fprintf(out, "\ntotal: %s parameters (+ %s buffer values) in %d entries\n", commas(r.Params), commas(r.BufferValues), r.Entries)
	return nil
}

// commas formats 25557032 as 25,557,032.
func commas(n int) string { return report.Thousands(int64(n)) }
