package data

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lorafit/lorafit/internal/memcheck"
	"github.com/lorafit/lorafit/limits"
)

// TestReadIDXAllocatesWhatArrives: memory follows the bytes actually read,
// whatever the header claims, and never passes the claim.
func TestReadIDXAllocatesWhatArrives(t *testing.T) {
	claim1GiB := idxBytes(8, []uint32{1024, 1024, 1024}, seq(4096))
	tenBytes := idxBytes(8, []uint32{10}, make([]byte, 10<<20)) // 10 MB of data after a 10-byte claim
	for _, tc := range []struct {
		name, env string
		in        []byte
		offset    int64
		msg       string
	}{
		{"1 GiB claim, 4 KB present", "", claim1GiB, 16 + 4096, "truncated data (want 1073741824 bytes"},
		{"1 GiB claim, gzip", "", gz(claim1GiB), 16 + 4096, "truncated data"},
		{"claim past a raised limit", "8589934592", idxBytes(8, []uint32{2, 1 << 16, 1 << 16}, seq(100)), 16 + 100, "truncated data"},
		{"claim past a lowered limit", "1000", idxBytes(8, []uint32{10, 10, 11}, seq(1100)), 12, "1100 bytes of data in one idx file is over the limit of 1000 (set LORAFIT_MAX_IDX_BYTES"},
		{"gzip holds more than the claim", "", gz(tenBytes), 8 + 10, "trailing data after the 10 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(limits.IDXBytes.Env, tc.env)
			var err error
			// bufio's and gzip's buffers and the first 1 MiB of data.
			memcheck.Bound(t, len(tc.in), 4, 2<<20, func() { _, err = ReadIDX(bytes.NewReader(tc.in), "claim.idx") })
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Offset != tc.offset || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want offset %d and %q", err, tc.offset, tc.msg)
			}
		})
	}
}

// TestFashionMNISTRefusesNonRegular: a FIFO where an idx file should be
// fails at once rather than blocking on open.
func TestFashionMNISTRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "train-images-idx3-ubyte.gz")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := FashionMNIST(dir); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, limits.ErrNotRegular) || !strings.Contains(err.Error(), fifo+" is a named pipe") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("FashionMNIST blocked on a FIFO")
	}
}
