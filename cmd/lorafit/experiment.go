package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/study"
)

func runExperiment(fs *flag.FlagSet, args []string, out io.Writer) error {
	var bf baseFlags
	bf.register(fs, "auto")
	fs.Lookup("weights").Usage = "base weights: auto (cached or downloaded " + study.StudyWeights + ", else random init with a warning), a registry name, a file, or random[:SEED]"
	var df dataFlags
	df.register(fs)
	var rf recipeFlags
	rf.register(fs)
	cases := fs.String("cases", "1,2,3,4", "which cases of the founding study to run, and full for the full fine-tuning reference row")
	var of outFlags
	of.register(fs, "output directory (default runs/<timestamp>, never an existing one)",
		"continue an interrupted run in --out: finished cases are kept, the interrupted one resumes from its checkpoint")
	quick := fs.Bool("quick", false, "a quick smoke test: 2,000 training and 1,000 test images (unless --limit-train/--limit-test say otherwise); too few steps for its accuracies to compare the cases")
	cache := fs.Bool("cache", true, "compute each frozen prefix once for every case and epoch that reads it (cases 1 and 4 share the pooled features, 2 and 3 theirs)")
	cacheGiB := fs.Float64("cache-budget", 0, "GiB the feature caches may take (0: a quarter of memory, at most 8)")
	cacheBF16 := fs.Bool("cache-bf16", false, "keep cached features as bfloat16: half the memory")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments %v", rest)
	}
	nums, err := parseCases(*cases)
	if err != nil {
		return err
	}
	if set := setFlags(fs); *quick {
		// Limits given explicitly win (0 included: all of the data).
		if !set["limit-train"] {
			df.limitTrain = 2000
		}
		if !set["limit-test"] {
			df.limitTest = 1000
		}
	}
	cfg, err := rf.config()
	if err != nil {
		return err
	}
	if !(*cacheGiB >= 0 && *cacheGiB < 1<<20) {
		return usageErrorf("--cache-budget %v: want 0 (automatic) or a size in GiB", *cacheGiB)
	}
	if of.resume && of.dir == "" {
		return usageErrorf("--resume needs the --out directory of the run to continue")
	}
	if of.dir != "" {
		if err := of.check(); err != nil {
			return err
		}
	}
	ctx, stop := signalContext()
	defer stop()
	b, err := bf.newBackend()
	if err != nil {
		return err
	}
	if err := df.check(); err != nil {
		return err
	}
	// The data and the base load side by side: start-up is most of a
	// --quick run's first seconds.
	type sets struct {
		train, test *data.Dataset
		err         error
	}
	loaded := make(chan sets, 1)
	go func() {
		var d sets
		d.train, d.test, d.err = df.load(cfg.Preprocess.Crop, cfg.Seed)
		loaded <- d
	}()
	base, src, note, err := study.OpenWeights(ctx, bf.weights, cfg.Seed, errOut)
	d := <-loaded
	if d.err != nil {
		return d.err
	}
	if err != nil {
		return err
	}
	trainSet, testSet := d.train, d.test
	if of.dir == "" {
		if of.dir, err = newRunDir(time.Now()); err != nil {
			return err
		}
	}
	of.clean()
	res, err := study.Run(ctx, study.Options{
		Backend: b, BackendName: backend.Resolve(bf.backend), Cases: nums, Weights: bf.weights, Base: base, Source: src, Note: note,
		Train: trainSet, Test: testSet, Config: cfg, Out: of.dir, Resume: of.resume, Quick: *quick, Log: errOut,
		Cache:   study.CacheOptions{Off: !*cache, Budget: int64(*cacheGiB * (1 << 30)), BF16: *cacheBF16},
		Command: strings.TrimSpace("lorafit experiment " + strings.Join(args, " ")),
	})
	if err != nil {
		return of.failed(err, "lorafit experiment --resume --out "+of.dir+" (and the same flags)")
	}
	report.Table(out, res)
	peak := ""
	if res.PeakRSSBytes > 0 {
		peak = fmt.Sprintf(", peak memory %.1f GiB", float64(res.PeakRSSBytes)/(1<<30))
	}
	fmt.Fprintf(out, "\nwrote %s (results.json, report.md, report.html, plots, adapters) in %s%s\n",
		of.dir, time.Duration(res.WallSeconds*float64(time.Second)).Round(time.Second), peak)
	return nil
}

// newRunDir creates runs/<timestamp> exclusively: two runs started in the
// same second get -2, -3, … rather than sharing (and overwriting) one.
func newRunDir(now time.Time) (string, error) {
	if err := os.MkdirAll("runs", 0o755); err != nil {
		return "", err
	}
	base := filepath.Join("runs", now.Format("20060102-150405"))
	for i := 1; i < 1000; i++ {
		dir := base
		if i > 1 {
			dir = fmt.Sprintf("%s-%d", base, i)
		}
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			return dir, nil
		}
		if !os.IsExist(err) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s: 999 runs in one second already", base)
}

func parseCases(s string) ([]int, error) {
	var nums []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if p == "full" {
			n, err = report.FullCase, nil
		} else if err != nil || !slices.Contains(adapter.CaseNumbers(), n) {
			return nil, usageErrorf("--cases %q: want a comma list of 1 to 4 and full", s)
		}
		if slices.Contains(nums, n) {
			return nil, usageErrorf("--cases %q: case %d twice", s, n)
		}
		nums = append(nums, n)
	}
	if len(nums) == 0 {
		return nil, usageErrorf("--cases is empty")
	}
	return nums, nil
}
