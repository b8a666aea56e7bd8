package study

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/features"
	"github.com/lorafit/lorafit/fsutil"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/weights"
)

// StudyWeights is the founding study's base: torchvision's ResNet-50
// IMAGENET1K_V2.
const StudyWeights = "resnet50/IMAGENET1K_V2"

// Options are the study's choices. Every case gets the same data, seed and
// recipe.
type Options struct {
	Backend     compute.Backend
	BackendName string // for results.json
	Cases       []int  // of adapter.CaseNumbers
	// Weights is "auto" (StudyWeights when cached or downloadable, else a
	// seeded random backbone, said loudly), or any --weights spec.
	Weights string
	// Base, if set, is Weights already opened by OpenWeights (with its
	// Source and Note), so a caller can fail before creating Out.
	Base        *backbone.Base
	Source      *weights.Source
	Note        string
	Train, Test *data.Dataset
	Config      train.Config
	Out         string // output directory
	// Cache computes each frozen prefix once for the cases that share it.
	Cache CacheOptions
	// Resume keeps finished cases found in Out and resumes the interrupted
	// one from its checkpoint.
	Resume bool
	// Quick marks a smoke-test-sized run (--quick): the title and reports
	// say what its numbers can and cannot show.
	Quick   bool
	Command string    // the command line, for results.json
	Log     io.Writer // progress and notes; nil for silence
}

// OpenWeights resolves the study's --weights. "auto" is StudyWeights when it
// is cached or can be downloaded, and otherwise random init — never
// silently: note says why, and every report shows it.
func OpenWeights(ctx context.Context, spec string, seed uint64, progress io.Writer) (base *backbone.Base, src *weights.Source, note string, err error) {
	opts := weights.OpenOptions{Arch: "resnet50", Download: true, Progress: progress}
	if spec != "auto" {
		base, _, src, err = weights.Load(ctx, spec, opts)
		return base, src, "", err
	}
	base, _, src, err = weights.Load(ctx, StudyWeights, opts)
	if err == nil {
		return base, src, "", nil
	}
	if ctx.Err() != nil {
		return nil, nil, "", ctx.Err()
	}
	note = StudyWeights + " could not be had (" + firstLine(err.Error()) + ")"
	base, _, src, err = weights.Load(ctx, fmt.Sprintf("random:%d", seed), opts)
	return base, src, note, err
}

