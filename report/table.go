package report

import (
	"fmt"
	"io"
)

// Table prints the founding study's table with a run's numbers, as
// `lorafit experiment` shows it.
func Table(w io.Writer, r *Results) {
	caveat := ""
	if r.Caveat != "" {
		caveat = "NOTE: " + r.Caveat + "\n"
	}
	fmt.Fprintf(w, "\n%s\n%sbase: %s · data: %s (%d train / %d test, %d×%d) · %d epoch(s), batch %d, %s lr %g, seed %d\n\n",
		r.Title, caveat, r.Weights.Name, r.Data.Name, r.Data.Train, r.Data.Test, r.Data.ImageSize, r.Data.ImageSize,
		r.Budget.Epochs, r.Budget.Batch, r.Budget.Optimizer, r.Budget.LR, r.Budget.Seed)
	row := func(name string, cell func(c CaseResult) string) {
		fmt.Fprintf(w, "%-22s", name)
		for _, c := range r.Cases {
			fmt.Fprintf(w, " %14s", cell(c))
		}
		fmt.Fprintln(w)
	}
	row("", func(c CaseResult) string { return caseName(c.Case) })
	row("trainable params", func(c CaseResult) string { return Thousands(int64(c.Trainable)) })
	row("trainable %", func(c CaseResult) string {
		return fmt.Sprintf("%.2f%%", 100*float64(c.Trainable)/float64(c.Total))
	})
	row("test accuracy", func(c CaseResult) string { return fmt.Sprintf("%.4f", c.Accuracy) })
	row("adapter (bytes)", func(c CaseResult) string { return Thousands(c.AdapterBytes) })
	row("adapter (MiB)", func(c CaseResult) string { return fmt.Sprintf("%.2f", mebibytes(c.AdapterBytes)) })
	row("  LoRA+fc (bytes)", func(c CaseResult) string { return Thousands(c.AdapterParts["lora"] + c.AdapterParts["fc"]) })
	row("  head (bytes)", func(c CaseResult) string { return Thousands(c.AdapterParts["head"]) })
	row("train time (s)", func(c CaseResult) string { return fmt.Sprintf("%.0f", c.TrainSeconds) })
	row("train img/s", func(c CaseResult) string { return fmt.Sprintf("%.0f", c.TrainImgPerSec) })
	row("eval img/s", func(c CaseResult) string { return fmt.Sprintf("%.0f", c.EvalImgPerSec) })
	if anyResumed(r.Cases) {
		row("run", runNote)
	}
	fmt.Fprintf(w, "\nfull model (fp32 safetensors): %s bytes (%.1f MiB)\n", Thousands(r.FullModelBytes), mebibytes(r.FullModelBytes))
}

// runNote says how a case's numbers came about when --resume was involved:
// "resumed@N" (continued from step N's checkpoint), "kept" (finished
// before the interruption), else "whole".
func runNote(c CaseResult) string {
	switch {
	case c.Kept:
		return "kept"
	case c.ResumedAtStep > 0:
		return fmt.Sprintf("resumed@%d", c.ResumedAtStep)
	}
	return "whole"
}

func anyResumed(cases []CaseResult) bool {
	for _, c := range cases {
		if c.Kept || c.ResumedAtStep > 0 {
			return true
		}
	}
	return false
}
