package hostile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	// The CLI is built and run, not linked; importing the packages whose
	// code it runs on these files makes go test's cache notice their
	// changes (cmd/lorafit itself cannot be imported).
	_ "github.com/lorafit/lorafit/adapter"
	_ "github.com/lorafit/lorafit/checkpoint/pth"
	_ "github.com/lorafit/lorafit/checkpoint/safetensors"
	_ "github.com/lorafit/lorafit/classifier"
	_ "github.com/lorafit/lorafit/data"
	_ "github.com/lorafit/lorafit/limits"
	_ "github.com/lorafit/lorafit/preprocess"
	_ "github.com/lorafit/lorafit/weights"
)

const (
	addressSpace = 4 << 30 // bytes, per command: bombs must fail well below
	timeLimit    = 20 * time.Second
	validPNG     = "../../cmd/lorafit/testdata/mnist_test0_label7.png"
)

// hostileCase is one command line run on one hostile input.
type hostileCase struct {
	name string
	args []string
	// want must appear in the error line: the file at fault.
	want string
}

// TestHostileFiles builds lorafit once and runs it on every file of the
// corpus with the verbs that read such files. Each run must exit non-zero
// within timeLimit, under an addressSpace cap, with no panic or runtime
// crash, one error line naming the file, nothing on stdout and nothing
// written to its working directory.
func TestHostileFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the CLI (~30 s)")
	}
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Fatal("prlimit (util-linux) is needed to cap each run's address space")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "lorafit")
	build := exec.Command("go", "build", "-o", bin, "./cmd/lorafit")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/lorafit: %v\n%s", err, out)
	}
	png, err := filepath.Abs(validPNG)
	if err != nil {
		t.Fatal(err)
	}
	corpus, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	valid := filepath.Join(tmp, "valid-adapter")
	if code, stderr, _ := run(t, bin, tmp, "adapter", "init", "--out", valid, "--weights", "random", "--case", "2"); code != 0 {
		t.Fatalf("adapter init failed (%d): %s", code, stderr)
	}

	var cases []hostileCase
	add := func(c hostileCase) { cases = append(cases, c) }

	// Checkpoints: inspect, and predict --weights.
	ckpts, _ := filepath.Glob(filepath.Join(corpus, "checkpoints", "*"))
	special := filepath.Join(tmp, "special")
	os.Mkdir(special, 0o755)
	fifo := filepath.Join(special, "model.pth")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	ckpts = append(ckpts, "/dev/zero", fifo)
	for _, f := range ckpts {
		add(hostileCase{name: "inspect/" + filepath.Base(f), args: []string{"inspect", f}, want: f})
		add(hostileCase{name: "predict-weights/" + filepath.Base(f), args: []string{"predict", "--weights", f, png}, want: f})
	}
	add(hostileCase{name: "predict-weights/a directory", args: []string{"predict", "--weights", special, png}, want: special})
	add(hostileCase{name: "inspect/a directory that is no adapter", args: []string{"inspect", special}, want: special})

	// Images: predict on random weights.
	imgs, _ := filepath.Glob(filepath.Join(corpus, "images", "*"))
	for _, f := range imgs {
		add(hostileCase{name: "predict-image/" + filepath.Base(f), args: []string{"predict", "--weights", "random", f}, want: f})
	}

	// Adapters: the corpus's hostile files laid over a valid adapter, plus
	// those the corpus cannot hold. Unreadable files must fail inspect and
	// predict, naming the file; absurd values must fail predict, naming a
	// file of the adapter.
	overlay := func(d string) string {
		dst := filepath.Join(tmp, filepath.Base(filepath.Dir(d)), filepath.Base(d))
		copyDir(t, valid, dst)
		copyDir(t, d, dst)
		return dst
	}
	adapterDirs := map[string]string{} // adapter directory → the file at fault
	dirs, _ := filepath.Glob(filepath.Join(corpus, "adapters", "*"))
	for _, d := range dirs {
		dst := overlay(d)
		files, _ := os.ReadDir(d)
		adapterDirs[dst] = filepath.Join(dst, files[0].Name())
	}
	made := func(name, file string, mk func(path string) error) {
		dst := filepath.Join(tmp, "adapters", name)
		copyDir(t, valid, dst)
		p := filepath.Join(dst, file)
		os.Remove(p)
		if err := mk(p); err != nil {
			t.Fatal(err)
		}
		adapterDirs[dst] = p
	}
	made("config_50MB", "adapter_config.json", func(p string) error {
		cfg, err := os.ReadFile(filepath.Join(valid, "adapter_config.json"))
		if err != nil {
			return err
		}
		// A valid config with a 50 MB field PEFT does not know.
		big := append(bytes.TrimRight(cfg, "}\n "), `, "padding": "`...)
		big = append(append(big, bytes.Repeat([]byte("A"), 50<<20)...), "\"}\n"...)
		return os.WriteFile(p, big, 0o644)
	})
	made("config_is_a_directory", "adapter_config.json", func(p string) error { return os.Mkdir(p, 0o755) })
	made("config_is_a_fifo", "adapter_config.json", func(p string) error { return syscall.Mkfifo(p, 0o644) })
	made("info_is_a_fifo", "lorafit.json", func(p string) error { return syscall.Mkfifo(p, 0o644) })
	made("weights_are_a_directory", "adapter_model.safetensors", func(p string) error { return os.Mkdir(p, 0o755) })
	made("weights_are_dev_zero", "adapter_model.safetensors", func(p string) error { return os.Symlink("/dev/zero", p) })
	made("weights_missing", "adapter_model.safetensors", func(string) error { return nil })
	for dir, file := range adapterDirs {
		name := filepath.Base(dir)
		add(hostileCase{name: "inspect-adapter/" + name, args: []string{"inspect", dir}, want: file})
		add(hostileCase{name: "predict-adapter/" + name, args: []string{"predict", "--adapter", dir, "--weights", "random", png}, want: file})
	}
	values, _ := filepath.Glob(filepath.Join(corpus, "adapter_values", "*"))
	for _, d := range values {
		dst := overlay(d)
		add(hostileCase{name: "predict-adapter/" + filepath.Base(d), args: []string{"predict", "--adapter", dst, "--weights", "random", png}, want: dst})
	}

	// idx files: train on a Fashion-MNIST directory.
	idxDirs, _ := filepath.Glob(filepath.Join(corpus, "idx", "*"))
	for _, d := range idxDirs {
		add(hostileCase{name: "train-idx/" + filepath.Base(d), want: filepath.Join(d, "train-images-idx3-ubyte.gz"),
			args: []string{"train", "--data", "fashion-mnist", "--data-dir", d, "--weights", "random", "--out", "run"}})
	}

	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cwd := t.TempDir()
			code, stderr, stdout := run(t, bin, cwd, c.args...)
			check(t, c, code, stderr, stdout)
			if ents, _ := os.ReadDir(cwd); len(ents) > 0 {
				t.Errorf("wrote %s in its working directory", ents[0].Name())
			}
		})
	}
}

