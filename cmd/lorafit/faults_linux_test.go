package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size bytes (read-only with ro) at a new
// directory and unmounts it when the test ends; it skips the test where
// mounting is not allowed (not root, or a container without the right).
func mountTmpfs(t *testing.T, size int, ro bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	var flags uintptr
	if ro {
		flags = syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func remount(t *testing.T, dir string, size int) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatal(err)
	}
}

// entries lists what is under dir, relative, directories with a slash.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			rel += "/"
		}
		got = append(got, rel)
		return nil
	})
	return got
}

// TestTrainDiskFull: a disk that fills while lorafit train saves gives an
// error naming the file and the cause, leaves no temporary or partial file,
// keeps a checkpoint that was written whole, and --resume finishes the run,
// once there is space, to the bytes of a run that never failed.
func TestTrainDiskFull(t *testing.T) {
	bin := buildCLI(t, "")
	env := isolatedEnv(t)
	// Case 1's head (10→512→256→10): a 559 KB adapter, a 1.7 MB checkpoint
	// (weights and Adam's two moments).
	flags := []string{"train", "--weights", fixture, "--case", "1", "--limit-train", "64", "--limit-test", "16", "--batch", "32"}

	t.Run("no room for the checkpoint", func(t *testing.T) {
		disk := mountTmpfs(t, 1<<20, false)
		out := filepath.Join(disk, "run")
		code, stdout, stderr := runCLI(t, bin, env, append(flags, "--out", out)...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, filepath.Join(out, "checkpoint.safetensors")) ||
			!strings.Contains(stderr, "no space left on device") {
			t.Fatalf("exit %d, stdout %q\n%s", code, stdout, stderr)
		}
		if got := entries(t, disk); strings.Join(got, " ") != "run/" {
			t.Errorf("a failed save left %v", got)
		}
	})

	t.Run("no room for the adapter", func(t *testing.T) {
		disk := mountTmpfs(t, 2<<20, false)
		out := filepath.Join(disk, "run")
		code, stdout, stderr := runCLI(t, bin, env, append(flags, "--out", out)...)
		ckpt := filepath.Join(out, "checkpoint.safetensors")
		if code != 1 || stdout != "" || !strings.Contains(stderr, "write "+filepath.Join(out, "adapter")+": ") ||
			!strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, ckpt+" is intact") {
			t.Fatalf("exit %d, stdout %q\n%s", code, stdout, stderr)
		}
		if got := entries(t, disk); strings.Join(got, " ") != "run/ run/checkpoint.safetensors" {
			t.Errorf("a failed adapter save left %v", got)
		}
		remount(t, disk, 8<<20)
		code, stdout, stderr = runCLI(t, bin, env, append(flags, "--out", out, "--resume")...)
		if code != 0 || !strings.Contains(stdout, "(resumed at step 2)") {
			t.Fatalf("--resume with room: exit %d\n%s\n%s", code, stdout, stderr)
		}
		whole := filepath.Join(t.TempDir(), "whole")
		if code, _, stderr := runCLI(t, bin, env, append(flags, "--out", whole)...); code != 0 {
			t.Fatalf("run on a roomy disk: %s", stderr)
		}
		sameFile(t, filepath.Join(out, "adapter", "adapter_model.safetensors"), filepath.Join(whole, "adapter", "adapter_model.safetensors"))
		noLeftovers(t, disk)
	})
}

// TestExperimentDiskFull: the same for an experiment: its case's adapter
// does not fit, the error says which and that --resume can continue, and
// with room --resume completes the reports.
func TestExperimentDiskFull(t *testing.T) {
	bin := buildCLI(t, "")
	env := isolatedEnv(t)
	// Case 4: fc 2048→10, an 82 KB adapter and a 246 KB checkpoint.
	disk := mountTmpfs(t, 300<<10, false)
	out := filepath.Join(disk, "run")
	flags := []string{"experiment", "--weights", "random:1", "--cases", "4", "--limit-train", "64", "--limit-test", "32", "--batch", "32", "--out", out}
	code, stdout, stderr := runCLI(t, bin, env, flags...)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "case 4: write "+filepath.Join(out, "case4", "adapter")+": ") ||
		!strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, "lorafit experiment --resume --out "+out) {
		t.Fatalf("exit %d, stdout %q\n%s", code, stdout, stderr)
	}
	if got := entries(t, disk); strings.Join(got, " ") != "run/ run/case4/ run/case4/checkpoint.safetensors" {
		t.Errorf("a failed adapter save left %v", got)
	}
	remount(t, disk, 8<<20)
	code, stdout, stderr = runCLI(t, bin, env, append(flags, "--resume")...)
	if code != 0 || !strings.Contains(stdout, "resumed@2") {
		t.Fatalf("--resume with room: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, f := range []string{"results.json", "report.md", "report.html", "case4/result.json", "case4/adapter/adapter_model.safetensors"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	noLeftovers(t, disk)
}

// TestReadOnlyOutput: an output directory that cannot be written fails at
// once, naming it and the cause, and writes nothing.
func TestReadOnlyOutput(t *testing.T) {
	bin := buildCLI(t, "")
	env := isolatedEnv(t)
	var parent, cause string
	if os.Geteuid() == 0 { // root ignores permission bits: use a read-only mount
		parent, cause = mountTmpfs(t, 1<<20, true), "read-only file system"
	} else {
		parent, cause = t.TempDir(), "permission denied"
		if err := os.Chmod(parent, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(parent, 0o755) })
	}
	out := filepath.Join(parent, "run")
	for _, args := range [][]string{
		{"train", "--weights", fixture, "--case", "4", "--limit-train", "64", "--limit-test", "16", "--out", out},
		{"experiment", "--weights", "random:1", "--cases", "4", "--limit-train", "64", "--limit-test", "16", "--out", out},
	} {
		code, stdout, stderr := runCLI(t, bin, env, args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, out+": "+cause) || strings.Contains(stderr, "step 1/") {
			t.Errorf("%s: exit %d, stdout %q\n%s", args[0], code, stdout, stderr)
		}
		if got := entries(t, parent); len(got) > 0 {
			t.Errorf("%s wrote %v", args[0], got)
		}
	}
}

