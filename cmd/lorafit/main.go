// Command lorafit fine-tunes torchvision CNNs with LoRA, in Go.
//
//	lorafit <verb> [flags] [args]
//	lorafit help <verb>
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
)

// verb is one subcommand: its one-line summary, usage line and body.
type verb struct {
	summary string
	usage   string
	run     func(fs *flag.FlagSet, args []string, out io.Writer) error
}

var verbs = map[string]verb{}

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
	}
	fmt.Fprintf(stderr, "lorafit %s: %v\n", name, err)
	return 1
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
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, verbs[n].summary)
	}
	fmt.Fprintln(w, "\nRun `lorafit help <verb>` for a verb's flags.")
}

// usageErrorf wraps errUsage with a message.
func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// parse parses flags, allowing them after positional args too
// (`lorafit predict img.png --top 3`), as users coming from Python expect.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
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