// check applies the rules every hostile run must follow.
func check(t *testing.T, c hostileCase, code int, stderr, stdout string) {
	t.Helper()
	if code == 0 {
		t.Errorf("exit status 0, want failure; stdout:\n%.500s", stdout)
	}
	for _, crash := range []string{"panic:", "fatal error:", "goroutine ", "SIGKILL", "timed out"} {
		if strings.Contains(stderr, crash) {
			t.Fatalf("stderr shows %q:\n%.2000s", crash, stderr)
		}
	}
	if stdout != "" {
		t.Errorf("partial output on stdout:\n%.500s", stdout)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	var errLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, "lorafit ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || errLines[0] != lines[len(lines)-1] || !strings.Contains(errLines[0], c.want) {
		t.Errorf("want one last error line naming %s; stderr:\n%.2000s", c.want, stderr)
	}
}

// run executes bin under the caps in dir, with a cache that holds nothing
// (so no registry name can trigger a download).
func run(t *testing.T, bin, dir string, args ...string) (code int, stderr, stdout string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "prlimit", append([]string{"--as=" + strconv.FormatInt(addressSpace, 10), "--", bin}, args...)...)
	cmd.Dir = dir
	empty := t.TempDir()
	cmd.Env = append(os.Environ(), "LORAFIT_CACHE="+empty, "TORCH_HOME="+empty, "GOMLX_BACKEND=")
	var errBuf, outBuf bytes.Buffer
	cmd.Stderr, cmd.Stdout = &errBuf, &outBuf
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, errBuf.String() + "\n(timed out after " + timeLimit.String() + ")", outBuf.String()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1, errBuf.String() + "\n(killed by " + ws.Signal().String() + ": SIGKILL or crash)", outBuf.String()
		}
		return ee.ExitCode(), errBuf.String(), outBuf.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, errBuf.String(), outBuf.String()
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
