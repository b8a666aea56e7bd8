package data

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorafit/lorafit/internal/memcheck"
)

// idxBytes builds an idx file: magic 0 0 dtype len(dims), dims, data.
func idxBytes(dtype byte, dims []uint32, data []byte) []byte {
	b := []byte{0, 0, dtype, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return append(b, data...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestReadIDXGood(t *testing.T) {
	images := idxBytes(8, []uint32{2, 3, 4}, seq(24))
	labels := idxBytes(8, []uint32{5}, []byte{0, 1, 2, 3, 4})
	for _, tc := range []struct {
		name string
		in   []byte
		dims []int
		data []byte
	}{
		{"idx3 raw", images, []int{2, 3, 4}, seq(24)},
		{"idx3 gzip", gz(images), []int{2, 3, 4}, seq(24)},
		{"idx1 raw", labels, []int{5}, []byte{0, 1, 2, 3, 4}},
		{"idx1 gzip", gz(labels), []int{5}, []byte{0, 1, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadIDX(bytes.NewReader(tc.in), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Dims, tc.dims) || !bytes.Equal(got.Data, tc.data) || got.Name != tc.name {
				t.Errorf("got %s %v %v, want %v %v", got.Name, got.Dims, got.Data, tc.dims, tc.data)
			}
		})
	}
	// Larger than ReadIDX's first allocation, so the buffer must grow.
	big := seq(3 << 20)
	got, err := ReadIDX(bytes.NewReader(gz(idxBytes(8, []uint32{3, 1024, 1024}, big))), "big")
	if err != nil || !bytes.Equal(got.Data, big) {
		t.Fatalf("3 MiB file: err %v", err)
	}
}

func TestReadIDXCorrupt(t *testing.T) {
	good := idxBytes(8, []uint32{2, 2, 2}, seq(8))
	zgood := gz(good)
	badCRC := slices.Clone(zgood)
	badCRC[len(badCRC)-8] ^= 0xff // gzip trailer: CRC-32, then size
	for _, tc := range []struct {
		name   string
		in     []byte
		offset int64
		msg    string
	}{
		{"empty", nil, 0, "truncated header"},
		{"short header", []byte{0, 0, 8}, 3, "truncated header"},
		{"bad magic", append([]byte{1}, good[1:]...), 0, "bad magic"},
		{"text file", []byte("hello, world\n"), 0, "bad magic"},
		{"float dtype", idxBytes(0x0d, []uint32{2}, seq(8)), 2, "data type 0x0d"},
		{"int dtype", idxBytes(0x0c, []uint32{2}, seq(8)), 2, "data type 0x0c"},
		{"2 dims", idxBytes(8, []uint32{2, 2}, seq(4)), 3, "2 dimensions"},
		{"0 dims", idxBytes(8, nil, nil), 3, "0 dimensions"},
		{"truncated dims", good[:10], 10, "truncated dimensions"},
		{"zero count", idxBytes(8, []uint32{0}, nil), 4, "dimension 0 is 0"},
		{"zero width", idxBytes(8, []uint32{2, 2, 0}, nil), 12, "dimension 2 is 0"},
		{"huge count", idxBytes(8, []uint32{0xffffffff}, nil), 4, "4294967295 bytes of data in one idx file is over the limit of 1073741824 (set LORAFIT_MAX_IDX_BYTES"},
		{"overflowing dims", idxBytes(8, []uint32{16, 65536, 65536}, nil), 12, "over the limit"},
		{"all dims max", idxBytes(8, []uint32{0xffffffff, 0xffffffff, 0xffffffff}, nil), 4, "over the limit"},
		{"truncated data", good[:len(good)-3], 16 + 5, "truncated data"},
		{"no data", good[:16], 16, "truncated data"},
		{"trailing data", append(slices.Clone(good), 0), 24, "trailing data"},
		{"truncated labels", idxBytes(8, []uint32{10}, seq(4)), 12, "truncated data"},
		{"gzip truncated", zgood[:len(zgood)/2], -1, "truncated"},
		{"gzip no trailer", zgood[:len(zgood)-8], -1, "truncated"},
		{"gzip bad crc", badCRC, 24, "checksum"},
		{"gzip bad header", []byte{0x1f, 0x8b, 0, 0, 0}, 0, "gzip header"},
		{"gzip of bad magic", gz([]byte("GIF89a")), 0, "bad magic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "corrupt-" + strings.ReplaceAll(tc.name, " ", "-") + ".idx"
			_, err := ReadIDX(bytes.NewReader(tc.in), name)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FormatError", err)
			}
			if fe.File != name || (tc.offset >= 0 && fe.Offset != tc.offset) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %q (offset %d), want file %s, offset %d, %q", err, fe.Offset, name, tc.offset, tc.msg)
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", fe.Offset)) {
				t.Errorf("message %q should name the file and offset", err)
			}
		})
	}
}

