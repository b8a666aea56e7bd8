package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
