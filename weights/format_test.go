package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/limits"
)

// safetensorsWithHeader writes sd with safetensors.Write, then pads the
// JSON header with spaces (as the format allows) to exactly n bytes.
func safetensorsWithHeader(t *testing.T, sd *checkpoint.StateDict, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, sd, nil); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	hlen := binary.LittleEndian.Uint64(b)
	json := bytes.TrimRight(b[8:8+hlen], " ")
	if len(json) > n {
		t.Fatalf("header needs %d bytes, more than %d", len(json), n)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(n))
	out = append(out, json...)
	out = append(out, bytes.Repeat([]byte(" "), n-len(json))...)
	return append(out, b[8+hlen:]...)
}

// TestFormatEveryHeaderLength: a valid safetensors file is recognized and
// loads whatever its header length modulo 256 — including 128, 384, 640,
// 896, 1152 and 1408, whose first two bytes (0x80, ≤ 5) are also how a
// legacy pickle starts.
func TestFormatEveryHeaderLength(t *testing.T) {
	sd := checkpoint.NewStateDict()
	sd.Set("w", checkpoint.FromFloat32([]int{2}, []float32{1.5, -2}))
	lengths := []int{128, 384, 640, 896, 1152, 1408}
	for n := 512; n < 512+256; n++ {
		lengths = append(lengths, n)
	}
	dir := t.TempDir()
	for _, n := range lengths {
		file := safetensorsWithHeader(t, sd, n)
		if got := Format(file[:9], int64(len(file))); got != "safetensors" {
			t.Errorf("header length %d (starts % x): Format = %q", n, file[:2], got)
			continue
		}
		p := filepath.Join(dir, "w.safetensors")
		if err := os.WriteFile(p, file, 0o644); err != nil {
			t.Fatal(err)
		}
		got, info, err := ReadFile(p)
		if err != nil {
			t.Fatalf("header length %d: %v", n, err)
		}
		if v, _ := got.Get("w").Float32s(); info.Format != "safetensors" || !slices.Equal(v, []float32{1.5, -2}) {
			t.Fatalf("header length %d: %s %v", n, info.Format, v)
		}
	}
}

func TestFormat(t *testing.T) {
	pths, _ := filepath.Glob("../checkpoint/pth/testdata/*.pth")
	if len(pths) < 8 {
		t.Fatalf("only %d .pth fixtures", len(pths))
	}
	for _, p := range pths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := Format(b[:9], int64(len(b))); got != "pth" {
			t.Errorf("%s: Format = %q", p, got)
		}
		_, info, err := ReadFile(p)
		if strings.Contains(p, "malicious") {
			if err == nil || !strings.Contains(err.Error(), "refusing pickle global") {
				t.Errorf("%s: %v", p, err)
			}
		} else if err != nil || info.Format != "pth" {
			t.Errorf("%s: %v %v", p, info.Format, err)
		}
	}
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"empty safetensors", append(binary.LittleEndian.AppendUint64(nil, 2), "{}"...), "safetensors"},
		{"header length one past the file", append(binary.LittleEndian.AppendUint64(nil, 3), "{}"...), ""},
		{"header length 896 past the file", append([]byte{0x80, 0x03, 0, 0, 0, 0, 0, 0}, "{}"...), "pth"}, // then a (corrupt) pickle
		{"empty zip", []byte("PK\x05\x06" + strings.Repeat("\x00", 18)), "pth"},
		{"text", []byte("hello, world"), ""},
		{"short", []byte{0x80}, ""},
		{"pickle protocol 1 opcode", []byte{0x80, 0x01, 'K', 1, '.', 0, 0, 0, 0}, ""},
	} {
		head := tc.file[:min(9, len(tc.file))]
		if got := Format(head, int64(len(tc.file))); got != tc.want {
			t.Errorf("%s: Format = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestReadFileRefusesNonRegular: `lorafit inspect /dev/zero` or a FIFO
// must fail at once, not read forever or block.
func TestReadFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "model.pth")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/zero", fifo, dir} {
		done := make(chan error, 1)
		go func() { _, _, err := ReadFile(p); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, limits.ErrNotRegular) || !strings.HasPrefix(err.Error(), p+" is a") {
				t.Errorf("ReadFile(%s): %v", p, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("ReadFile(%s) blocked", p)
		}
		if err := VerifyFile(p, "abc"); !errors.Is(err, limits.ErrNotRegular) {
			t.Errorf("VerifyFile(%s): %v", p, err)
		}
	}
}
