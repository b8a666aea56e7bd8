package pth

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/internal/memcheck"
	"github.com/lorafit/lorafit/limits"
)

// repeat is n copies of an opcode sequence.
func repeat(n int, ops ...byte) []byte { return bytes.Repeat(ops, n) }

// TestPickleBombs: small files whose pickles or sizes would make a naive
// loader allocate without end must fail fast, naming the limit's variable,
// and allocate little.
func TestPickleBombs(t *testing.T) {
	zipOf := func(pkl []byte) []byte { return makeZip(t, []zipEntry{{name: "b/data.pkl", data: pkl}}) }
	proto := []byte{opProto, 2}
	// lyingStorage has a stored storage entry that claims more bytes than
	// follow it, after a pad entry that nothing reads.
	lyingStorage := func(claim int64, pad, data []byte) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("z/data.pkl")
		w.Write(tensorPickle("w", int(claim/4), 0, []int{1}, []int{1}))
		w, _ = zw.CreateHeader(&zip.FileHeader{Name: "z/pad", Method: zip.Store})
		w.Write(pad)
		rw, err := zw.CreateRaw(&zip.FileHeader{Name: "z/data/0", Method: zip.Store,
			CompressedSize64: uint64(claim), UncompressedSize64: uint64(claim)})
		if err != nil {
			t.Fatal(err)
		}
		rw.Write(data)
		zw.Close()
		return buf.Bytes()
	}
	random := make([]byte, 10<<20)
	rand.Read(random)
	bigPickle := func() []byte {
		// A deflated data.pkl that claims 100 MB: a plausible ratio for
		// its ~100 KB of compressed data, but past LORAFIT_MAX_PICKLE_BYTES.
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		rw, _ := zw.CreateRaw(&zip.FileHeader{Name: "b/data.pkl", Method: zip.Deflate,
			CompressedSize64: 100 << 10, UncompressedSize64: 100 << 20})
		rw.Write(random[:100<<10])
		zw.Close()
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"DUP repetition", zipOf(append(append(proto, opEmptyList), repeat(300_000, opDup)...)), "65537 entries on the pickle stack is over the limit of 65536 (set LORAFIT_MAX_PICKLE_STACK"},
		{"dict per byte", zipOf(append(proto, repeat(400_000, opEmptyDict)...)), "LORAFIT_MAX_PICKLE_STACK"},
		{"dict per byte, popped", zipOf(append(proto, repeat(1_100_000, opEmptyDict, opPop)...)), "1048577 values pushed by one pickle is over the limit of 1048576 (set LORAFIT_MAX_PICKLE_OBJECTS"},
		{"deep nesting", zipOf(append(proto, repeat(100_000, opMark, opEmptyList)...)), "LORAFIT_MAX_PICKLE_STACK"},
		{"huge list", zipOf(append(append(proto, opEmptyList), repeat(10, append(append([]byte{opMark}, repeat(30_000, opNone)...), opAppends)...)...)),
			"270000 items in one pickled list, tuple or dict is over the limit of 262144 (set LORAFIT_MAX_PICKLE_CONTAINER"},
		{"memo flood", zipOf(append(append(proto, opNone), pkMemo(1_100_000)...)), "1048577 pickle memo entries is over the limit"},
		{"huge string", zipOf(append(proto, pk([]byte{opBinBytes8}, []byte{0, 0, 0, 8, 0, 0, 0, 0}, make([]byte, 8))...)), "runs past the end"},
		{"lying storage size", lyingStorage(10<<30, nil, random), `storage "0" (2684354560 × F32): 10737418240 bytes of tensor data in one checkpoint is over the limit of 4294967296 (set LORAFIT_MAX_CHECKPOINT_BYTES`},
		{"storage bigger than the file", lyingStorage(1<<20, nil, random[:1000]), "has implausible sizes (1048576 compressed, 1048576 uncompressed, 1048576 expected) for a "},
		{"storage past the file end", lyingStorage(1<<20, random[:2<<20], random[:1000]), `zip entry "z/data/0": its 1048576 bytes are not in the `},
		{"pickle past the limit", bigPickle(), "b/data.pkl: 104857600 bytes in one pickle is over the limit of 67108864 (set LORAFIT_MAX_PICKLE_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			// A pickle's values cost up to ~200 bytes per byte of input.
			memcheck.Bound(t, len(tc.file), 256, 8<<20, func() { _, err = readBytes(tc.file, "bomb.pth") })
			if err == nil || !strings.HasPrefix(err.Error(), "bomb.pth: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// pkMemo pushes nothing new but stores n memo entries (LONG_BINPUT i).
func pkMemo(n int) []byte {
	b := make([]byte, 0, 5*n)
	for i := range n {
		b = append(b, opLongBinPut, byte(i), byte(i>>8), byte(i>>16), byte(i>>24))
	}
	return b
}

// TestLimitsFitRealCheckpoint unpickles the data.pkl torch.save writes for a
// ResNet-152 training checkpoint with every pickle limit cut to a tenth of
// its default: the defaults leave real files ten times the room they need.
func TestLimitsFitRealCheckpoint(t *testing.T) {
	f, err := os.Open("testdata/resnet152_checkpoint.pkl.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	pkl, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*limits.Limit{limits.PickleBytes, limits.PickleObjects, limits.PickleStack, limits.PickleMemo, limits.PickleContainer} {
		t.Setenv(l.Env, fmt.Sprint(l.Default/10))
	}
	if err := limits.PickleBytes.Check(int64(len(pkl))); err != nil {
		t.Fatal(err)
	}
	l := &loader{storages: map[string]*storageRef{}, maxBytes: limits.CheckpointBytes.Default}
	l.attach = func(*storageRef) error { return nil }
	u, err := newUnpickler(newSource(bytes.NewReader(pkl), 0, int64(len(pkl))), l.persistentLoad)
	if err != nil {
		t.Fatal(err)
	}
	top, err := u.load()
	if err != nil {
		t.Fatal(err)
	}
	d, ok := top.(*pyDict)
	if !ok {
		t.Fatalf("top is a %s", typeName(top))
	}
	inner, _ := d.get("state_dict")
	if n := len(inner.(*pyDict).keys); n != 932 || len(l.storages) != 2*467+465 {
		// 932 entries; 467 parameters with a momentum buffer each, plus
		// 465 buffers (running stats), as torchvision's resnet152 has.
		t.Errorf("%d state_dict entries, %d storages", n, len(l.storages))
	}
	t.Logf("%d bytes of pickle, %d values pushed", len(pkl), u.pushes)
}

// TestCheckpointBytesLimit: a real checkpoint over a lowered limit is
// refused, naming the variable; at the limit it loads.
func TestCheckpointBytesLimit(t *testing.T) {
	for _, file := range []string{"tiny_model.pth", "tiny_model_legacy.pth"} {
		sd, err := Load(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, n := range sd.Names {
			total += int64(len(sd.Get(n).Data))
		}
		t.Setenv(limits.CheckpointBytes.Env, fmt.Sprint(total))
		if _, err := Load(filepath.Join("testdata", file)); err != nil {
			t.Errorf("%s at the limit: %v", file, err)
		}
		t.Setenv(limits.CheckpointBytes.Env, fmt.Sprint(total-1))
		_, err = Load(filepath.Join("testdata", file))
		if err == nil || !strings.Contains(err.Error(), "over the limit of "+fmt.Sprint(total-1)+" (set LORAFIT_MAX_CHECKPOINT_BYTES") {
			t.Errorf("%s over the limit: %v", file, err)
		}
		t.Setenv(limits.CheckpointBytes.Env, "")
	}
}

// TestViewsPastCheckpointBytes: views may repeat stored bytes (a
// broadcast), but the tensors produced may not pass the limit either.
func TestViewsPastCheckpointBytes(t *testing.T) {
	file := makeZip(t, []zipEntry{{name: "b/data.pkl", data: tensorPickle("w", 4, 0, []int{3, 4}, []int{0, 1})}, {name: "b/data/0", data: make([]byte, 16)}})
	t.Setenv(limits.CheckpointBytes.Env, "48")
	if _, err := readBytes(file, "views.pth"); err != nil {
		t.Errorf("48 bytes of output at a 48-byte limit: %v", err)
	}
	t.Setenv(limits.CheckpointBytes.Env, "47")
	_, err := readBytes(file, "views.pth")
	if want := `views.pth: tensor "w": tensors expand past the limit: 48 bytes of tensor data in one checkpoint is over the limit of 47`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v\nwant %s…", err, want)
	}
}

func TestLoadRefusesNonRegular(t *testing.T) {
	for _, path := range []string{"/dev/zero", "testdata"} {
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+" is a ") {
			t.Errorf("Load(%s): %v", path, err)
		}
	}
}
