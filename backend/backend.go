// Package backend picks the GoMLX compute backend. The pure-Go backend is the
// default because it needs nothing installed; GoMLX's own default would try to
// download an XLA plugin, which panics on an offline machine. Users with an
// XLA/PJRT install choose it by name (build with `-tags xla`).
package backend

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // registers "go"
)

// Default is used when neither --backend nor $GOMLX_BACKEND say otherwise.
const Default = "go"

// Resolve returns the configuration to use: the flag if set, then
// $GOMLX_BACKEND, then Default.
func Resolve(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(compute.ConfigEnvVar); env != "" {
		return env
	}
	return Default
}

// tuned is the configuration "go" stands for: every execution runs its ops
// one after another on one worker, and callers run one execution per core
// on parts of a batch (see Shards). The Go backend's own default keeps
// about one of two cores busy: its parallel executor holds the worker pool
// that each matmul would fan out on. One single-threaded execution per core
// keeps every core busy, elementwise ops and packing included.
const tuned = "go:ops_sequential,parallelism=1"

var (
	mu      sync.Mutex
	sharded = map[compute.Backend]int{}
)

// Shards is how many parts callers should split a batch into and run at
// once on b: one per core for the tuned Go backend, 1 for any other (XLA
// runs one execution across a whole device).
func Shards(b compute.Backend) int {
	mu.Lock()
	defer mu.Unlock()
	return max(sharded[b], 1)
}

// AtOnce calls f(0), …, f(n-1), at most limit at a time (one per core:
// limit is usually Shards), and returns the first error in index order.
// With a limit of 1 the calls run in order and stop at the first error.
func AtOnce(n, limit int, f func(i int) error) error {
	if limit <= 1 || n <= 1 {
		for i := range n {
			if err := f(i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, n)
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// New creates the backend named by config ("go", "xla:cpu", "xla:cuda", …),
// with an error, not a panic, when that backend is not compiled in. "go" is
// lorafit's tuned configuration of the pure-Go backend (see Shards); "go:"
// followed by GoMLX options is the backend configured as given.
func New(config string) (b compute.Backend, err error) {
	if config == "go" {
		b, err := quietNew(tuned)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		sharded[b] = runtime.GOMAXPROCS(0)
		mu.Unlock()
		return b, nil
	}
	return quietNew(config)
}

// quietNew creates a backend with stdout muted: the Go backend prints its
// parallelism there when configured, and stdout is lorafit's data channel
// (predict --json). Backends are created at start-up, before any output.
func quietNew(config string) (compute.Backend, error) {
	if devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		stdout := os.Stdout
		os.Stdout = devNull
		defer func() { os.Stdout = stdout; devNull.Close() }()
	}
	return create(config)
}

func create(config string) (b compute.Backend, err error) {
	name, _, _ := strings.Cut(config, ":")
	known := compute.List()
	if !slices.Contains(known, name) {
		hint := ""
		if name == "xla" {
			hint = " (rebuild with `go build -tags xla` and install the PJRT plugin)"
		}
		slices.Sort(known)
		return nil, fmt.Errorf("backend %q is not compiled into this binary%s; available: %s", config, hint, strings.Join(known, ", "))
	}
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("backend %q: %v", config, r)
		}
	}()
	return compute.NewWithConfig(config)
}
