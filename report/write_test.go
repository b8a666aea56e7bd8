package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// go test ./report/ -run TestWriteSample -write-sample DIR writes the
// sample report to DIR, for scripts/screenshot-report.sh.
var writeSample = flag.String("write-sample", "", "write the sample report into this directory")

func TestWriteSample(t *testing.T) {
	if *writeSample == "" {
		t.Skip("no -write-sample DIR")
	}
	if err := Write(*writeSample, sampleResults(true)); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", *writeSample)
}

// sampleResults looks like a real 4-case run on MNIST.
func sampleResults(random bool) *Results {
	rng := rand.New(rand.NewPCG(1, 2))
	classes := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	const total = 24_690_890
	r := &Results{
		Title:       "ResNet-50 fine-tuned on MNIST four ways",
		StartedAt:   time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC),
		WallSeconds: 5432.1,
		Command:     "lorafit experiment --weights random --epochs 1 --out runs/mnist",
		Environment: Env{Backend: "go (simplego)", Threads: 2, GoVersion: "go1.27.3", OS: "linux", Arch: "amd64",
			CPU: "AMD EPYC 7B13 64-Core Processor", Hostname: "ci-runner-7"},
		Weights: Weights{Spec: "random:42", Name: "random (torchvision init, seed 42)",
			SHA256: "9f2c1e0b7d3a4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6", Random: random},
		Data:           Data{Name: "MNIST", Train: 60000, Test: 10000, ImageSize: 28, ClassNames: classes},
		Budget:         Budget{Epochs: 1, Batch: 64, Optimizer: "adamw", LR: 1e-3, Seed: 42},
		FullModelBytes: 4*total + 61_344,
	}
	if random {
		r.Weights.Note = "no network: resnet50/IMAGENET1K_V2 could not be downloaded"
	}
	descs := []string{"fc + head 512,256 (backbone frozen)", `LoRA .*\.2\.conv3 r=8 α=16 + fc + head 512,256`,
		"LoRA every conv r=8 α=16 + fc + head 512,256", "full fine-tuning"}
	trainable := []int{1_182_986, 2_733_810, 4_216_458, total}
	accs := []float64{0.9412, 0.9781, 0.9856, 0.9903}
	for i := range 4 {
		c := CaseResult{
			Case: i + 1, Description: descs[i], Trainable: trainable[i], Total: total,
			Accuracy: accs[i], MeanLoss: 0.2 - 0.04*float64(i),
			AdapterDir: fmt.Sprintf("adapters/case%d", i+1),
			// fp32 plus a little safetensors header per tensor
			AdapterBytes: 4*int64(trainable[i]) + 8_192,
			TrainSeconds: 900 + 400*float64(i), TrainImgPerSec: 66.7 - 8*float64(i), EvalImgPerSec: 210.5,
		}
		c.Confusion = make([][]int, 10)
		c.PerClassAccuracy = make([]float64, 10)
		for tr := range 10 {
			c.Confusion[tr] = make([]int, 10)
			n := 950 + rng.IntN(180)
			wrong := int(float64(n) * (1 - accs[i]) * (0.5 + rng.Float64()))
			c.Confusion[tr][tr] = n - wrong
			for range wrong {
				p := rng.IntN(9)
				if p >= tr {
					p++
				}
				c.Confusion[tr][p]++
			}
			c.PerClassAccuracy[tr] = float64(n-wrong) / float64(n)
		}
		for s := range 50 {
			ep := float64(s+1) / 50
			loss := 2.3*math.Exp(-3*(1+float64(i))*ep) + 0.05 + 0.05*rng.Float64()
			c.History = append(c.History, Point{Step: (s + 1) * 19, Epoch: ep, Loss: loss,
				Accuracy: accs[i] - (accs[i]-0.1)*math.Exp(-4*(1+float64(i))*ep) - 0.02*rng.Float64()})
		}
		r.Cases = append(r.Cases, c)
	}
	return r
}