func TestFromIDX(t *testing.T) {
	images := &IDX{Name: "img.idx", Dims: []int{3, 2, 2}, Data: seq(12)}
	labels := &IDX{Name: "lbl.idx", Dims: []int{3}, Data: []byte{2, 0, 1}}
	d, err := FromIDX("toy", images, labels, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 3 || d.H != 2 || d.W != 2 || d.C != 1 || !slices.Equal(d.Labels, []int32{2, 0, 1}) || !bytes.Equal(d.Image(1), []byte{4, 5, 6, 7}) {
		t.Errorf("got %v labels %v", d, d.Labels)
	}
	for _, tc := range []struct {
		name           string
		images, labels *IDX
		classes        int
		file           string
		offset         int64
		msg            string
	}{
		{"count mismatch", images, &IDX{Name: "lbl.idx", Dims: []int{2}, Data: []byte{0, 1}}, 3, "lbl.idx", 4, "2 labels for the 3 images of img.idx"},
		{"label too big", images, &IDX{Name: "lbl.idx", Dims: []int{3}, Data: []byte{0, 1, 3}}, 3, "lbl.idx", 10, "label 3 of image 2: only 3 classes"},
		{"labels as images", labels, labels, 3, "lbl.idx", 3, "an images file has 3"},
		{"images as labels", images, images, 3, "img.idx", 3, "a labels file has 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromIDX("toy", tc.images, tc.labels, make([]string, tc.classes))
			var fe *FormatError
			if !errors.As(err, &fe) || fe.File != tc.file || fe.Offset != tc.offset || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want %s at offset %d: %q", err, tc.file, tc.offset, tc.msg)
			}
		})
	}
}

// FuzzReadIDX: any input gives either a consistent IDX or a *FormatError
// naming the file — never a panic or an allocation the input cannot justify.
func FuzzReadIDX(f *testing.F) {
	good := idxBytes(8, []uint32{2, 3, 4}, seq(24))
	for _, seed := range [][]byte{
		idxBytes(8, []uint32{1024, 1024, 1024}, seq(64)), gz(idxBytes(8, []uint32{4}, make([]byte, 1<<16))),
		good, gz(good), idxBytes(8, []uint32{5}, seq(5)), gz(idxBytes(8, []uint32{5}, seq(5))),
		good[:10], good[:20], append(slices.Clone(good), 1), idxBytes(8, []uint32{0xffffffff}, nil),
		idxBytes(0x0d, []uint32{1}, seq(4)), {0x1f, 0x8b}, nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got *IDX
		var err error
		// gzip expands at most 1032:1, the buffer doubles as data
		// arrives, and the first allocation is up to 1 MiB.
		memcheck.Bound(t, len(in), 3*1032, 2<<20, func() { got, err = ReadIDX(bytes.NewReader(in), "fuzz.idx") })
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.File != "fuzz.idx" || fe.Offset < 0 {
				t.Fatalf("err = %v (%T)", err, err)
			}
			if isGzip := len(in) >= 2 && in[0] == 0x1f && in[1] == 0x8b; !isGzip && fe.Offset > int64(len(in)) {
				t.Fatalf("offset %d beyond the %d-byte input: %v", fe.Offset, len(in), err)
			}
			return
		}
		n := 1
		for _, d := range got.Dims {
			n *= d
		}
		if (len(got.Dims) != 1 && len(got.Dims) != 3) || n != len(got.Data) {
			t.Fatalf("dims %v with %d bytes", got.Dims, len(got.Data))
		}
		if len(got.Dims) == 3 {
			labels := &IDX{Name: "l", Dims: got.Dims[:1], Data: make([]byte, got.Dims[0])}
			if d, err := FromIDX("fuzz", got, labels, []string{"x"}); err != nil || d.Len() != got.Dims[0] {
				t.Fatalf("FromIDX: %v", err)
			}
		}
	})
}

// loadMNIST decodes the embedded MNIST once for all tests.
var loadMNIST = sync.OnceValues(func() ([2]*Dataset, error) {
	train, test, err := MNIST()
	return [2]*Dataset{train, test}, err
})

