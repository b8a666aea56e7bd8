package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// dpi makes plots about twice as many pixels as they are shown in
// report.html, so they stay sharp on high-density screens.
const dpi = 150

// caseColors gives each case number the same color in every plot.
var caseColors = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, // case 1: blue
	color.RGBA{0xff, 0x7f, 0x0e, 0xff}, // case 2: orange
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, // case 3: green
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, // case 4: red
	color.RGBA{0x94, 0x67, 0xbd, 0xff},
	color.RGBA{0x8c, 0x56, 0x4b, 0xff},
}

var fullModelColor = color.RGBA{0x7f, 0x7f, 0x7f, 0xff}

func caseColor(n int) color.Color {
	i := (n - 1) % len(caseColors)
	if i < 0 {
		i += len(caseColors)
	}
	return caseColors[i]
}

// sans replaces gonum's default serif face: plots then match the page.
func sans(size float64, bold bool) font.Font {
	f := font.Font{Typeface: "Liberation", Variant: "Sans", Size: vg.Points(size)}
	if bold {
		f.Weight = xfont.WeightBold
	}
	return f
}

// newPlot is plot.New with type large enough to read when report.html
// shows the PNG at about half its pixel size.
func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = sans(15, true)
	p.Title.Padding = vg.Points(8)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = sans(13, false)
		a.Tick.Label.Font = sans(12, false)
	}
	p.Legend.TextStyle.Font = sans(12, false)
	p.Legend.ThumbnailWidth = vg.Points(24)
	return p
}

// FullCase is the number of the full fine-tuning reference row (every
// parameter trained), which the founding study's four cases are compared to
// (not 0: the zero value of a result that names no case).
const FullCase = 5

// CaseName names a case in tables and logs: "case 2", "full FT".
func CaseName(n int) string { return caseName(n) }

func caseName(n int) string {
	if n == FullCase {
		return "full FT"
	}
	return fmt.Sprintf("case %d", n)
}

