package limits

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOpenRegular(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.bin")
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(file, link)
	dirLink := filepath.Join(dir, "dirlink")
	os.Symlink(dir, dirLink)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	for _, tc := range []struct {
		name, path, want string // want "" means it opens
	}{
		{"regular", file, ""},
		{"symlink to a file", link, ""},
		{"directory", dir, "is a directory, not a regular file"},
		{"symlink to a directory", dirLink, "is a directory"},
		{"FIFO", fifo, "is a named pipe (FIFO), not a regular file"},
		{"socket", sock, "is a socket"},
		{"/dev/zero", "/dev/zero", "/dev/zero is a character device, not a regular file"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			var f *os.File
			var fi os.FileInfo
			var err error
			go func() { f, fi, err = OpenRegular(tc.path); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("OpenRegular blocked")
			}
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if fi.Size() != 5 || !fi.Mode().IsRegular() {
					t.Errorf("FileInfo %v %d", fi.Mode(), fi.Size())
				}
				return
			}
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("err = %q, want it to name the path and contain %q", err, tc.want)
			}
			if tc.name != "missing" && !errors.Is(err, ErrNotRegular) {
				t.Errorf("err = %v is not ErrNotRegular", err)
			}
		})
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "adapter_config.json")
	os.WriteFile(small, []byte(`{"r": 8}`), 0o644)
	big := filepath.Join(dir, "big.json")
	os.WriteFile(big, make([]byte, 2<<20), 0o644)

	if b, err := ReadFile(small, ConfigBytes); err != nil || string(b) != `{"r": 8}` {
		t.Errorf("ReadFile = %q, %v", b, err)
	}
	_, err := ReadFile(big, ConfigBytes)
	var ee *ExceededError
	if !errors.As(err, &ee) || !strings.HasPrefix(err.Error(), big+": 2097152 bytes in one JSON config file is over the limit of 1048576") ||
		!strings.Contains(err.Error(), "LORAFIT_MAX_CONFIG_BYTES") {
		t.Errorf("big file: %v", err)
	}
	t.Setenv(ConfigBytes.Env, "4")
	if _, err := ReadFile(small, ConfigBytes); err == nil || !strings.Contains(err.Error(), "8 bytes in one JSON config file is over the limit of 4") {
		t.Errorf("lowered limit: %v", err)
	}
	if _, err := ReadFile(dir, ConfigBytes); !errors.Is(err, ErrNotRegular) {
		t.Errorf("directory: %v", err)
	}
}
