package report

import (
	"fmt"
	"strings"
)

// RandomBanner heads every report whose backbone had no pretrained
// weights, so nobody compares its accuracies with the founding study's.
const RandomBanner = "⚠ backbone is randomly initialized (no pretrained weights available): accuracies are not comparable to the founding study's"

// document is the report's content, built once so that report.md and
// report.html cannot disagree; the renderers only choose markup.
type document struct {
	Title    string
	Banner   string // empty when there is nothing to warn about
	Meta     []fact // one line under the title
	Sections []section
}

type section struct {
	Title   string
	Text    string
	Table   *table
	Groups  []group // fact lists shown side by side in report.html
	Figures []figure
	Links   []fact // Value is the link text, Href its relative target
}

type group struct {
	Title string
	Facts []fact
}

type fact struct {
	Label, Value string
	Href         string // relative link, if any
	Code         bool   // show Value in a monospace font
}

// table has a header row; each row starts with its label.
type table struct {
	Head []string
	Rows []row
}

type row struct {
	Label string
	Cells []string
	Code  bool
}

func buildDocument(r *Results, cases []CaseResult, figs []figure) *document {
	d := &document{Title: orNone(r.Title)}
	if r.Weights.Random {
		d.Banner = RandomBanner
	}
	if !r.StartedAt.IsZero() {
		d.Meta = append(d.Meta, fact{Label: "started", Value: r.StartedAt.Format("2006-01-02 15:04:05 MST")})
	}
	if r.Command != "" {
		d.Meta = append(d.Meta, fact{Label: "command", Value: r.Command, Code: true})
	}

	caveat := ""
	if r.Caveat != "" {
		caveat = "⚠ " + r.Caveat + " "
	}
	if len(cases) == 0 {
		d.Sections = append(d.Sections, section{Title: "Results", Text: caveat + "No case was run."})
	} else {
		d.Sections = append(d.Sections, section{
			Title: "Results",
			Text: caveat + fmt.Sprintf("Every case trains on the same data with the same budget and seed; accuracy is on the %s test split. "+
				"The full model, %s, is the whole adapted network in fp32 safetensors: what sharing a model instead of an adapter costs.",
				orNone(r.Data.Name), bytesAndMiB(r.FullModelBytes)),
			Table: mainTable(r, cases),
		})
	}

	byName := map[string]figure{}
	for _, f := range figs {
		byName[f.File] = f
	}
	var plots []figure
	for _, name := range []string{"cases.png", "loss.png", "accuracy.png"} {
		if f, ok := byName[name]; ok {
			plots = append(plots, f)
		}
	}
	if len(plots) > 0 {
		s := section{Title: "Plots", Figures: plots}
		var noCurve []string
		for _, c := range cases {
			if len(c.History) == 0 {
				noCurve = append(noCurve, caseName(c.Case))
			}
		}
		switch {
		case len(noCurve) == len(cases):
			s.Text = "No case recorded a training curve."
		case len(noCurve) > 0:
			s.Text = "No training curve was recorded for " + strings.Join(noCurve, ", ") + "."
		}
		d.Sections = append(d.Sections, s)
	}

	d.Sections = append(d.Sections, section{Title: "Setup", Groups: setupGroups(r)})

	if t := perClassTable(r, cases); t != nil {
		d.Sections = append(d.Sections, section{Title: "Per-class test accuracy", Table: t})
	}
	var conf []figure
	for _, c := range cases {
		if f, ok := byName[fmt.Sprintf("confusion_case%d.png", c.Case)]; ok {
			conf = append(conf, f)
		}
	}
	if len(conf) > 0 {
		d.Sections = append(d.Sections, section{Title: "Confusion matrices", Figures: conf})
	}

	files := []fact{{Label: "every number", Value: "results.json", Href: "results.json"}}
	for _, f := range figs {
		files = append(files, fact{Label: "plot", Value: f.File, Href: f.File})
	}
	for _, c := range cases {
		if c.AdapterDir != "" {
			dir := strings.TrimSuffix(c.AdapterDir, "/") + "/"
			files = append(files, fact{Label: caseName(c.Case) + " adapter", Value: dir, Href: dir})
		}
	}
	d.Sections = append(d.Sections, section{Title: "Files", Text: "Relative to this report.", Links: files})
	return d
}

// mainTable is the study's comparison: one column per case, as in the
// founding blog's tables.
func mainTable(r *Results, cases []CaseResult) *table {
	t := &table{Head: []string{""}}
	rows := []row{
		{Label: "what is trained", Code: true},
		{Label: "trainable parameters"},
		{Label: "all parameters"},
		{Label: "trainable %"},
		{Label: "test accuracy"},
		{Label: "test loss"},
		{Label: "adapter size (bytes)"},
		{Label: "adapter size (MiB)"},
		{Label: "adapter / full model (" + mibOrNone(r.FullModelBytes) + ")"},
		{Label: "train time (s)"},
		{Label: "train img/s"},
		{Label: "eval img/s"},
	}
	resumed := anyResumed(cases)
	if resumed {
		rows = append(rows, row{Label: "run (whole, resumed@step, kept from an interrupted run)"})
	}
	for _, c := range cases {
		t.Head = append(t.Head, caseName(c.Case))
		cells := []string{
			orNone(c.Description),
			Thousands(int64(c.Trainable)),
			Thousands(int64(c.Total)),
			percent(ratio(int64(c.Trainable), int64(c.Total))),
			percent(c.Accuracy),
			fixed(c.MeanLoss, 4),
			thousandsOrNone(c.AdapterBytes),
			mibValue(c.AdapterBytes),
			percent(ratio(c.AdapterBytes, r.FullModelBytes)),
			fixed(c.TrainSeconds, 1),
			fixed(c.TrainImgPerSec, 1),
			fixed(c.EvalImgPerSec, 1),
		}
		if resumed {
			cells = append(cells, runNote(c))
		}
		for i := range rows {
			rows[i].Cells = append(rows[i].Cells, cells[i])
		}
	}
	t.Rows = rows
	return t
}

