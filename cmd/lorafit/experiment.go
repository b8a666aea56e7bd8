package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/weights"
)

func init() {
	verbs["experiment"] = verb{
		summary: "reproduce the founding study: ResNet-50 fine-tuned on MNIST four ways, with a report",
		usage:   "experiment [--cases 1,2,3,4] [--weights auto] [--data mnist] [--epochs 1] [--quick] [--out DIR]",
		run:     runExperiment,
	}
}

type experimentFlags struct {
	trainFlags
	cases, weights, out, backend string
	quick                        bool
}

func runExperiment(fs *flag.FlagSet, args []string, out io.Writer) error {
	var f experimentFlags
	f.trainFlags.register(fs)
	fs.StringVar(&f.cases, "cases", "1,2,3,4", "which cases of the founding study to run")
	fs.StringVar(&f.weights, "weights", "auto", "base weights: auto (cached or downloaded resnet50/IMAGENET1K_V2, else random init with a warning), a registry name, a file, or random[:SEED]")
	fs.StringVar(&f.out, "out", "", "output directory (default runs/<timestamp>)")
	fs.StringVar(&f.backend, "backend", "", "GoMLX backend (default $GOMLX_BACKEND or go)")
	fs.BoolVar(&f.quick, "quick", false, "a quick run: 2,000 training and 1,000 test images")
	fs.BoolVar(&f.resume, "resume", false, "continue an interrupted run in --out: finished cases are kept, the interrupted one resumes from its checkpoint")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	cases, err := parseCases(f.cases)
	if err != nil {
		return err
	}
	if f.quick {
		f.limitTrain, f.limitTest = orDefault(f.limitTrain, 2000), orDefault(f.limitTest, 1000)
	}
	if f.resume && f.out == "" {
		return usageErrorf("--resume needs the --out directory of the run to continue")
	}
	started := time.Now()
	if f.out == "" {
		f.out = filepath.Join("runs", started.Format("20060102-150405"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	b, err := backend.New(backend.Resolve(f.backend))
	if err != nil {
		return err
	}
	sd, src, note, err := experimentWeights(ctx, f.weights, f.seed)
	if err != nil {
		return err
	}
	if src.Random {
		banner := fmt.Sprintf("WARNING: the backbone is randomly initialized (%s): %s. Accuracies are not comparable to the founding study's, which fine-tuned ImageNet weights.", src, note)
		fmt.Fprintln(errOut, banner)
	}
	trainSet, testSet, err := f.loadData()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	res := &report.Results{
		StartedAt: started,
		Command:   strings.TrimSpace("lorafit experiment " + strings.Join(args, " ")),
		Environment: report.Env{Backend: backend.Resolve(f.backend), Threads: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
			OS: runtime.GOOS, Arch: runtime.GOARCH, CPU: cpuModel()},
		Weights: report.Weights{Spec: src.Spec, SHA256: src.SHA256, Random: src.Random, Note: note},
		Data: report.Data{Name: datasetName(trainSet.Name), Train: trainSet.Len(), Test: testSet.Len(), ImageSize: f.imageSize,
			Augment: f.augment, ClassNames: trainSet.ClassNames},
		Budget: report.Budget{Epochs: f.epochs, Batch: f.batch, Optimizer: f.optimizer, LR: f.lr, Seed: f.seed},
	}
	res.Environment.Hostname, _ = os.Hostname()
	res.Weights.Name = src.String()
	if src.Registry != nil {
		res.Weights.Name = src.Registry.Name
	}
	res.Title = fmt.Sprintf("LoRA fine-tuning of ResNet-50 on %s: the four cases", res.Data.Name)
	if src.Random {
		res.Title += " (random-init backbone)"
	}
	for _, n := range cases {
		cr, fullBytes, err := runCase(ctx, b, n, sd, src, trainSet, testSet, &f)
		if err != nil {
			return fmt.Errorf("case %d: %w", n, err)
		}
		res.Cases = append(res.Cases, *cr)
		if fullBytes > res.FullModelBytes {
			res.FullModelBytes = fullBytes
		}
	}
	res.WallSeconds = time.Since(started).Seconds()
	if err := report.Write(f.out, res); err != nil {
		return err
	}
	printTable(out, res)
	fmt.Fprintf(out, "\nwrote %s (results.json, report.md, report.html, plots, adapters) in %s\n",
		f.out, time.Since(started).Round(time.Second))
	return nil
}

// writeJSON writes v indented, atomically (temp file + rename).
func writeJSON(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// datasetName drops the split from a dataset's name ("mnist/train[:2000]"
// is "mnist"): the report names splits itself.
func datasetName(name string) string {
	base, _, _ := strings.Cut(name, "/")
	return base
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

func parseCases(s string) ([]int, error) {
	var cases []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || classifier.Cases[n].NumClasses == 0 {
			return nil, usageErrorf("--cases %q: want a comma list of 1 to 4", s)
		}
		cases = append(cases, n)
	}
	if len(cases) == 0 {
		return nil, usageErrorf("--cases is empty")
	}
	return cases, nil
}

// experimentWeights resolves --weights for the experiment. "auto" is the
// founding study's base (resnet50/IMAGENET1K_V2) when it is cached or can
// be downloaded, and otherwise random init — said loudly, never silently.
func experimentWeights(ctx context.Context, spec string, seed uint64) (*checkpoint.StateDict, *weights.Source, string, error) {
	opts := weights.OpenOptions{Arch: "resnet50", Download: true, Progress: errOut}
	if spec != "auto" {
		sd, src, err := weights.Open(ctx, spec, opts)
		return sd, src, "", err
	}
	sd, src, err := weights.Open(ctx, "resnet50/IMAGENET1K_V2", opts)
	if err == nil {
		return sd, src, "", nil
	}
	if ctx.Err() != nil {
		return nil, nil, "", ctx.Err()
	}
	note := "resnet50/IMAGENET1K_V2 could not be had (" + firstLine(err.Error()) + ")"
	sd, src, err = weights.Open(ctx, fmt.Sprintf("random:%d", seed), opts)
	return sd, src, note, err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// runCase trains and evaluates one case and saves its adapter. A finished
// case found in the output directory (with --resume) is reused.
func runCase(ctx context.Context, b compute.Backend, n int, sd *checkpoint.StateDict, src *weights.Source,
	trainSet, testSet *data.Dataset, f *experimentFlags) (*report.CaseResult, int64, error) {
	dir := filepath.Join(f.out, fmt.Sprintf("case%d", n))
	resultFile := filepath.Join(dir, "result.json")
	spec, err := classifier.Case(n)
	if err != nil {
		return nil, 0, err
	}
	spec.NumClasses = trainSet.NumClasses()
	base, err := classifier.BaseFromStateDict(sd, "", src.Spec)
	if err != nil {
		return nil, 0, err
	}
	m, err := classifier.New(base, spec)
	if err != nil {
		return nil, 0, err
	}
	fullBytes, err := fullModelBytes(m)
	if err != nil {
		return nil, 0, err
	}
	if f.resume {
		if raw, err := os.ReadFile(resultFile); err == nil {
			var cr report.CaseResult
			if err := json.Unmarshal(raw, &cr); err != nil {
				return nil, 0, fmt.Errorf("%s: %w", resultFile, err)
			}
			slog.Info("case already finished, kept", "case", n, "accuracy", cr.Accuracy)
			return &cr, fullBytes, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	if err := m.Init(f.seed); err != nil {
		return nil, 0, err
	}
	params := m.Params()
	cr := &report.CaseResult{Case: n, Description: describe(spec), Trainable: params.Trainable, Total: params.Total,
		AdapterParts: map[string]int64{}}
	for _, mp := range params.Modules {
		part := mp.Kind // "lora"
		if mp.Kind == "saved" {
			part, _, _ = strings.Cut(mp.Module, ".") // "fc", "head"
		}
		cr.AdapterParts[part] += 4 * int64(mp.Params) // fp32
	}
	fmt.Fprintf(errOut, "\n== case %d: %s\n   %s\n", n, cr.Description, params)
	if err := f.fitAndSave(ctx, b, m, src, trainSet, testSet, dir, cr); err != nil {
		if errors.Is(err, train.ErrInterrupted) {
			return nil, 0, fmt.Errorf("%w\n  continue with: lorafit experiment --resume --out %s (and the same flags)", err, f.out)
		}
		return nil, 0, err
	}
	cr.AdapterDir = filepath.Join(filepath.Base(dir), "adapter") // relative to the report
	if err := writeJSON(resultFile, cr); err != nil {
		return nil, 0, err
	}
	return cr, fullBytes, nil
}

// fullModelBytes is the size of the whole adapted network as one fp32
// safetensors file (merged): what sharing a model instead of an adapter
// costs. It is measured by writing the file to a counter, not estimated.
func fullModelBytes(m *classifier.Model) (int64, error) {
	sd := checkpoint.NewStateDict()
	for _, e := range m.Entries() {
		if e.Kind == "lora" {
			continue
		}
		dtype := checkpoint.F32
		if strings.HasSuffix(e.Key, "num_batches_tracked") {
			dtype = checkpoint.I64
		}
		n := 1
		for _, d := range e.Shape {
			n *= d
		}
		sd.Set(e.Key, &checkpoint.Tensor{DType: dtype, Shape: e.Shape, Data: make([]byte, n*dtype.Size())})
	}
	var c counter
	if err := safetensors.Write(&c, sd, map[string]string{"format": "pt"}); err != nil {
		return 0, err
	}
	return int64(c), nil
}

type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

func describe(s classifier.Spec) string {
	var parts []string
	if !s.LoRA.TargetModules.Empty() {
		parts = append(parts, fmt.Sprintf("LoRA %s r=%d alpha=%g", s.LoRA.TargetModules, s.LoRA.R, s.LoRA.LoraAlpha))
	}
	switch {
	case s.ReplaceFC:
		parts = append(parts, fmt.Sprintf("fc replaced by Linear(2048→%d)", s.NumClasses))
	case containsStr(s.LoRA.ModulesToSave, "fc"):
		parts = append(parts, "fc trainable")
	default:
		parts = append(parts, "fc frozen")
	}
	if s.Head != nil {
		parts = append(parts, "head "+s.Head.String())
	}
	return strings.Join(parts, ", ")
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// printTable prints the founding study's table with this run's numbers.
func printTable(w io.Writer, r *report.Results) {
	fmt.Fprintf(w, "\n%s\nbase: %s · data: %s (%d train / %d test, %d×%d) · %d epoch(s), batch %d, %s lr %g, seed %d\n\n",
		r.Title, r.Weights.Name, r.Data.Name, r.Data.Train, r.Data.Test, r.Data.ImageSize, r.Data.ImageSize,
		r.Budget.Epochs, r.Budget.Batch, r.Budget.Optimizer, r.Budget.LR, r.Budget.Seed)
	row := func(name string, cell func(c report.CaseResult) string) {
		fmt.Fprintf(w, "%-22s", name)
		for _, c := range r.Cases {
			fmt.Fprintf(w, " %14s", cell(c))
		}
		fmt.Fprintln(w)
	}
	row("", func(c report.CaseResult) string { return fmt.Sprintf("case %d", c.Case) })
	row("trainable params", func(c report.CaseResult) string { return commas(c.Trainable) })
	row("trainable %", func(c report.CaseResult) string {
		return fmt.Sprintf("%.2f%%", 100*float64(c.Trainable)/float64(c.Total))
	})
	row("test accuracy", func(c report.CaseResult) string { return fmt.Sprintf("%.4f", c.Accuracy) })
	row("adapter (bytes)", func(c report.CaseResult) string { return commas(int(c.AdapterBytes)) })
	row("adapter (MiB)", func(c report.CaseResult) string { return fmt.Sprintf("%.2f", float64(c.AdapterBytes)/(1<<20)) })
	row("  LoRA+fc (bytes)", func(c report.CaseResult) string {
		return commas(int(c.AdapterParts["lora"] + c.AdapterParts["fc"]))
	})
	row("  head (bytes)", func(c report.CaseResult) string { return commas(int(c.AdapterParts["head"])) })
	row("train time (s)", func(c report.CaseResult) string { return fmt.Sprintf("%.0f", c.TrainSeconds) })
	row("train img/s", func(c report.CaseResult) string { return fmt.Sprintf("%.0f", c.TrainImgPerSec) })
	row("eval img/s", func(c report.CaseResult) string { return fmt.Sprintf("%.0f", c.EvalImgPerSec) })
	fmt.Fprintf(w, "\nfull model (fp32 safetensors): %s bytes (%.1f MiB)\n", commas(int(r.FullModelBytes)), float64(r.FullModelBytes)/(1<<20))
}

// cpuModel reads the CPU name on Linux; "" elsewhere.
func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
