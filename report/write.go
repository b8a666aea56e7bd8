package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"

	"github.com/lorafit/lorafit/fsutil"
)

// Write writes results.json, the PNG plots, report.md and report.html into
// dir (created if needed). Each file is written atomically, so a crash
// never leaves half a file. results.json goes first: if a plot cannot be
// drawn, the numbers are still saved and the error says what failed.
//
// Accuracies in r are fractions in [0,1]. Cases may be any subset, in any
// order (they are shown by case number); empty histories, per-class
// accuracies or confusion matrices just leave out their plots and tables.
func Write(dir string, r *Results) error {
	if r == nil {
		return errors.New("report: nil results")
	}
	cases := slices.Clone(r.Cases)
	slices.SortStableFunc(cases, func(a, b CaseResult) int { return a.Case - b.Case })
	for i := 1; i < len(cases); i++ {
		if cases[i].Case == cases[i-1].Case {
			return fmt.Errorf("report: case %d appears twice", cases[i].Case)
		}
	}

	js, err := marshalResults(r)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := writeAtomic(dir, "results.json", append(js, '\n')); err != nil {
		return err
	}

	// Everything else is rendered in memory first, then written.
	figs, err := renderFigures(r, cases)
	if err != nil {
		return fmt.Errorf("report: %w (results.json was written)", err)
	}
	d := buildDocument(r, cases, figs)
	for _, f := range figs {
		if err := writeAtomic(dir, f.File, f.PNG); err != nil {
			return err
		}
	}
	if err := writeAtomic(dir, "report.md", markdown(d)); err != nil {
		return err
	}
	return writeAtomic(dir, "report.html", htmlPage(d))
}

// marshalResults is json.MarshalIndent, except that NaN and ±Inf (a
// diverged loss, say), which JSON cannot hold, become null instead of
// costing the whole report.
func marshalResults(r *Results) ([]byte, error) {
	js, err := json.MarshalIndent(r, "", "  ")
	var unsupported *json.UnsupportedValueError
	if !errors.As(err, &unsupported) {
		return js, err
	}
	clean := reflect.New(reflect.TypeFor[Results]()).Elem()
	replaceNonFinite(clean, reflect.ValueOf(r).Elem())
	js, err = json.MarshalIndent(clean.Interface(), "", "  ")
	mark, _ := json.Marshal(nonFinite)
	return bytes.ReplaceAll(js, mark, []byte("null")), err
}

// nonFinite marks, in a copy of the results, the values to write as null.
const nonFinite = math.MaxFloat64

// replaceNonFinite deep-copies src into dst with every NaN or ±Inf
// float64 replaced by nonFinite.
func replaceNonFinite(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Float64:
		f := src.Float()
		if !isFinite(f) {
			f = nonFinite
		}
		dst.SetFloat(f)
	case reflect.Struct:
		dst.Set(src) // unexported fields (time.Time's) hold no floats
		for i := range src.NumField() {
			if src.Type().Field(i).IsExported() {
				replaceNonFinite(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Slice:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		dst.Set(reflect.MakeSlice(src.Type(), src.Len(), src.Len()))
		for i := range src.Len() {
			replaceNonFinite(dst.Index(i), src.Index(i))
		}
	default:
		dst.Set(src)
	}
}

// figure is one PNG of the report.
type figure struct {
	File    string
	Caption string
	PNG     []byte
	Wide    bool // spans the page width in report.html
}

// renderFigures draws every plot the data allows.
func renderFigures(r *Results, cases []CaseResult) ([]figure, error) {
	var figs []figure
	add := func(file, caption string, wide bool, w, h vg.Length, ps ...*plot.Plot) error {
		png, err := renderPNG(w, h, ps...)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		figs = append(figs, figure{File: file, Caption: caption, PNG: png, Wide: wide})
		return nil
	}
	if len(cases) > 0 {
		err := add("cases.png", "Test accuracy, trainable parameters and adapter size on disk, per case (log scales for the last two).",
			true, 14*vg.Inch, 4.6*vg.Inch, casesPlots(r, cases)...)
		if err != nil {
			return nil, err
		}
	}
	curves := []struct {
		file, title, ylabel, caption string
		legendTop                    bool // where the curves are not, late in training
		y                            func(Point) float64
	}{
		{"loss.png", "training loss", "loss (running mean)", "Training loss against epoch.", true,
			func(p Point) float64 { return p.Loss }},
		{"accuracy.png", "training accuracy", "accuracy % (running mean)", "Running training accuracy against epoch.", false,
			func(p Point) float64 { return 100 * p.Accuracy }},
	}
	for _, c := range curves {
		p, err := curvePlot(cases, c.title, c.ylabel, c.legendTop, c.y)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
		if p == nil {
			continue // no case recorded a history
		}
		if c.file == "accuracy.png" {
			p.Y.Max = math.Max(p.Y.Max, 100) // a full scale, not a zoom on the top
		}
		if err := add(c.file, c.caption, false, 7*vg.Inch, 4.6*vg.Inch, p); err != nil {
			return nil, err
		}
	}
	for _, c := range cases {
		if len(c.Confusion) == 0 {
			continue
		}
		p, err := confusionPlot(c, r.Data.ClassNames)
		if err != nil {
			return nil, err
		}
		file := fmt.Sprintf("confusion_case%d.png", c.Case)
		caption := fmt.Sprintf("Case %d: test images by true (rows) and predicted (columns) class; color grows with √count.", c.Case)
		if err := add(file, caption, false, 7*vg.Inch, 6.4*vg.Inch, p); err != nil {
			return nil, err
		}
	}
	return figs, nil
}

// writeAtomic writes data to dir/name through a temporary file renamed
// into place, so readers see the old file or the new one, never a mix.
func writeAtomic(dir, name string, data []byte) error {
	if err := fsutil.WriteBytes(filepath.Join(dir, name), data); err != nil {
		return fmt.Errorf("report: writing %s: %w", name, err)
	}
	return nil
}
