package safetensors

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lorafit/lorafit/internal/memcheck"
	"github.com/lorafit/lorafit/limits"
)

// TestHostileAllocatesLittle: whatever a header claims, Read allocates no
// more than the file's own bytes justify before failing.
func TestHostileAllocatesLittle(t *testing.T) {
	padded := func(header string, n int) []byte { return file(header+strings.Repeat(" ", n), nil) }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"header length 2^63", withLen(1<<63, "{}"), "exceeds the 100000000-byte limit"},
		{"header length 99 MB in 10 bytes", withLen(99_000_000, "{}"), "runs past the end of the 10-byte file"},
		{"offsets past the data", file(`{"a":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}`, make([]byte, 16)),
			"outside the 16-byte data buffer"},
		{"shape claims 2^62 elements", file(`{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}`, make([]byte, 4)), "overflows"},
		{"many-dimensional empty tensor", padded(`{"a":{"dtype":"F32","shape":[`+strings.Repeat("0,", 100000)+`0],"data_offsets":[0,4]}}`, 0),
			"lie outside the 0-byte data buffer"},
		{"header of spaces", padded(`{}`, 1<<20), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			// The JSON decoder keeps a copy of the header, and each shape
			// entry costs a few words.
			memcheck.Bound(t, len(tc.data), 48, 1<<20, func() {
				_, _, err = Read(bytes.NewReader(tc.data), int64(len(tc.data)), "hostile.safetensors")
			})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "safetensors: hostile.safetensors: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckpointBytesLimit(t *testing.T) {
	const path = "testdata/reference.safetensors"
	entries, _, err := ReadHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	data := entries[len(entries)-1].End
	t.Setenv(limits.CheckpointBytes.Env, fmt.Sprint(data))
	if _, _, err := Load(path); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	t.Setenv(limits.CheckpointBytes.Env, fmt.Sprint(data-1))
	_, _, err = Load(path)
	want := fmt.Sprintf("safetensors: %s: data buffer: %d bytes of tensor data in one checkpoint is over the limit of %d (set LORAFIT_MAX_CHECKPOINT_BYTES to raise it)", path, data, data-1)
	if err == nil || err.Error() != want {
		t.Errorf("over the limit: %v\nwant %s", err, want)
	}
	if _, _, err := ReadHeader(path); err != nil {
		t.Errorf("ReadHeader reads no data, so the limit does not apply: %v", err)
	}
}

// TestRefusesNonRegular: a device, a FIFO or a directory fails at once in
// Load and ReadHeader, instead of reading forever or blocking.
func TestRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.safetensors")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", fifo, dir} {
		for name, read := range map[string]func(string) error{
			"Load":       func(p string) error { _, _, err := Load(p); return err },
			"ReadHeader": func(p string) error { _, _, err := ReadHeader(p); return err },
		} {
			done := make(chan error, 1)
			go func() { done <- read(path) }()
			select {
			case err := <-done:
				if !errors.Is(err, limits.ErrNotRegular) || !strings.Contains(err.Error(), path) {
					t.Errorf("%s(%s): %v", name, path, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s(%s) blocked", name, path)
			}
		}
	}
	os.Remove(fifo)
}
