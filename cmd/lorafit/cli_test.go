package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests that need a real process (signals, kill -9, peak memory, start-up
// time, build flags) build the CLI with `go build` into binDir, once per
// set of build variables.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lorafit-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var builds sync.Map // GOEXPERIMENT → func() (string, error)

// buildCLI builds lorafit with GOEXPERIMENT=experiment ("" keeps the test's
// own environment) and returns the binary's path.
func buildCLI(t *testing.T, experiment string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the CLI")
	}
	once, _ := builds.LoadOrStore(experiment, sync.OnceValues(func() (string, error) {
		name := "lorafit"
		env := os.Environ()
		if experiment != "" {
			name += "-" + experiment
			env = append(env, "GOEXPERIMENT="+experiment)
		}
		bin := filepath.Join(binDir, name)
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build (GOEXPERIMENT=%q): %v\n%s", experiment, err, out)
		}
		return bin, nil
	}))
	bin, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// isolatedEnv keeps a run away from the user's caches and any real
// download: weights go to an unresolvable host (RFC 6761's .invalid).
func isolatedEnv(t *testing.T) []string {
	tmp := t.TempDir()
	return append(os.Environ(), "LORAFIT_CACHE="+filepath.Join(tmp, "cache"), "TORCH_HOME="+filepath.Join(tmp, "torch"),
		"LORAFIT_WEIGHTS_URL=http://lorafit-test.invalid/")
}

// proc is a running lorafit whose stderr is read line by line as it comes.
type proc struct {
	cmd     *exec.Cmd
	started time.Time
	lines   chan string // stderr, closed at EOF
	mu      sync.Mutex
	stderr  strings.Builder
	stdout  bytes.Buffer
	done    chan struct{}
}

func startCLI(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan string, 1<<16), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = &p.stdout
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	go func() {
		defer close(p.done)
		defer close(p.lines)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			p.lines <- sc.Text()
		}
	}()
	return p
}

// waitFor returns the first stderr line matching re, with the time since
// start; it fails t if the process ends or timeout passes first.
func (p *proc) waitFor(t *testing.T, re string, timeout time.Duration) (string, time.Duration) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("lorafit ended before printing /%s/:\n%s", re, p.errText())
			}
			if rx.MatchString(line) {
				return line, time.Since(p.started)
			}
		case <-deadline:
			t.Fatalf("no /%s/ within %v:\n%s", re, timeout, p.errText())
		}
	}
}

func (p *proc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// wait waits for the process to exit and returns its state.
func (p *proc) wait(t *testing.T) (*os.ProcessState, string, string) {
	t.Helper()
	for range p.lines { // drain, so the reader reaches EOF
	}
	<-p.done
	err := p.cmd.Wait()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return p.cmd.ProcessState, p.stdout.String(), p.errText()
}

// runCLI runs the built lorafit to completion.
func runCLI(t *testing.T, bin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	st, stdout, stderr := startCLI(t, bin, env, args...).wait(t)
	return st.ExitCode(), stdout, stderr
}

// noLeftovers fails t if any temporary file or directory (a half-done
// write) is under dir.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("left behind: %s", path)
		}
		return nil
	})
}
