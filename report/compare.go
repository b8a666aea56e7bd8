package report

import (
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/lorafit/lorafit/limits"
)

// Run is one experiment read back from its output directory, to compare
// with others: the same cases on two backbones shows what pretraining
// does, which no single report can.
type Run struct {
	Dir     string
	Label   string // the base weights' name, unique among the compared runs
	Results *Results
}

// ReadRun reads DIR/results.json as `lorafit experiment` wrote it.
func ReadRun(dir string) (Run, error) {
	path := filepath.Join(dir, "results.json")
	b, err := limits.ReadFile(path, limits.ResultsBytes)
	if err != nil {
		return Run{}, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return Run{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(r.Cases) == 0 {
		return Run{}, fmt.Errorf("%s: no case results (is it a lorafit experiment's results.json?)", path)
	}
	return Run{Dir: dir, Label: orNone(r.Weights.Name), Results: &r}, nil
}

// Comparison is what WriteComparison writes to comparison.json: per case,
// each run's test accuracy (null where a run lacks the case), and what
// differs between the runs besides their base weights.
type Comparison struct {
	Runs        []ComparedRun  `json:"runs"`
	Cases       []ComparedCase `json:"cases"`
	Differences []string       `json:"differences"`
}

// ComparedRun names one run of a Comparison.
type ComparedRun struct {
	Dir         string  `json:"dir"`
	Label       string  `json:"label"`
	Weights     Weights `json:"weights"`
	WallSeconds float64 `json:"wall_seconds"`
	// PeakRSSBytes is the run's own peak memory (0: not recorded, as by runs before it was).
	PeakRSSBytes int64  `json:"peak_rss_bytes,omitempty"`
	Command      string `json:"command"`
}

// ComparedCase is one case across the runs.
type ComparedCase struct {
	Case        int        `json:"case"`
	Description string     `json:"description"`
	Trainable   int        `json:"trainable_params"`
	Accuracy    []*float64 `json:"accuracy"` // one per run, in the runs' order
}

// Compare lines up the runs' cases. Labels that repeat get their
// directory appended, so every column is told apart.
func Compare(runs []Run) (*Comparison, error) {
	if len(runs) < 2 {
		return nil, fmt.Errorf("report: comparing needs at least two runs, got %d", len(runs))
	}
	count := map[string]int{}
	for _, r := range runs {
		count[r.Label]++
	}
	c := &Comparison{}
	for i := range runs {
		if count[runs[i].Label] > 1 {
			runs[i].Label += " (" + runs[i].Dir + ")"
		}
		r := runs[i].Results
		c.Runs = append(c.Runs, ComparedRun{Dir: runs[i].Dir, Label: runs[i].Label, Weights: r.Weights,
			WallSeconds: r.WallSeconds, PeakRSSBytes: r.PeakRSSBytes, Command: r.Command})
	}
	byCase := map[int]*ComparedCase{}
	for i, run := range runs {
		for _, cr := range run.Results.Cases {
			cc := byCase[cr.Case]
			if cc == nil {
				cc = &ComparedCase{Case: cr.Case, Description: cr.Description, Trainable: cr.Trainable,
					Accuracy: make([]*float64, len(runs))}
				byCase[cr.Case] = cc
			}
			if cc.Accuracy[i] != nil {
				return nil, fmt.Errorf("report: %s has case %d twice", run.Dir, cr.Case)
			}
			acc := cr.Accuracy
			cc.Accuracy[i] = &acc
		}
	}
	for _, cc := range byCase {
		c.Cases = append(c.Cases, *cc)
	}
	slices.SortFunc(c.Cases, func(a, b ComparedCase) int { return a.Case - b.Case })
	c.Differences = differences(runs)
	return c, nil
}

// differences lists what the runs do not share besides their base
// weights: anything listed here also moves the accuracies.
func differences(runs []Run) []string {
	fields := []struct {
		name string
		get  func(r *Results) string
	}{
		{"dataset", func(r *Results) string { return r.Data.Name }},
		{"training images", func(r *Results) string { return fmt.Sprint(r.Data.Train) }},
		{"test images", func(r *Results) string { return fmt.Sprint(r.Data.Test) }},
		{"image size", func(r *Results) string { return fmt.Sprint(r.Data.ImageSize) }},
		{"augmentation", func(r *Results) string { return fmt.Sprint(r.Data.Augment) }},
		{"epochs", func(r *Results) string { return fmt.Sprint(r.Budget.Epochs) }},
		{"batch", func(r *Results) string { return fmt.Sprint(r.Budget.Batch) }},
		{"optimizer", func(r *Results) string { return r.Budget.Optimizer }},
		{"learning rate", func(r *Results) string { return fmt.Sprintf("%g", r.Budget.LR) }},
		{"seed", func(r *Results) string { return fmt.Sprint(r.Budget.Seed) }},
		{"bf16 feature cache", func(r *Results) string { return fmt.Sprint(r.Cache != nil && r.Cache.BF16) }},
		{"quick run", func(r *Results) string { return fmt.Sprint(r.Caveat != "") }},
	}
	var out []string
	for _, f := range fields {
		vals := make([]string, len(runs))
		same := true
		for i, r := range runs {
			vals[i] = f.get(r.Results)
			same = same && vals[i] == vals[0]
		}
		if !same {
			out = append(out, f.name+": "+strings.Join(vals, " vs "))
		}
	}
	return out
}

// WriteComparison writes comparison.json, compare.png, compare.md and
// compare.html into dir, each atomically.
func WriteComparison(dir string, runs []Run) (*Comparison, error) {
	c, err := Compare(runs)
	if err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	png, err := renderPNG(10*vg.Inch, 4.6*vg.Inch, comparePlot(c))
	if err != nil {
		return nil, fmt.Errorf("report: compare.png: %w", err)
	}
	fig := figure{File: "compare.png", PNG: png, Wide: true,
		Caption: "Test accuracy per case, one bar per run."}
	d := compareDocument(dir, c, runs, fig)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"comparison.json", append(js, '\n')},
		{fig.File, fig.PNG},
		{"compare.md", markdown(d)},
		{"compare.html", htmlPage(d)},
	} {
		if err := writeAtomic(dir, f.name, f.data); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// AccuracyTable is the comparison's accuracies, one row per case: the
// case, each run's test accuracy and, for two runs, the change in points —
// the first columns of compare.md's table, for a terminal.
func (c *Comparison) AccuracyTable() (head []string, rows [][]string) {
	t := accuracyTable(c)
	n := len(c.Runs) + 1
	if len(c.Runs) == 2 {
		n++
	}
	head = append([]string{"test accuracy"}, t.Head[1:n]...)
	for _, r := range t.Rows {
		rows = append(rows, append([]string{r.Label}, r.Cells[:n-1]...))
	}
	return head, rows
}

// accuracyTable has a row per case: each run's accuracy first (what the
// comparison is for, visible without scrolling), then the change, the
// trainable parameters and what is trained.
func accuracyTable(c *Comparison) *table {
	t := &table{Head: []string{""}}
	for _, r := range c.Runs {
		t.Head = append(t.Head, r.Label)
	}
	delta := len(c.Runs) == 2
	if delta {
		t.Head = append(t.Head, "change (points)")
	}
	t.Head = append(t.Head, "trainable parameters", "what is trained")
	for _, cc := range c.Cases {
		rw := row{Label: caseName(cc.Case)}
		for _, a := range cc.Accuracy {
			if a == nil {
				rw.Cells = append(rw.Cells, none)
			} else {
				rw.Cells = append(rw.Cells, percent(*a))
			}
		}
		if delta {
			d := none
			if a, b := cc.Accuracy[0], cc.Accuracy[1]; a != nil && b != nil && isFinite(*a) && isFinite(*b) {
				d = fmt.Sprintf("%+.2f", 100*(*b-*a))
			}
			rw.Cells = append(rw.Cells, d)
		}
		rw.Cells = append(rw.Cells, Thousands(int64(cc.Trainable)), orNone(cc.Description))
		t.Rows = append(t.Rows, rw)
	}
	return t
}

func compareDocument(dir string, c *Comparison, runs []Run, fig figure) *document {
	labels := make([]string, len(c.Runs))
	for i, r := range c.Runs {
		labels[i] = r.Label
	}
	d := &document{Title: "The same cases on " + strings.Join(labels, " and ")}
	text := "Test accuracy of each case in each run; a run without a case shows —."
	if len(c.Runs) == 2 {
		text += " The change is the second run's accuracy minus the first's, in percentage points."
	}
	if len(c.Differences) == 0 {
		text += " Besides the base weights the runs are alike (data, budget, seed), so a difference is the backbone's."
	} else {
		text += " ⚠ Besides the base weights the runs differ in " + strings.Join(c.Differences, "; ") +
			": a difference in accuracy is not the backbone's alone."
	}
	d.Sections = append(d.Sections,
		section{Title: "Test accuracy", Text: text, Table: accuracyTable(c)},
		section{Title: "Plot", Figures: []figure{fig}})
	var groups []group
	for _, r := range runs {
		res := r.Results
		facts := []fact{
			{Label: "directory", Value: r.Dir, Code: true},
			{Label: "weights", Value: orNone(res.Weights.Spec), Code: true},
			{Label: "sha256", Value: shortSHA(res.Weights.SHA256), Code: res.Weights.SHA256 != ""},
			{Label: "data", Value: fmt.Sprintf("%s, %s train / %s test", orNone(res.Data.Name),
				Thousands(int64(res.Data.Train)), Thousands(int64(res.Data.Test)))},
			{Label: "budget", Value: fmt.Sprintf("%d epoch(s), batch %d, %s lr %g, seed %d", res.Budget.Epochs,
				res.Budget.Batch, orNone(res.Budget.Optimizer), res.Budget.LR, res.Budget.Seed)},
			{Label: "wall time", Value: duration(res.WallSeconds)},
		}
		facts = append(facts, peakFacts(res.PeakRSSBytes)...)
		if res.Command != "" {
			facts = append(facts, fact{Label: "command", Value: res.Command, Code: true})
		}
		if res.Weights.Random {
			facts = append(facts, fact{Label: "note", Value: "randomly initialized backbone"})
		}
		groups = append(groups, group{Title: r.Label, Facts: facts})
	}
	d.Sections = append(d.Sections, section{Title: "Runs", Groups: groups})
	links := []fact{{Label: "every number", Value: "comparison.json", Href: "comparison.json"}}
	for _, r := range runs {
		report := filepath.Join(r.Dir, "report.html")
		f := fact{Label: r.Label, Value: report, Code: true}
		if rel, err := relativeTo(dir, report); err == nil {
			f.Href = rel
		}
		links = append(links, f)
	}
	d.Sections = append(d.Sections, section{Title: "Files", Text: "The runs' own reports are next to their results.json.", Links: links})
	return d
}

// relativeTo is target's path relative to dir, for a link that keeps
// working when the two directories move together.
func relativeTo(dir, target string) (string, error) {
	ad, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	at, err := filepath.Abs(target)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(ad, at)
	return filepath.ToSlash(rel), err
}

// runColors tell the runs apart in compare.png (cases are on the x axis).
var runColors = []color.Color{
	color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, // grey: the first run, the baseline
	color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0x94, 0x67, 0xbd, 0xff},
}

// comparePlot is grouped bars: a group per case, a bar per run.
func comparePlot(c *Comparison) *plot.Plot {
	p := newPlot("test accuracy (%)")
	n := len(c.Runs)
	width := vg.Points(math.Max(6, 60/float64(n)))
	names := make([]string, len(c.Cases))
	for i, cc := range c.Cases {
		names[i] = caseName(cc.Case)
	}
	for j, r := range c.Runs {
		vals := make(plotter.Values, len(c.Cases))
		for i, cc := range c.Cases {
			if a := cc.Accuracy[j]; a != nil && isFinite(*a) {
				vals[i] = 100 * *a
			}
		}
		b, err := plotter.NewBarChart(vals, width)
		if err != nil {
			continue // no finite values: nothing to draw for this run
		}
		b.Color = runColors[j%len(runColors)]
		b.LineStyle.Width = 0
		b.Offset = width * vg.Length(float64(j)-float64(n-1)/2)
		p.Add(b)
		p.Legend.Add(r.Label, b)
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(names))-0.4
	p.Y.Min, p.Y.Max = 0, 115 // room for the legend
	p.Legend.Top = true
	p.Legend.TextStyle.Font = sans(11, false)
	return p
}