func TestWrite(t *testing.T) {
	for _, random := range []bool{true, false} {
		dir := t.TempDir()
		r := sampleResults(random)
		if err := Write(dir, r); err != nil {
			t.Fatal(err)
		}
		pngs := []string{"loss.png", "accuracy.png", "cases.png",
			"confusion_case1.png", "confusion_case2.png", "confusion_case3.png", "confusion_case4.png"}
		checkFiles(t, dir, append([]string{"results.json", "report.md", "report.html"}, pngs...))
		for _, name := range pngs {
			checkPNG(t, filepath.Join(dir, name))
		}

		var back Results
		if err := json.Unmarshal(read(t, dir, "results.json"), &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&back, r) {
			t.Errorf("results.json does not round-trip:\n got %+v\nwant %+v", back, *r)
		}

		html := string(read(t, dir, "report.html"))
		md := string(read(t, dir, "report.md"))
		checkSelfContained(t, html)
		for _, want := range []string{
			"2,733,810", "24,690,890", "11.07%", // trainable, total, trainable share of case 2
			"97.81%", "98,824,904 B (94.25 MiB)", "10,943,432", "10.44", // accuracy, full model, case 2 adapter
			"1300.0", "42.7", "210.5", // train s, train img/s, eval img/s
			"9f2c1e0b7d3a", "MNIST", "28×28", "adamw", "go1.27.3", "AMD EPYC 7B13", "1h30m32s (5432 s)",
			"adapters/case3/", "Per-class", "confusion_case4.png", "loss.png",
		} {
			if !strings.Contains(html, want) {
				t.Errorf("report.html lacks %q", want)
			}
			if !strings.Contains(strings.ToLower(md), strings.ToLower(want)) {
				t.Errorf("report.md lacks %q", want)
			}
		}
		for _, want := range []string{
			"| case 1 | case 2 | case 3 | case 4 |",
			"| **trainable parameters** | 1,182,986 | 2,733,810 | 4,216,458 | 24,690,890 |",
			"| **test accuracy** | 94.12% | 97.81% | 98.56% | 99.03% |",
			"| **adapter size (MiB)** | 4.52 | 10.44 | 16.09 | 94.20 |",
			"| **adapter / full model (94.25 MiB)** | 4.80% | 11.07% | 17.07% | 99.95% |",
			"`LoRA .*\\.2\\.conv3 r=8 α=16 + fc + head 512,256`",
			"![cases.png](cases.png)",
			"[adapters/case1/](adapters/case1/)",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("report.md lacks %q", want)
			}
		}
		for name, doc := range map[string]string{"report.md": md, "report.html": html} {
			if got := strings.Contains(doc, "backbone is randomly initialized"); got != random {
				t.Errorf("%s: random banner shown = %v, want %v", name, got, random)
			}
		}
		if random && !strings.HasPrefix(md, "# "+r.Title+"\n\n> **⚠ backbone is randomly initialized") {
			t.Errorf("report.md does not open with the title and the banner:\n%.200s", md)
		}
	}
}

// Cases 2 and 4 only; case 4 has no history, case 2 no confusion matrix
// nor per-class accuracy.
func TestWriteSubset(t *testing.T) {
	r := sampleResults(false)
	c2, c4 := r.Cases[1], r.Cases[3]
	c2.Confusion, c2.PerClassAccuracy = nil, nil
	c4.History = nil
	r.Cases = []CaseResult{c4, c2} // any order: shown by number

	dir := t.TempDir()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, []string{"results.json", "report.md", "report.html",
		"loss.png", "accuracy.png", "cases.png", "confusion_case4.png"})
	for _, name := range []string{"loss.png", "accuracy.png", "cases.png", "confusion_case4.png"} {
		checkPNG(t, filepath.Join(dir, name))
	}
	md := string(read(t, dir, "report.md"))
	for _, want := range []string{"|  | case 2 | case 4 |", "| class | test images | case 4 |",
		"No training curve was recorded for case 4."} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	checkSelfContained(t, string(read(t, dir, "report.html")))

	// No history, confusion or per-class numbers at all: plots and
	// tables that need them are left out, the rest still written.
	for i := range r.Cases {
		r.Cases[i].History, r.Cases[i].Confusion, r.Cases[i].PerClassAccuracy = nil, nil, nil
	}
	dir = t.TempDir()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, []string{"results.json", "report.md", "report.html", "cases.png"})
	if md := string(read(t, dir, "report.md")); !strings.Contains(md, "No case recorded a training curve") ||
		strings.Contains(md, "Per-class") {
		t.Errorf("report.md without curves or per-class numbers:\n%s", md)
	}

	// No case at all.
	dir = t.TempDir()
	if err := Write(dir, &Results{Title: "empty"}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, []string{"results.json", "report.md", "report.html"})

	// Degenerate numbers (all zero, a single curve point) still draw.
	r = &Results{Title: "zeros", Cases: []CaseResult{{Case: 3},
		{Case: 1, Confusion: [][]int{{0, 0}, {0, 0}}, History: []Point{{Epoch: 0.5, Loss: 1, Accuracy: 0.5}}}}}
	if err := Write(t.TempDir(), r); err != nil {
		t.Fatal(err)
	}
}

