package fsutil

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// TestWriteFileFails: a write that fails leaves the old file as it was and
// no temporary file.
func TestWriteFileFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "result.json")
	if err := WriteBytes(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := WriteFile(path, func(w io.Writer) error {
		w.Write([]byte("half of the new"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("the old file became %q", got)
	}
	if n := names(t, dir); !slices.Equal(n, []string{"result.json"}) {
		t.Errorf("left %v", n)
	}
}

// TestWriteDirFails: a directory whose filling fails does not appear, an
// existing one stays, nothing temporary is left, and the error names the
// directory.
func TestWriteDirFails(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "adapter")
	fill := func(content string) func(string) error {
		return func(tmp string) error { return os.WriteFile(filepath.Join(tmp, "f"), []byte(content), 0o644) }
	}
	if err := WriteDir(dir, fill("v1")); err != nil {
		t.Fatal(err)
	}
	err := WriteDir(dir, func(tmp string) error {
		fill("half")(tmp)
		return errors.New("no space left on device")
	})
	if err == nil || !strings.HasPrefix(err.Error(), "write "+dir+": ") {
		t.Fatalf("err = %v, want it to start with the directory", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != "v1" {
		t.Errorf("the existing directory changed: %q", got)
	}
	if n := names(t, parent); !slices.Equal(n, []string{"adapter"}) {
		t.Errorf("left %v", n)
	}
	if err := WriteDir(dir, fill("v2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != "v2" {
		t.Errorf("replacing gave %q", got)
	}
	if n := names(t, parent); !slices.Equal(n, []string{"adapter"}) {
		t.Errorf("replacing left %v", n)
	}
}

// TestClean removes exactly what killed writes leave: .NAME.tmp-* files
// and directories, nothing else.
func TestClean(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{".results.json.tmp-123", "results.json", "x.tmp-1", ".hidden"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	os.MkdirAll(filepath.Join(dir, ".adapter.tmp-99", "sub"), 0o755)
	os.Mkdir(filepath.Join(dir, "adapter"), 0o755)
	n, err := Clean(dir)
	if err != nil || n != 2 {
		t.Fatalf("Clean: %d, %v", n, err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{".hidden", "adapter", "results.json", "x.tmp-1"}) {
		t.Errorf("after Clean: %v", got)
	}
}