// renderPNG draws plots tiled in one row onto a w×h canvas; rendering
// panics (gonum panics on some degenerate data) come back as errors so a
// long experiment never dies while writing its report.
func renderPNG(w, h vg.Length, plots ...*plot.Plot) (png []byte, err error) {
	defer func() {
		if e := recover(); e != nil {
			err = fmt.Errorf("drawing plot: %v", e)
		}
	}()
	c := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi))
	dc := draw.New(c)
	if len(plots) == 1 {
		plots[0].Draw(dc)
	} else {
		tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Centimeter, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
		canvases := plot.Align([][]*plot.Plot{plots}, tiles, dc)
		for i, p := range plots {
			p.Draw(canvases[0][i])
		}
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// curvePlot is the training curve y(point) of every case with a history;
// it returns nil when no case has one, so the caller skips the file.
func curvePlot(cases []CaseResult, title, ylabel string, legendTop bool, y func(Point) float64) (*plot.Plot, error) {
	p := newPlot(title)
	p.Legend.Top = legendTop
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(6), vg.Points(4)
	if legendTop {
		p.Legend.YOffs = -vg.Points(4)
	}
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	lines := 0
	for _, c := range cases {
		var xys plotter.XYs
		for _, pt := range c.History {
			v := y(pt)
			if isFinite(pt.Epoch) && isFinite(v) {
				xys = append(xys, plotter.XY{X: pt.Epoch, Y: v})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color = caseColor(c.Case)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(caseName(c.Case), l)
		lines++
	}
	if lines == 0 {
		return nil, nil
	}
	p.X.Min = math.Min(p.X.Min, 0)
	p.Y.Min = math.Min(p.Y.Min, 0)
	return p, nil
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// casesPlots compares the cases side by side: test accuracy, trainable
// parameters and size on disk, the last two on log scales because LoRA
// and full fine-tuning differ by orders of magnitude.
func casesPlots(r *Results, cases []CaseResult) []*plot.Plot {
	names := make([]string, len(cases))
	colors := make([]color.Color, len(cases))
	acc := make([]float64, len(cases))
	params := make([]float64, len(cases))
	sizes := make([]float64, len(cases))
	for i, c := range cases {
		names[i] = caseName(c.Case)
		colors[i] = caseColor(c.Case)
		acc[i] = 100 * c.Accuracy
		params[i] = float64(c.Trainable)
		sizes[i] = mebibytes(c.AdapterBytes)
	}

	pa := barPlot("test accuracy (%)", names, colors, acc, func(v float64) string {
		return fmt.Sprintf("%.2f", v)
	})
	pa.Y.Min, pa.Y.Max = 0, 109 // room for the value labels

	pp := barPlot("trainable parameters", names, colors, params, compact)
	logAxis(pp, params, compact)

	sizeNames, sizeColors := names, colors
	if r.FullModelBytes > 0 {
		sizeNames = append(append([]string{}, names...), "full model")
		sizeColors = append(append([]color.Color{}, colors...), fullModelColor)
		sizes = append(sizes, mebibytes(r.FullModelBytes))
	}
	ps := barPlot("adapter vs full model (MiB)", sizeNames, sizeColors, sizes, shortMiB)
	logAxis(ps, sizes, func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) })
	return []*plot.Plot{pa, pp, ps}
}

func barPlot(title string, names []string, colors []color.Color, vals []float64, label func(float64) string) *plot.Plot {
	p := newPlot(title)
	p.Add(&bars{vals: vals, colors: colors, label: label})
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(vals))-0.4
	if len(names) > 6 {
		p.X.Tick.Label.Rotation = math.Pi / 6
		p.X.Tick.Label.XAlign = draw.XRight
	}
	p.Y.Min = 0
	return p
}

// logAxis puts p's y axis on a log scale spanning whole decades around
// the positive values, with headroom above the tallest bar for its label.
func logAxis(p *plot.Plot, vals []float64, label func(float64) string) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if v > 0 && isFinite(v) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 1) { // nothing positive: keep the linear axis
		return
	}
	p.Y.Scale = plot.LogScale{}
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo/3))) // smallest bar stays visible
	p.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi*4)))
	p.Y.Tick.Marker = decades{label: label}
}

// decades ticks a log axis at powers of ten, labelled with label.
type decades struct{ label func(float64) string }

func (d decades) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		v := math.Pow(10, e)
		if v >= min*0.999 && v <= max*1.001 {
			ts = append(ts, plot.Tick{Value: v, Label: d.label(v)})
		}
		for k := 2.0; k < 10; k++ {
			if m := k * v; m > min && m < max {
				ts = append(ts, plot.Tick{Value: m})
			}
		}
	}
	return ts
}

// bars is a bar chart that also works on a log axis (gonum's BarChart
// draws from 0, which a log scale cannot place) and writes each value
// above its bar.
type bars struct {
	vals   []float64
	colors []color.Color
	label  func(float64) string
}

func (b *bars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	width := (trX(1) - trX(0)) * 0.6
	base := math.Max(0, p.Y.Min)
	sty := p.X.Tick.Label
	sty.Rotation = 0
	sty.XAlign, sty.YAlign = draw.XCenter, draw.YBottom
	for i, v := range b.vals {
		if !isFinite(v) || v <= base {
			continue
		}
		x := trX(float64(i))
		y0, y1 := trY(base), trY(v)
		rect := []vg.Point{{X: x - width/2, Y: y0}, {X: x - width/2, Y: y1}, {X: x + width/2, Y: y1}, {X: x + width/2, Y: y0}}
		c.FillPolygon(b.colors[i], c.ClipPolygonY(rect))
		c.FillText(sty, vg.Point{X: x, Y: y1 + vg.Points(2)}, b.label(v))
	}
}

func (b *bars) DataRange() (xmin, xmax, ymin, ymax float64) {
	ymax = math.Inf(-1)
	for _, v := range b.vals {
		if isFinite(v) {
			ymax = math.Max(ymax, v)
		}
	}
	return 0, float64(len(b.vals) - 1), 0, ymax
}

