package classifier

import (
	"fmt"
	"strings"

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

// Params counts trainable and total parameters; buffers are not parameters.
func (m *Model) Params() ParamReport {
	var r ParamReport
	index := map[string]int{}
	for _, e := range m.Entries() {
		if e.Kind == "buffer" {
			continue
		}
		n := 1
		for _, d := range e.Shape {
			n *= d
		}
		r.Total += n
		if e.Kind != "lora" && e.Kind != "saved" {
			continue
		}
		r.Trainable += n
		mod := e.Key[:strings.LastIndex(e.Key, ".")]
		if e.Kind == "lora" {
			mod = mod[:strings.LastIndex(mod, ".")] // drop .lora_A / .lora_B
		}
		i, ok := index[mod+e.Kind]
		if !ok {
			i = len(r.Modules)
			index[mod+e.Kind] = i
			r.Modules = append(r.Modules, ModuleParams{Module: mod, Kind: e.Kind})
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