func TestMNIST(t *testing.T) {
	sets, err := loadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	// Class counts of MNIST's training and test sets, as published.
	for i, want := range []struct {
		name   string
		n      int
		counts []int
		first  int32
	}{
		{"mnist/train", 60000, []int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}, 5},
		{"mnist/test", 10000, []int{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}, 7},
	} {
		d := sets[i]
		if d.Name != want.name || d.Len() != want.n || d.H != 28 || d.W != 28 || d.C != 1 || len(d.Images) != want.n*28*28 || d.NumClasses() != 10 {
			t.Errorf("%v, want %s: %d images 28×28×1, 10 classes", d, want.name, want.n)
		}
		if got := d.ClassCounts(); !slices.Equal(got, want.counts) {
			t.Errorf("%s class counts %v, want %v", d.Name, got, want.counts)
		}
		if d.Labels[0] != want.first {
			t.Errorf("%s: first label %d, want %d", d.Name, d.Labels[0], want.first)
		}
		// Digits are white strokes on black: mostly zeros, some 255s.
		zeros, full := 0, 0
		for _, v := range d.Image(0) {
			zeros += b2i(v == 0)
			full += b2i(v >= 250)
		}
		if zeros < 500 || full < 20 {
			t.Errorf("%s image 0: %d black and %d white pixels: not a digit", d.Name, zeros, full)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestMNISTChecksums checks the embedded files against our constants, the
// constants against torchvision's (when Debian's python3 has it), and that
// a damaged file is refused.
func TestMNISTChecksums(t *testing.T) {
	for file := range mnistSums {
		b, err := mnistFS.ReadFile("mnist/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMNIST("mnist/"+file, b); err != nil {
			t.Error(err)
		}
		b[len(b)/2] ^= 1
		if err := checkMNIST("mnist/"+file, b); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("damaged %s: err = %v", file, err)
		}
		if err := checkMNIST("mnist/"+file, b[:len(b)-1]); err == nil {
			t.Errorf("truncated %s accepted", file)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	py := "/usr/bin/python3" // Debian's, where python3-torchvision installs
	if _, err := os.Stat(py); err != nil {
		py = "python3"
	}
	out, err := exec.CommandContext(ctx, py, "-c",
		"import json, torchvision; print(json.dumps(torchvision.datasets.MNIST.resources))").Output()
	if err != nil {
		t.Skipf("torchvision not importable by %s (%v): MD5s not cross-checked", py, err)
	}
	var resources [][2]string // [url or file name, md5]
	if err := json.Unmarshal(out, &resources); err != nil {
		t.Fatalf("torchvision's MNIST.resources %s: %v", out, err)
	}
	seen := 0
	for _, r := range resources {
		want, ok := mnistSums[filepath.Base(r[0])]
		if !ok {
			t.Errorf("torchvision lists %s, which we do not embed", r[0])
			continue
		}
		seen++
		if want.md5 != r[1] {
			t.Errorf("%s: our MD5 %s, torchvision's %s", r[0], want.md5, r[1])
		}
	}
	if seen != len(mnistSums) {
		t.Errorf("torchvision lists %d of our %d files: %s", seen, len(mnistSums), out)
	}
}

func TestFashionMNIST(t *testing.T) {
	if _, err := os.Stat(FashionMNISTDir); err != nil {
		t.Skipf("%s missing (apt-get install dataset-fashion-mnist): %v", FashionMNISTDir, err)
	}
	train, test, err := FashionMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d        *Dataset
		n, per   int
		wantName string
	}{{train, 60000, 6000, "fashion-mnist/train"}, {test, 10000, 1000, "fashion-mnist/test"}} {
		if tc.d.Name != tc.wantName || tc.d.Len() != tc.n || tc.d.H != 28 || tc.d.W != 28 || tc.d.C != 1 {
			t.Errorf("%v, want %s: %d images 28×28", tc.d, tc.wantName, tc.n)
		}
		for c, got := range tc.d.ClassCounts() { // Fashion-MNIST is balanced
			if got != tc.per {
				t.Errorf("%s class %d (%s): %d images, want %d", tc.d.Name, c, tc.d.ClassNames[c], got, tc.per)
			}
		}
	}
	if train.ClassNames[0] != "T-shirt/top" || train.ClassNames[9] != "Ankle boot" {
		t.Errorf("class names %q", train.ClassNames)
	}
	// The first test image of Fashion-MNIST is an ankle boot.
	if test.Labels[0] != 9 {
		t.Errorf("first test label %d, want 9 (Ankle boot)", test.Labels[0])
	}
}

func TestFashionMNISTMissing(t *testing.T) {
	dir := t.TempDir()
	_, _, err := FashionMNIST(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "train-images-idx3-ubyte.gz")) {
		t.Errorf("err = %v, want it to name the missing file", err)
	}
	// A corrupt file there is reported with its path and offset.
	os.WriteFile(filepath.Join(dir, "train-images-idx3-ubyte.gz"), gz(idxBytes(8, []uint32{2, 2, 2}, seq(3))), 0o644)
	_, _, err = FashionMNIST(dir)
	if want := filepath.Join(dir, "train-images-idx3-ubyte.gz") + ": offset 19: truncated data"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
}