// confusionPlot is an n×n heat map of counts[true][predicted], true class
// 0 at the top as in the usual printed matrices. Color follows √count so
// the few mistakes stay visible next to the large diagonal.
func confusionPlot(c CaseResult, classes []string) (*plot.Plot, error) {
	n := len(c.Confusion)
	g := &confusionGrid{counts: c.Confusion, n: n}
	for _, row := range c.Confusion {
		if len(row) != n {
			return nil, fmt.Errorf("case %d: confusion matrix is not square", c.Case)
		}
	}
	pal := ramp{}
	h := plotter.NewHeatMap(g, pal)
	if !(h.Max > h.Min) { // all equal: give the palette a range
		h.Min, h.Max = 0, math.Max(1, h.Max)
	}

	p := newPlot(caseName(c.Case) + " — confusion matrix (test split)")
	p.X.Label.Text = "predicted"
	p.Y.Label.Text = "true"
	p.X.Padding, p.Y.Padding = 0, 0
	p.Add(h)

	var xt, yt plot.ConstantTicks
	long := false
	for i := range n {
		name := className(classes, i)
		long = long || len([]rune(name)) > 3
		xt = append(xt, plot.Tick{Value: float64(i), Label: name})
		yt = append(yt, plot.Tick{Value: float64(n - 1 - i), Label: name})
	}
	p.X.Tick.Marker, p.Y.Tick.Marker = xt, yt
	if long {
		p.X.Tick.Label.Rotation = math.Pi / 4
		p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	}

	if n <= 20 { // beyond that the numbers no longer fit in the cells
		var xyl plotter.XYLabels
		var styles []text.Style
		size := 11.0
		if n > 12 {
			size = 8
		}
		for t := range n {
			for pr := range n {
				xyl.XYs = append(xyl.XYs, plotter.XY{X: float64(pr), Y: float64(n - 1 - t)})
				xyl.Labels = append(xyl.Labels, fmt.Sprint(c.Confusion[t][pr]))
				col := color.Color(color.Black)
				if z := g.Z(pr, n-1-t); (z-h.Min)/(h.Max-h.Min) > 0.55 {
					col = color.White
				}
				if c.Confusion[t][pr] == 0 {
					col = color.Gray{0xb0}
				}
				styles = append(styles, text.Style{
					Color: col, Font: sans(size, false),
					XAlign: draw.XCenter, YAlign: draw.YCenter, Handler: plot.DefaultTextHandler,
				})
			}
		}
		l, err := plotter.NewLabels(xyl)
		if err != nil {
			return nil, err
		}
		l.TextStyle = styles
		p.Add(l)
	}
	p.X.Min, p.X.Max = -0.5, float64(n)-0.5
	p.Y.Min, p.Y.Max = -0.5, float64(n)-0.5
	return p, nil
}

func className(classes []string, i int) string {
	if i < len(classes) && classes[i] != "" {
		return classes[i]
	}
	return fmt.Sprint(i)
}

// confusionGrid shows counts[true][pred] with true class 0 on the top row.
type confusionGrid struct {
	counts [][]int
	n      int
}

func (g *confusionGrid) Dims() (c, r int) { return g.n, g.n }
func (g *confusionGrid) Z(c, r int) float64 {
	return math.Sqrt(float64(max(0, g.counts[g.n-1-r][c])))
}
func (g *confusionGrid) X(c int) float64 { return float64(c) }
func (g *confusionGrid) Y(r int) float64 { return float64(r) }

// ramp is a white-to-dark-blue palette: light cells read as "few".
type ramp struct{}

func (ramp) Colors() []color.Color {
	const n = 256
	from := [3]float64{0xf7, 0xfb, 0xff}
	to := [3]float64{0x08, 0x30, 0x6b}
	cs := make([]color.Color, n)
	for i := range cs {
		t := float64(i) / (n - 1)
		mix := func(k int) uint8 { return uint8(math.Round(from[k] + t*(to[k]-from[k]))) }
		cs[i] = color.RGBA{mix(0), mix(1), mix(2), 0xff}
	}
	return cs
}
