// Command lorafit fine-tunes torchvision CNNs with LoRA, in Go.
//
//	lorafit <verb> [flags] [args]
//	lorafit help <verb>
//
// Each verb parses its flags and calls the library (packages study,
// classifier, adapter, weights); the verbs are the table below.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/lorafit/lorafit/backend"
)

// verb is one subcommand: its one-line summary, usage line and body.
// compute marks verbs that run networks (they warn about slow builds).
type verb struct {
	summary string
	usage   string
	compute bool
	run     func(fs *flag.FlagSet, args []string, out io.Writer) error
}

var verbs map[string]verb

func init() {
	verbs = map[string]verb{
		"experiment": {"reproduce the founding study: ResNet-50 fine-tuned on MNIST four ways, with a report",
			"experiment [--cases 1,2,3,4] [--weights auto] [--data mnist] [--epochs 1] [--quick] [--out DIR] [--resume]", true, runExperiment},
		"train": {"fine-tune one adaptation (a case or a config) on a dataset and save its adapter",
			"train --out DIR [--weights W] [--case N | --config FILE] [overrides] [--data mnist] [--epochs 1] ...", true, runTrain},
		"predict": {"classify PNG/JPEG images with a base network (and an adapter) and print the top classes",
			"predict [--weights W] [--adapter DIR] [--image-size N] [--top K] [--json] IMAGE...", true, runPredict},
		"params": {"count trainable and total parameters of an adaptation (PEFT's print_trainable_parameters)",
			"params [--case N | --config FILE] [overrides] [--model resnet50] [--json] [--print-config]", false, runParams},
		"adapter": {"create an untrained adapter directory in PEFT's format (adapter init)",
			"adapter init --out DIR [--weights W] [--case N | --config FILE] [overrides] [--seed S] [--dtype F32|F16|BF16]", false, runAdapter},
		"merge": {"fold an adapter into its base weights and write a plain model (.safetensors)",
			"merge --weights W --adapter DIR --out FILE.safetensors", false, runMerge},
		"compare": {"put the same cases of several experiments side by side (e.g. a random and a pretrained backbone), with a report",
			"compare --out DIR RUN_DIR RUN_DIR...", false, runCompare},
		"inspect": {"list a checkpoint's tensors, its module tree with parameter counts, and totals",
			"inspect [--json] FILE.pth|FILE.safetensors|ADAPTER_DIR", false, runInspect},
		"serve": {"serve adapters over HTTP: one base in memory, an adapter per request, batched across adapters, with a web page", "serve --weights W --adapters DIR [--addr 127.0.0.1:8080] [--max-adapters 128] [--max-batch 64] [--batch-wait 5ms]", true, runServe},
		"weights": {"list the pretrained weights lorafit knows, or download one into the cache",
			"weights list | weights download [--dir DIR] NAME", false, runWeights},
	}
}

// computeGCPercent is the GC target of verbs that compute. Their heap is
// mostly tensors of a few MB, made per step and dropped soon after; at Go's
// default GOGC=100 the heap grows to twice what is live before each
// collection. 25 cut the 4-case study's peak RSS from 2.30 to 1.42 GB at
// the same speed (21.3 s both; a case-2 step was no slower).
const computeGCPercent = 25

// tuneGC sets computeGCPercent unless $GOGC says otherwise.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(computeGCPercent)
	}
}

// errOut receives progress, warnings and logs: the stderr of the running
// command line (set by run, so tests can capture it).
var errOut io.Writer = os.Stderr

// errUsage marks an error whose fix is in the verb's help text.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code: 0 ok, 1 failure,
// 2 bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	errOut = stderr
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		printVerbs(stdout)
		return 0
	}
	name := args[0]
	if name == "help" {
		if len(args) < 2 {
			printVerbs(stdout)
			return 0
		}
		v, ok := verbs[args[1]]
		if !ok {
			fmt.Fprintf(stderr, "lorafit: unknown verb %q\n", args[1])
			return 2
		}
		fs := flag.NewFlagSet(args[1], flag.ContinueOnError)
		fs.SetOutput(stdout)
		_ = v.run(withHelp(fs, args[1], v), []string{"-h"}, io.Discard)
		return 0
	}
	v, ok := verbs[name]
	if !ok {
		fmt.Fprintf(stderr, "lorafit: unknown verb %q; run `lorafit help`\n", name)
		return 2
	}
	if v.compute {
		for _, w := range backend.BuildWarnings() {
			fmt.Fprintf(stderr, "lorafit: WARNING: %s\n", w)
		}
	}
	if v.compute {
		tuneGC()
	}
	if path := os.Getenv("LORAFIT_CPUPROFILE"); path != "" && v.compute {
		stop, err := startCPUProfile(path)
		if err != nil {
			fmt.Fprintf(stderr, "lorafit %s: LORAFIT_CPUPROFILE: %v\n", name, err)
			return 1
		}
		defer stop()
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	err := v.run(withHelp(fs, name, v), args[1:], stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "lorafit %s: %v\nusage: lorafit %s\n", name, err, v.usage)
		return 2
	case errors.Is(err, errFlags): // the flag package printed the problem and the usage
		return 2
	}
	fmt.Fprintf(stderr, "lorafit %s: %v\n", name, err)
	return 1
}

// startCPUProfile writes a Go CPU profile of the verb to path (for
// `go tool pprof`), as LORAFIT_CPUPROFILE asks: where the time of a slow run
// goes, without a special build.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func withHelp(fs *flag.FlagSet, name string, v verb) *flag.FlagSet {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: lorafit %s\n\n%s\n\nflags:\n", v.usage, v.summary)
		fs.PrintDefaults()
	}
	return fs
}

func printVerbs(w io.Writer) {
	fmt.Fprintln(w, "lorafit: LoRA fine-tuning of torchvision CNN classifiers, in Go.\n\nusage: lorafit <verb> [flags] [args]\n\nverbs:")
	for _, n := range []string{"experiment", "train", "predict", "params", "adapter", "merge", "inspect", "serve", "weights"} {
		fmt.Fprintf(w, "  %-10s %s\n", n, verbs[n].summary)
	}
	fmt.Fprintln(w, "\nRun `lorafit help <verb>` for a verb's flags.")
}

// usageErrorf wraps errUsage with a message.
func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// errFlags marks a flag the flag package could not parse (it already said
// so on stderr): a usage error.
var errFlags = errors.New("bad flags")

// parse parses flags, allowing them after positional args too
// (`lorafit predict img.png --top 3`), as users coming from Python expect.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errFlags, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
		if rest[0] == "--" {
			return append(positional[:len(positional)-1], args...), nil
		}
	}
}

// signalContext is cancelled by the first SIGINT (Ctrl-C) or SIGTERM (what
// schedulers, `docker stop` and CI send): training then checkpoints and
// exits cleanly. A second signal stops the process at once; checkpoints are
// written atomically, so the last good one survives.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			signal.Reset(os.Interrupt, syscall.SIGTERM) // the next one gets the default action: exit
			fmt.Fprintf(errOut, "\nlorafit: %v: stopping after this step and saving a checkpoint (a second signal stops at once)\n", s)
			cancel()
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		signal.Stop(ch)
		cancel()
	}
}