// QuickCaveat says what a --quick run's numbers mean: steps per case on
// images training images, for a task of classes classes.
func QuickCaveat(steps, images, classes int, random bool) string {
	s := fmt.Sprintf("a quick run trains each case for %d steps on %s images: enough to check that data, training, "+
		"evaluation, adapters and reports all work, too few for the accuracies to rank the cases", steps, report.Thousands(int64(images)))
	if random && classes > 0 {
		s += fmt.Sprintf(" (on a random-init backbone expect near chance, %.2f)", 1/float64(classes))
	}
	return s + ". Run without --quick for the study's numbers."
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Run builds the base once, trains and evaluates every case on it, and
// writes Out: results.json, report.md, report.html, plots and each case's
// adapter.
func Run(ctx context.Context, o Options) (*report.Results, error) {
	started := time.Now()
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	base, src, note := o.Base, o.Source, o.Note
	if base == nil {
		var err error
		if base, src, note, err = OpenWeights(ctx, o.Weights, o.Config.Seed, o.Log); err != nil {
			return nil, err
		}
	}
	if src.Random {
		why := ""
		if note != "" {
			why = ": " + note
		}
		fmt.Fprintf(log, "WARNING: the backbone is randomly initialized (%s)%s. Accuracies are not comparable to the founding study's, which fine-tuned ImageNet weights.\n", src, why)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	c := o.Config
	res := &report.Results{
		StartedAt: started,
		Command:   o.Command,
		Environment: report.Env{Backend: o.BackendName, Threads: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
			OS: runtime.GOOS, Arch: runtime.GOARCH, CPU: cpuModel(), GoExperiment: backend.Experiments(), LorafitVersion: Version()},
		Weights: report.Weights{Spec: o.Weights, SHA256: src.SHA256, Random: src.Random, Note: note, Name: src.String()},
		Data: report.Data{Name: DatasetName(o.Train.Name), Train: o.Train.Len(), Test: o.Test.Len(), ImageSize: c.Preprocess.Crop,
			Augment: c.Augment, ClassNames: o.Train.ClassNames},
		Budget: report.Budget{Epochs: c.Epochs, Batch: c.Batch, Optimizer: c.Optimizer, LR: c.LR, Seed: c.Seed},
	}
	res.Environment.Hostname, _ = os.Hostname()
	if src.Registry != nil {
		res.Weights.Name = src.Registry.Name
	}
	res.Title = fmt.Sprintf("LoRA fine-tuning of %s on %s: the four cases", base.Net.Arch(), res.Data.Name)
	if src.Random {
		res.Title += " (random-init backbone)"
	}
	if o.Quick {
		res.Title += " — quick run: checks that everything works; its accuracies compare nothing"
		res.Caveat = QuickCaveat(o.Train.Len()/c.Batch*c.Epochs, o.Train.Len(), o.Train.NumClasses(), src.Random)
	}
	info := BaseInfo(base, src)
	adapters := map[int]*adapter.Adapter{}
	for _, n := range o.Cases {
		spec, err := CaseSpec(n, base.Net)
		if err != nil {
			return nil, err
		}
		spec.NumClasses = o.Train.NumClasses()
		if adapters[n], err = adapter.New(base.Net, spec); err != nil {
			return nil, fmt.Errorf("case %d: %w", n, err)
		}
	}
	shared, cacheInfo, err := buildCaches(ctx, o, base, adapters, log)
	if err != nil {
		return nil, err
	}
	res.Cache = cacheInfo
	for _, n := range o.Cases {
		cr, fullBytes, err := runCase(ctx, o, n, adapters[n], base, info, shared, log)
		if err != nil {
			return nil, fmt.Errorf("case %d: %w", n, err)
		}
		res.Cases = append(res.Cases, *cr)
		res.FullModelBytes = max(res.FullModelBytes, fullBytes)
	}
	res.WallSeconds = time.Since(started).Seconds()
	res.PeakRSSBytes = peakRSS()
	if err := report.Write(o.Out, res); err != nil {
		return nil, err
	}
	return res, nil
}

// BaseInfo is what an adapter records of the base it was trained on.
func BaseInfo(base *backbone.Base, src *weights.Source) adapter.BaseInfo {
	return adapter.BaseInfo{Arch: base.Net.Arch(), Weights: src.Spec, SHA256: src.SHA256, NumClasses: base.Net.NumClasses()}
}

// CaseSpec is case n of the study (adapter.Case), or for report.FullCase
// the reference every PEFT comparison has: full fine-tuning of the same
// network, fc replaced by a new Linear for the task.
func CaseSpec(n int, net backbone.Network) (adapter.Spec, error) {
	if n == report.FullCase {
		spec := adapter.Full(net)
		spec.ReplaceFC = true
		return spec, nil
	}
	return adapter.Case(n)
}

// runCase trains and evaluates one case and saves its adapter. With
// Resume, a finished case found in the output directory is kept if it is
// this run's (its identity is checked field by field), and an interrupted
// one continues from its checkpoint.
func runCase(ctx context.Context, o Options, n int, a *adapter.Adapter, base *backbone.Base, info adapter.BaseInfo, shared *caches, log io.Writer) (*report.CaseResult, int64, error) {
	dir := filepath.Join(o.Out, fmt.Sprintf("case%d", n))
	if n == report.FullCase {
		dir = filepath.Join(o.Out, "full")
	}
	fullBytes, err := FullModelBytes(a)
	if err != nil {
		return nil, 0, err
	}
	cfg := o.Config
	cfg.Resume = o.Resume
	var testF *features.Cache
	cfg.Features, testF = shared.forCase(n)
	job := &Job{Backend: o.Backend, Base: base, BaseInfo: info, Adapter: a, Train: o.Train, Test: o.Test, Config: cfg, Dir: dir,
		Case: n, TestFeatures: testF, Log: o.Log}
	relAdapter := filepath.Join(filepath.Base(dir), "adapter") // relative to the report
	if o.Resume {
		cr, err := job.Finished()
		if err != nil {
			return nil, 0, err
		}
		if cr != nil {
			fmt.Fprintf(log, "\n== %s: finished before the interruption; kept (test accuracy %.4f)\n", report.CaseName(n), cr.Accuracy)
			cr.Kept, cr.AdapterDir = true, relAdapter
			return cr, fullBytes, nil
		}
	}
	if err := a.Init(base, o.Config.Seed); err != nil {
		return nil, 0, err
	}
	if _, err := os.Stat(dir); err == nil {
		_, _ = fsutil.Clean(dir) // what a killed run's writes left
	}
	fmt.Fprintf(log, "\n== %s: %s\n   %s\n", report.CaseName(n), Describe(a), a.Params())
	cr, err := job.Run(ctx)
	if err != nil {
		return nil, 0, err
	}
	cr.AdapterDir = relAdapter
	return cr, fullBytes, nil
}

// FullModelBytes is the size of the whole adapted network as one fp32
// safetensors file (merged): what sharing a model instead of an adapter
// costs. It is measured by writing the file to a counter, not estimated.
func FullModelBytes(a *adapter.Adapter) (int64, error) {
	params := backbone.ParamsOf(a.Modules())
	largest := 0
	for _, p := range params {
		largest = max(largest, p.NumElements()*8)
	}
	zeros := make([]byte, largest) // shared: only the sizes matter (100 MB per case otherwise)
	sd := checkpoint.NewStateDict()
	for _, p := range params {
		dtype := checkpoint.F32
		if p.Kind == backbone.BNCount {
			dtype = checkpoint.I64
		}
		sd.Set(p.Name, &checkpoint.Tensor{DType: dtype, Shape: p.Shape, Data: zeros[:p.NumElements()*dtype.Size()]})
	}
	var c counter
	if err := safetensors.Write(&c, sd, map[string]string{"format": "pt"}); err != nil {
		return 0, err
	}
	return int64(c), nil
}

type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

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