// TestPredictMemoryBound: predict on 1,500 images streams them batch by
// batch: its live heap is a run's on 500, not growing with the number of
// images, and its peak RSS stays within GOGC's ratio of it (1,000 more decoded 224×224 images would hold 196
// MB, their 64×64 inputs 48 MB). Both runs end with a batch of 4, so both
// compile the same graphs, and both run long enough for the heap to reach
// its GC goal (the first 100-200 images only grow it to there).
func TestPredictMemoryBound(t *testing.T) {
	bin := buildCLI(t, "")
	dir := t.TempDir()
	paths := make([]string, 1500)
	rng := rand.New(rand.NewPCG(1, 2))
	img := image.NewRGBA(image.Rect(0, 0, 224, 224))
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	for i := range paths {
		for j := 0; j < len(img.Pix); j += 4 {
			v := rng.Uint32()
			img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = byte(v), byte(v>>8), byte(v>>16), 255
		}
		var b bytes.Buffer
		if err := enc.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		paths[i] = filepath.Join(dir, fmt.Sprintf("img%04d.png", i))
		if err := os.WriteFile(paths[i], b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// gctrace prints the live heap after each collection ("gc 7 @3.4s …
	// 67->68->47 MB"): the memory the process holds on to.
	env := append(isolatedEnv(t), "GODEBUG=gctrace=1", "GOGC=25")
	live := regexp.MustCompile(`(?m)^gc \d+ @([0-9.]+)s .* \d+->\d+->(\d+) MB`)
	measure := func(images []string) (rss, heap int64) {
		args := append([]string{"predict", "--weights", "random", "--model", "resnet18", "--image-size", "64", "--batch", "8", "--json"}, images...)
		p := startCLI(t, bin, env, args...)
		// The kernel's ru_maxrss of a child includes the parent's RSS from
		// before exec (Go starts children with vfork), so read the child's
		// own high-water mark, VmHWM, while it runs.
		hwm := make(chan int64)
		go func() {
			var peak int64
			defer func() { hwm <- peak }()
			for {
				select {
				case <-p.done:
					return
				case <-time.After(20 * time.Millisecond):
				}
				raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
				if m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(raw); err == nil && m != nil {
					kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
					peak = max(peak, kb<<10)
				}
			}
		}()
		st, stdout, stderr := p.wait(t)
		rss = <-hwm
		if st.ExitCode() != 0 {
			t.Fatalf("predict on %d images: exit %d\n%s", len(images), st.ExitCode(), stderr)
		}
		if n := strings.Count(stdout, "\n"); n != len(images) {
			t.Fatalf("%d predictions for %d images", n, len(images))
		}
		// The live heap of one collection moves by ±50 MiB with what is in
		// flight when it runs. GOGC=25 makes dozens of collections while the
		// images are classified, but the first ~30 only grow the heap to its
		// goal (in the first second, at ever larger sizes): the median of
		// the collections in the run's second half, by time, is what it
		// holds on to once under way. (By count, the second half of a
		// 500-image run's collections still caught the growth.)
		type gc struct{ at, live float64 }
		var gcs []gc
		for _, m := range live.FindAllStringSubmatch(stderr, -1) {
			at, _ := strconv.ParseFloat(m[1], 64)
			mb, _ := strconv.ParseFloat(m[2], 64)
			gcs = append(gcs, gc{at, mb})
		}
		var lives []float64
		for _, g := range gcs {
			if g.at >= gcs[len(gcs)-1].at/2 {
				lives = append(lives, g.live)
			}
		}
		if len(lives) > 0 {
			slices.Sort(lives)
			heap = int64(lives[len(lives)/2]) << 20
		}
		return rss, heap
	}
	rss500, heap500 := measure(paths[:500])
	rss1500, heap1500 := measure(paths)
	t.Logf("--batch 8: peak RSS %d MiB for 500 images, %d MiB for 1,500; live heap %d and %d MiB",
		rss500>>20, rss1500>>20, heap500>>20, heap1500>>20)
	if heap500 == 0 {
		t.Fatal("no gctrace lines: cannot see the live heap")
	}
	if heap1500 > heap500+32<<20 {
		t.Errorf("memory grows with the number of images: 1,000 more images add %d MiB of live heap", (heap1500-heap500)>>20)
	}
	// Peak RSS moves by ±40 MiB with the GC's timing, so it is bounded by
	// what the GC may allow over that live heap (2× even at GOGC=100) plus
	// the binary and runtime, not compared between runs.
	if bound := 2*heap1500 + 128<<20; rss1500 > bound {
		t.Errorf("peak RSS %d MiB exceeds 2 × live heap + 128 MiB = %d MiB: memory outside the Go heap grows", rss1500>>20, bound>>20)
	}
}