// A diverged case (NaN loss) must not cost the report: JSON gets null,
// the tables "—", the plots skip the points.
func TestWriteNonFinite(t *testing.T) {
	r := sampleResults(false)
	r.Cases[1].MeanLoss = math.NaN()
	r.Cases[1].Accuracy = math.Inf(1)
	r.Cases[1].History[30].Loss = math.NaN()
	dir := t.TempDir()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(read(t, dir, "results.json"), &back); err != nil {
		t.Fatal(err)
	}
	if back.Cases[1].MeanLoss != 0 || back.Cases[1].History[30].Loss != 0 || back.Cases[1].History[31] != r.Cases[1].History[31] ||
		!back.StartedAt.Equal(r.StartedAt) || back.Cases[0].MeanLoss != r.Cases[0].MeanLoss {
		t.Errorf("results.json: %+v", back.Cases[1])
	}
	if !math.IsNaN(r.Cases[1].MeanLoss) {
		t.Error("Write changed its argument")
	}
	if md := string(read(t, dir, "report.md")); !strings.Contains(md, "| **test loss** | 0.2000 | — | 0.1200 | 0.0800 |") {
		t.Errorf("report.md:\n%s", md)
	}
	checkPNG(t, filepath.Join(dir, "loss.png"))
}

func TestWriteErrors(t *testing.T) {
	parent := t.TempDir()
	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(file, "out"), sampleResults(true)); err == nil {
		t.Error("writing under a regular file: no error")
	}
	checkFiles(t, parent, []string{"file"})

	r := sampleResults(false)
	r.Cases = append(r.Cases, r.Cases[0])
	if err := Write(t.TempDir(), r); err == nil {
		t.Error("duplicate case: no error")
	}
	if err := Write(t.TempDir(), nil); err == nil {
		t.Error("nil results: no error")
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Thousands(0), "0"},
		{Thousands(999), "999"},
		{Thousands(1000), "1,000"},
		{Thousands(2733810), "2,733,810"},
		{Thousands(-1234567), "-1,234,567"},
		{mib(102_760_904), "98.00 MiB"},
		{bytesAndMiB(1 << 20), "1,048,576 B (1.00 MiB)"},
		{bytesAndMiB(0), none},
		{percent(0.106975), "10.70%"},
		{percent(1), "100.00%"},
		{percent(0.0000123), "0.0012%"},
		{percent(0), "0.00%"},
		{percent(ratio(1, 0)), none},
		{fixed(12.345, 1), "12.3"},
		{fixed(0, 1), none},
		{duration(59.6), "1m0s (60 s)"},
		{compact(2_733_810), "2.73M"},
		{compact(950), "950"},
		{shortMiB(0.5), "0.50"},
		{shortMiB(98.2), "98.2"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// checkFiles fails unless dir holds exactly names (so no temp file is
// left behind either).
func checkFiles(t *testing.T, dir string, names []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	if len(got) != len(names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
		return
	}
	for _, g := range got {
		if !want[g] {
			t.Errorf("%s holds %q, want %q", dir, got, names)
			return
		}
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 600 || b.Dy() < 400 || b.Dx() > 4000 || b.Dy() > 4000 {
		t.Errorf("%s: %dx%d pixels", path, b.Dx(), b.Dy())
	}
	if len(data) < 10_000 {
		t.Errorf("%s: only %d bytes", path, len(data))
	}
}

var (
	externalRef = regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?\s*(https?:|//)|url\(|@import|<script|<link`)
	imgSrc      = regexp.MustCompile(`src="([^"]{0,40})`)
)

// checkSelfContained fails if the page would fetch anything.
func checkSelfContained(t *testing.T, html string) {
	t.Helper()
	if m := externalRef.FindString(html); m != "" {
		t.Errorf("report.html refers to an external resource: %q", m)
	}
	srcs := imgSrc.FindAllStringSubmatch(html, -1)
	if len(srcs) == 0 {
		t.Error("report.html embeds no image")
	}
	for _, m := range srcs {
		if !strings.HasPrefix(m[1], "data:image/png;base64,") {
			t.Errorf("report.html: img src %q is not embedded", m[1])
		}
	}
}

func read(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestResumedAndQuickRuns: a quick run's caveat, and which cases were kept
// or resumed, appear in the printed table, report.md and report.html.
func TestResumedAndQuickRuns(t *testing.T) {
	r := sampleResults(true)
	r.Caveat = "a quick run trains each case for 31 steps"
	r.Cases[0].Kept = true
	r.Cases[1].ResumedAtStep = 412
	var table bytes.Buffer
	Table(&table, r)
	if !strings.Contains(table.String(), "NOTE: a quick run trains each case for 31 steps\n") ||
		!regexp.MustCompile(`(?m)^run\s+kept\s+resumed@412\s+whole\s+whole$`).MatchString(table.String()) {
		t.Errorf("table:\n%s", table.String())
	}
	dir := t.TempDir()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.md", "report.html"} {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"a quick run trains each case for 31 steps", "resumed@412", "kept"} {
			if !strings.Contains(string(raw), w) {
				t.Errorf("%s lacks %q", f, w)
			}
		}
	}
	// A run without --resume shows no such row.
	table.Reset()
	Table(&table, sampleResults(true))
	if strings.Contains(table.String(), "\nrun ") {
		t.Errorf("a whole run's table has a run row:\n%s", table.String())
	}
}