func mibOrNone(b int64) string {
	if b <= 0 {
		return "size unknown"
	}
	return mib(b)
}

// perClassTable has a row per class and a column per case that measured
// per-class accuracy; nil when none did.
func perClassTable(r *Results, cases []CaseResult) *table {
	var with []CaseResult
	n := 0
	for _, c := range cases {
		if len(c.PerClassAccuracy) > 0 {
			with = append(with, c)
			n = max(n, len(c.PerClassAccuracy))
		}
	}
	if len(with) == 0 {
		return nil
	}
	// Test images per class, from the first confusion matrix (row sums).
	var support []int
	for _, c := range cases {
		if len(c.Confusion) > 0 {
			for _, row := range c.Confusion {
				s := 0
				for _, v := range row {
					s += v
				}
				support = append(support, s)
			}
			break
		}
	}
	t := &table{Head: []string{"class"}}
	if support != nil {
		t.Head = append(t.Head, "test images")
	}
	for _, c := range with {
		t.Head = append(t.Head, caseName(c.Case))
	}
	for i := range n {
		rw := row{Label: className(r.Data.ClassNames, i)}
		if support != nil {
			s := none
			if i < len(support) {
				s = Thousands(int64(support[i]))
			}
			rw.Cells = append(rw.Cells, s)
		}
		for _, c := range with {
			s := none
			if i < len(c.PerClassAccuracy) {
				s = percent(c.PerClassAccuracy[i])
			}
			rw.Cells = append(rw.Cells, s)
		}
		t.Rows = append(t.Rows, rw)
	}
	return t
}

// setupGroups says what was run, on what, with what: the context any
// number in the report needs.
func setupGroups(r *Results) []group {
	w, da, b, e := r.Weights, r.Data, r.Budget, r.Environment
	yesNo := map[bool]string{true: "yes", false: "no"}
	weights := []fact{
		{Label: "name", Value: orNone(w.Name)},
		{Label: "spec", Value: orNone(w.Spec), Code: true},
		{Label: "sha256", Value: shortSHA(w.SHA256), Code: w.SHA256 != ""},
		{Label: "random init", Value: yesNo[w.Random]},
	}
	if w.Note != "" {
		weights = append(weights, fact{Label: "note", Value: w.Note})
	}
	size := none
	if da.ImageSize > 0 {
		size = fmt.Sprintf("%d×%d", da.ImageSize, da.ImageSize)
	}
	data := []fact{
		{Label: "dataset", Value: orNone(da.Name)},
		{Label: "train images", Value: Thousands(int64(da.Train))},
		{Label: "test images", Value: Thousands(int64(da.Test))},
		{Label: "image size", Value: size},
		{Label: "augmentation", Value: yesNo[da.Augment]},
	}
	if n := len(da.ClassNames); n > 0 {
		v := fmt.Sprintf("%d", n)
		if n <= 20 {
			v += ": " + strings.Join(da.ClassNames, ", ")
		}
		data = append(data, fact{Label: "classes", Value: v})
	}
	budget := []fact{
		{Label: "epochs", Value: fmt.Sprint(b.Epochs)},
		{Label: "batch", Value: fmt.Sprint(b.Batch)},
		{Label: "optimizer", Value: orNone(b.Optimizer)},
		{Label: "learning rate", Value: fmt.Sprintf("%g", b.LR)},
		{Label: "seed", Value: fmt.Sprint(b.Seed)},
	}
	osArch := strings.Trim(e.OS+"/"+e.Arch, "/")
	threads := none
	if e.Threads > 0 {
		threads = fmt.Sprint(e.Threads)
	}
	env := []fact{
		{Label: "backend", Value: orNone(e.Backend)},
		{Label: "threads", Value: threads},
		{Label: "Go", Value: orNone(e.GoVersion)},
		{Label: "OS/arch", Value: orNone(osArch)},
		{Label: "CPU", Value: orNone(e.CPU)},
		{Label: "host", Value: orNone(e.Hostname)},
		{Label: "wall time", Value: duration(r.WallSeconds)},
	}
	env = append(env, peakFacts(r.PeakRSSBytes)...)
	return []group{
		{Title: "Base weights", Facts: weights},
		{Title: "Data", Facts: data},
		{Title: "Budget (every case)", Facts: budget},
		{Title: "Environment", Facts: env},
	}
}

// peakFacts is the "peak memory (RSS)" fact of a run's report and of a
// comparison's run, or none when the run did not record it.
func peakFacts(peakRSS int64) []fact {
	if peakRSS <= 0 {
		return nil
	}
	return []fact{{Label: "peak memory (RSS)", Value: mib(peakRSS)}}
}
