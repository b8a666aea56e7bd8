package adapter

import (
	"fmt"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/report"
)

// ModuleParams is one line of the per-module breakdown.
type ModuleParams struct {
	Module string `json:"module"`
	Kind   string `json:"kind"` // "lora" or "saved" (modules_to_save)
	Params int    `json:"params"`
}

// ParamReport counts parameters the way PEFT's print_trainable_parameters
// does, except that "all" counts each tensor once (PEFT also counts the
// frozen originals it keeps beside modules_to_save copies).
type ParamReport struct {
	Trainable int            `json:"trainable"`
	Total     int            `json:"total"`
	Modules   []ModuleParams `json:"modules"`
}

// Params counts trainable and total parameters of the adapted network (the
// base's modules with fc as replaced, the head, LoRA); buffers are not
// parameters.
func (a *Adapter) Params() ParamReport {
	var r ParamReport
	for _, p := range backbone.ParamsOf(a.modules) {
		if !p.Kind.IsBuffer() {
			r.Total += p.NumElements()
		}
	}
	index := map[string]int{}
	for _, e := range a.entries {
		if !e.Trainable() {
			continue
		}
		n := 1
		for _, d := range e.Shape {
			n *= d
		}
		r.Trainable += n
		if e.Kind == "lora" {
			r.Total += n
		}
		i, ok := index[e.Module+e.Kind]
		if !ok {
			i = len(r.Modules)
			index[e.Module+e.Kind] = i
			r.Modules = append(r.Modules, ModuleParams{Module: e.Module, Kind: e.Kind})
		}
		r.Modules[i].Params += n
	}
	return r
}

// String is PEFT's one-line summary.
func (r ParamReport) String() string {
	return fmt.Sprintf("trainable params: %s || all params: %s || trainable%%: %.4f",
		report.Thousands(int64(r.Trainable)), report.Thousands(int64(r.Total)), 100*float64(r.Trainable)/float64(r.Total))
}
