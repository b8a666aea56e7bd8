package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"lorafit/checkpoint"
	"lorafit/report"
	"lorafit/resnet"
	"lorafit/weights"
)

func init() {
	verbs["inspect"] = verb{
		summary: "list a checkpoint's tensors, its module tree with parameter counts, and totals",
		usage:   "inspect [--json] FILE.pth|FILE.safetensors",
		run:     runInspect,
	}
}

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
	sd, info, err := weights.ReadFile(path)
	if err != nil {
		return err
	}
	r := inspectReport{File: path, Format: info.Format, SHA256: info.SHA256, Entries: sd.Len(), Modules: checkpoint.Modules(sd)}
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
