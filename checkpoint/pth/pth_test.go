package pth

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/internal/memcheck"
)

// expectedTensor is one entry of testdata/expected.json, written by
// make_fixtures.py from torch itself.
type expectedTensor struct {
	Name   string    `json:"name"`
	DType  string    `json:"dtype"`
	Shape  []int     `json:"shape"`
	SHA256 string    `json:"sha256"`
	Values []float64 `json:"values"`
}

func loadExpected(t testing.TB) map[string][]expectedTensor {
	t.Helper()
	b, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp map[string][]expectedTensor
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	return exp
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readBytes(b []byte, name string) (*checkpoint.StateDict, error) {
	return Read(bytes.NewReader(b), int64(len(b)), name)
}

func checkStateDict(t *testing.T, sd *checkpoint.StateDict, want []expectedTensor) {
	t.Helper()
	var names []string
	for _, e := range want {
		names = append(names, e.Name)
	}
	if !slices.Equal(sd.Names, names) {
		t.Fatalf("names = %v\nwant    %v", sd.Names, names)
	}
	for _, e := range want {
		got := sd.Get(e.Name)
		if string(got.DType) != e.DType || !slices.Equal(got.Shape, e.Shape) {
			t.Errorf("%s: %s %v, want %s %v", e.Name, got.DType, got.Shape, e.DType, e.Shape)
			continue
		}
		if sum := sha256.Sum256(got.Data); hex.EncodeToString(sum[:]) != e.SHA256 {
			t.Errorf("%s: bytes differ from torch's t.contiguous()", e.Name)
		}
		if e.Values == nil {
			continue
		}
		vals, err := got.Float32s()
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		for i, v := range e.Values {
			if vals[i] != float32(v) {
				t.Errorf("%s[%d] = %v, want %v", e.Name, i, vals[i], v)
				break
			}
		}
	}
}

func TestFixtures(t *testing.T) {
	exp := loadExpected(t)
	if len(exp) < 6 {
		t.Fatalf("expected.json lists %d files", len(exp))
	}
	for file, want := range exp {
		t.Run(file, func(t *testing.T) {
			sd, err := Load(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			checkStateDict(t, sd, want)
		})
	}
}

// TestViews spells out the trickiest geometry cases by value, independently
// of the hashes.
func TestViews(t *testing.T) {
	for _, file := range []string{"dtypes.pth", "dtypes_legacy.pth"} {
		sd, err := Load(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		f32 := func(name string) []float32 {
			v, err := sd.Get(name).Float32s()
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		// base = arange(20) * 0.5
		if got, want := f32("view_a"), []float32{1, 1.5, 2, 2.5, 3, 3.5}; !slices.Equal(got, want) {
			t.Errorf("%s view_a = %v, want %v", file, got, want)
		}
		if got, want := f32("view_b"), []float32{5, 5.5, 6, 6.5}; !slices.Equal(got, want) {
			t.Errorf("%s view_b = %v, want %v", file, got, want)
		}
		if got := f32("every_other"); len(got) != 10 || got[0] != 0.5 || got[9] != 9.5 {
			t.Errorf("%s every_other = %v", file, got)
		}
		if s := sd.Get("scalar_i64"); len(s.Shape) != 0 || s.DType != checkpoint.I64 || binary.LittleEndian.Uint64(s.Data) != 42 {
			t.Errorf("%s scalar_i64 = %+v", file, s)
		}
	}
}

func TestRefusesMaliciousGlobals(t *testing.T) {
	for _, tc := range []struct{ file, global string }{
		{"malicious.pth", "posix.system"},        // protocol 2 GLOBAL
		{"malicious_proto4.pth", "posix.system"}, // protocol 4 STACK_GLOBAL
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := readFixture(t, tc.file)
			sd, err := readBytes(b, "model.pth")
			if err == nil {
				t.Fatalf("loaded %d tensors", sd.Len())
			}
			want := `model.pth: refusing pickle global "` + tc.global + `": only tensor state_dict globals are allowed (like torch.load(weights_only=True))`
			if err.Error() != want || !errors.Is(err, errRefusedGlobal) {
				t.Errorf("error = %q\nwant    %q", err, want)
			}
		})
	}
}

// zipEntry is one entry of an in-memory zip built by makeZip.
type zipEntry struct {
	name    string
	data    []byte
	deflate bool
}

// entriesOf unpacks a fixture so tests can build variants of a real file.
func entriesOf(t testing.TB, b []byte) []zipEntry {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var out []zipEntry
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		out = append(out, zipEntry{name: f.Name, data: buf.Bytes()})
	}
	return out
}

func makeZip(t testing.TB, entries []zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		method := zip.Store
		if e.deflate {
			method = zip.Deflate
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// edit returns a copy of entries with fn applied to each (nil drops it).
func edit(entries []zipEntry, fn func(e zipEntry) *zipEntry) []zipEntry {
	var out []zipEntry
	for _, e := range entries {
		e.data = bytes.Clone(e.data)
		if ne := fn(e); ne != nil {
			out = append(out, *ne)
		}
	}
	return out
}

// pk assembles a pickle from opcodes and operands: strings become
// BINUNICODE, ints BININT (LONG1 past 32 bits), []byte is copied raw.
func pk(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = append(b, opBinUnicode)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
			b = append(b, p...)
		case int:
			if p == int(int32(p)) {
				b = append(b, opBinInt)
				b = binary.LittleEndian.AppendUint32(b, uint32(int32(p)))
			} else {
				b = append(b, opLong1, 8)
				b = binary.LittleEndian.AppendUint64(b, uint64(p))
			}
		case []byte:
			b = append(b, p...)
		case byte:
			b = append(b, p)
		default:
			panic(p)
		}
	}
	return b
}

func global(module, name string) []byte { return []byte("c" + module + "\n" + name + "\n") }

// tensorPickle pickles {name: tensor} for one FloatStorage "0" of numel
// elements viewed with the given offset, size and stride.
func tensorPickle(name string, numel, offset int, size, stride []int) []byte {
	tuple := func(xs []int) []any {
		out := []any{byte(opMark)}
		for _, x := range xs {
			out = append(out, x)
		}
		return append(out, byte(opTuple))
	}
	parts := []any{[]byte{opProto, 2}, byte(opEmptyDict), name, global("torch._utils", "_rebuild_tensor_v2"),
		byte(opMark), byte(opMark), "storage", global("torch", "FloatStorage"), "0", "cpu", numel, byte(opTuple), byte(opBinPersID),
		offset}
	parts = append(parts, tuple(size)...)
	parts = append(parts, tuple(stride)...)
	parts = append(parts, byte(opNewFalse), byte(opEmptyDict), byte(opTuple), byte(opReduce), byte(opSetItem), byte(opStop))
	return pk(parts...)
}

func TestErrors(t *testing.T) {
	tiny := entriesOf(t, readFixture(t, "tiny_model.pth"))
	exp := loadExpected(t)
	floats := make([]byte, 16)

	replace := func(name string, data []byte) func(e zipEntry) *zipEntry {
		return func(e zipEntry) *zipEntry {
			if e.name == name {
				e.data = data
			}
			return &e
		}
	}
	drop := func(name string) func(e zipEntry) *zipEntry {
		return func(e zipEntry) *zipEntry {
			if e.name == name {
				return nil
			}
			return &e
		}
	}
	oneTensor := func(pkl []byte, storageBytes []byte) []byte {
		return makeZip(t, []zipEntry{{name: "archive/data.pkl", data: pkl}, {name: "archive/data/0", data: storageBytes}})
	}
	pklOp := func(op byte, at int) []byte {
		for _, e := range tiny {
			if e.name == "tiny_model/data.pkl" {
				p := bytes.Clone(e.data)
				p[at] = op
				return makeZip(t, edit(tiny, replace(e.name, p)))
			}
		}
		panic("no data.pkl")
	}
	var tarHeader [1024]byte
	copy(tarHeader[257:], "ustar")

	for _, tc := range []struct {
		name string
		file []byte
		want string // substring of the error; "" means it must load
	}{
		{"deflated entries", makeZip(t, edit(tiny, func(e zipEntry) *zipEntry { e.deflate = true; return &e })), ""},
		{"other prefix", makeZip(t, edit(tiny, func(e zipEntry) *zipEntry {
			e.name = "archive/" + strings.TrimPrefix(e.name, "tiny_model/")
			return &e
		})), ""},
		{"byteorder little", makeZip(t, append(edit(tiny, drop("")), zipEntry{name: "tiny_model/byteorder", data: []byte("little")})), ""},
		{"byteorder big", makeZip(t, append(edit(tiny, drop("")), zipEntry{name: "tiny_model/byteorder", data: []byte("big")})), `byteorder "big"`},
		{"missing data.pkl", makeZip(t, edit(tiny, drop("tiny_model/data.pkl"))), "no data.pkl"},
		{"missing storage", makeZip(t, edit(tiny, drop("tiny_model/data/0"))), `missing storage entry "tiny_model/data/0"`},
		{"storage size", makeZip(t, edit(tiny, replace("tiny_model/data/0", make([]byte, 5)))), `storage entry "tiny_model/data/0" holds 5 bytes, but 108 × F32 needs 432`},
		{"torchscript", makeZip(t, append(edit(tiny, drop("")), zipEntry{name: "tiny_model/constants.pkl", data: []byte{opProto, 2, ')', '.'}})), "TorchScript"},
		{"unknown opcode", pklOp(0xff, 2), "tiny_model/data.pkl: corrupt pickle: opcode 0xff at offset 2: unknown"},
		{"not a checkpoint", []byte("hello, world"), "not a PyTorch checkpoint"},
		{"empty", nil, "too short"},
		{"tar", tarHeader[:], "tar-based"},
		{"truncated zip", readFixture(t, "tiny_model.pth")[:2000], "not a valid zip archive"},
		{"plain pickle", pk([]byte{opProto, 2}, 7, byte(opStop)), "without torch.save's magic number"},
		{"view in bounds", oneTensor(tensorPickle("w", 4, 1, []int{3}, []int{1}), floats), ""},
		{"view out of bounds", oneTensor(tensorPickle("w", 4, 2, []int{3}, []int{1}), floats),
			`tensor "w": view (offset 2, size [3], stride [1]) reaches element 4 of storage "0", which holds 4 elements`},
		{"stride out of bounds", oneTensor(tensorPickle("w", 4, 0, []int{2, 2}, []int{3, 1}), floats), "reaches element 4"},
		{"negative stride", oneTensor(tensorPickle("w", 4, 3, []int{4}, []int{-1}), floats), "negative size or stride"},
		{"overflowing view", oneTensor(tensorPickle("w", 4, 0, []int{1 << 30, 1 << 30, 1 << 30}, []int{1, 1, 1}), floats), "too large"},
		{"broadcast bomb", oneTensor(tensorPickle("w", 4, 0, []int{1 << 20, 1 << 20}, []int{0, 0}), floats), "refusing to allocate"},
		{"small broadcast", oneTensor(tensorPickle("w", 4, 0, []int{3, 4}, []int{0, 1}), floats), ""},
		{"numel vs entry size", oneTensor(tensorPickle("w", 5, 0, []int{4}, []int{1}), floats), "holds 16 bytes, but 5 × F32 needs 20"},
		{"non-tensor value", oneTensor(pk([]byte{opProto, 2}, byte(opEmptyDict), "epoch", 3, byte(opSetItem), byte(opStop)), nil),
			`state_dict key "epoch" holds 3, not a tensor`},
		{"self-containing list", oneTensor(pk([]byte{opProto, 2}, byte(opEmptyDict), "x", byte(opEmptyList), []byte{opBinPut, 0, opBinGet, 0, opAppend}, byte(opSetItem), byte(opStop)), nil),
			`key "x" holds a list`},
		{"top-level list", oneTensor(pk([]byte{opProto, 2}, byte(opEmptyList), byte(opStop)), nil), "the saved object is a list"},
		{"no STOP", oneTensor(pk([]byte{opProto, 2}, byte(opEmptyDict)), nil), "before the STOP opcode"},
		{"huge length", oneTensor(pk([]byte{opProto, 2, opBinUnicode, 0xff, 0xff, 0xff, 0x7f, 'a', '.'}), nil), "runs past the end"},
		{"bad memo", oneTensor(pk([]byte{opProto, 2, opBinGet, 9, '.'}), nil), "memo index 9 was never stored"},
		{"builtins.eval", oneTensor(pk([]byte{opProto, 2}, global("builtins", "eval"), "1", []byte{opTuple1, opReduce, opStop}), nil),
			`refusing pickle global "builtins.eval"`},
		{"call storage class", oneTensor(pk([]byte{opProto, 2}, global("torch", "FloatStorage"), []byte{opEmptyTuple, opReduce, opStop}), nil),
			"cannot call torch.FloatStorage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, err := readBytes(tc.file, "x.pth")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(tc.name, "prefix") || strings.Contains(tc.name, "deflate") || strings.Contains(tc.name, "little") {
					checkStateDict(t, sd, exp["tiny_model.pth"])
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded %d tensors, want error containing %q", sd.Len(), tc.want)
			}
			if !strings.HasPrefix(err.Error(), "x.pth: ") || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errInternal) {
				t.Errorf("error = %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestWrappedUnderModel(t *testing.T) {
	w := tensorPickle("w", 4, 0, []int{2, 2}, []int{1, 2}) // a transposed 2×2
	// {"epoch": 1, "model": {...}}: splice the tensor dict in as a value.
	inner := w[2 : len(w)-1]
	pkl := pk([]byte{opProto, 2}, byte(opEmptyDict), "epoch", 1, byte(opSetItem), "model", inner, byte(opSetItem), byte(opStop))
	storage := make([]byte, 16)
	for i, v := range []float32{1, 2, 3, 4} {
		binary.LittleEndian.PutUint32(storage[4*i:], math.Float32bits(v))
	}
	file := makeZip(t, []zipEntry{{name: "m/data.pkl", data: pkl}, {name: "m/data/0", data: storage}})
	sd, err := readBytes(file, "m.pth")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := sd.Get("w").Float32s()
	if !slices.Equal(sd.Names, []string{"w"}) || !slices.Equal(got, []float32{1, 3, 2, 4}) {
		t.Errorf("names %v values %v", sd.Names, got)
	}
}

// TestCorruptionNeverPanics truncates every fixture at many lengths and
// mutates every byte of a pickle; each must fail (or load) cleanly.
func TestCorruptionNeverPanics(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.pth")
	for _, f := range files {
		b := readFixture(t, filepath.Base(f))
		step := 1
		if !strings.Contains(f, "legacy") {
			step = 7 // a truncated zip fails early, at its directory
		}
		for n := 0; n < len(b); n += step {
			_, err := readBytes(b[:n], "cut.pth")
			if err == nil || errors.Is(err, errInternal) {
				t.Fatalf("%s cut at %d: err = %v", f, n, err)
			}
		}
	}

	tiny := entriesOf(t, readFixture(t, "tiny_model.pth"))
	var pkl []byte
	for _, e := range tiny {
		if strings.HasSuffix(e.name, "data.pkl") {
			pkl = e.data
		}
	}
	rng := rand.New(rand.NewSource(1))
	for i := range pkl {
		for _, cut := range []bool{false, true} {
			p := bytes.Clone(pkl)
			p[i] = byte(rng.Intn(256))
			if cut {
				p = p[:i]
			}
			file := makeZip(t, edit(tiny, func(e zipEntry) *zipEntry {
				if strings.HasSuffix(e.name, "data.pkl") {
					e.data = p
				}
				return &e
			}))
			_, err := readBytes(file, "mut.pth")
			if errors.Is(err, errInternal) || (cut && err == nil) {
				t.Fatalf("data.pkl byte %d (cut %v): err = %v", i, cut, err)
			}
		}
	}
}

func TestRandomBytes(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for _, prefix := range []string{"", "PK\x03\x04", "\x80\x02", "\x80\x02\x8a\x0a"} {
		for _, n := range []int{0, 1, 3, 100, 4096, 65536} {
			b := make([]byte, n)
			rng.Read(b)
			b = append([]byte(prefix), b...)
			if _, err := readBytes(b, "random.pth"); err == nil || errors.Is(err, errInternal) {
				t.Errorf("prefix %q + %d random bytes: err = %v", prefix, n, err)
			}
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.pth")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v", err)
	}
}

func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.pth")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(tensorPickle("w", 4, 0, []int{2, 2}, []int{1, 2}))
	f.Add(makeZip(f, []zipEntry{{name: "b/data.pkl", data: append([]byte{opProto, 2, opEmptyList}, repeat(70_000, opDup)...)}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var sd *checkpoint.StateDict
		var err error
		// Legitimate expansion: deflate (maxDeflateRatio, read through a
		// growing buffer), views repeating stored bytes (4×, plus
		// budgetSlack for broadcasts) and ~200 bytes per pickle value.
		memcheck.Bound(t, len(b), 8*maxDeflateRatio, budgetSlack+32<<20, func() { sd, err = readBytes(b, "fuzz.pth") })
		if errors.Is(err, errInternal) {
			t.Fatal(err)
		}
		if err != nil {
			return
		}
		for _, name := range sd.Names {
			ts := sd.Get(name)
			if len(ts.Data) != ts.NumElements()*ts.DType.Size() {
				t.Fatalf("%s: %d bytes for %v %s", name, len(ts.Data), ts.Shape, ts.DType)
			}
		}
	})
}

// TestSharedStorage covers tied weights: two names over one whole storage
// (and one tensor object stored under two names via the memo) must come out
// equal but never share bytes.
func TestSharedStorage(t *testing.T) {
	a := tensorPickle("a", 4, 0, []int{4}, []int{1})
	body := a[3 : len(a)-2] // after PROTO 2 and EMPTY_DICT, before SETITEM STOP
	b := bytes.Replace(body, []byte("\x01\x00\x00\x00a"), []byte("\x01\x00\x00\x00b"), 1)
	pkl := pk([]byte{opProto, 2}, byte(opEmptyDict),
		body, []byte{opBinPut, 0, opSetItem},
		b, byte(opSetItem),
		"c", []byte{opBinGet, 0, opSetItem, opStop})
	storage := []byte("0123456789abcdef")
	sd, err := readBytes(makeZip(t, []zipEntry{{name: "t/data.pkl", data: pkl}, {name: "t/data/0", data: storage}}), "tied.pth")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sd.Names, []string{"a", "b", "c"}) {
		t.Fatalf("names %v", sd.Names)
	}
	for _, n := range sd.Names {
		if !bytes.Equal(sd.Get(n).Data, storage) {
			t.Fatalf("%s = %q", n, sd.Get(n).Data)
		}
	}
	sd.Get("a").Data[0] = 'X'
	sd.Get("c").Data[1] = 'Y'
	if string(sd.Get("b").Data) != string(storage) || sd.Get("a").Data[1] != '1' {
		t.Errorf("tensors share bytes: a=%q b=%q c=%q", sd.Get("a").Data, sd.Get("b").Data, sd.Get("c").Data)
	}
}

// TestLyingZipSizes: a deflated entry whose header claims more data than it
// holds must fail without allocating the claimed size.
func TestLyingZipSizes(t *testing.T) {
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	fw.Write(make([]byte, 4096))
	fw.Close()
	for _, tc := range []struct {
		claim int64
		want  string
	}{
		{1 << 40, "LORAFIT_MAX_CHECKPOINT_BYTES"},    // beyond the limit
		{1 << 30, "implausible sizes"},               // beyond any deflate ratio
		{int64(comp.Len()) * 1000, "unexpected EOF"}, // plausible, but not there
		{4096, ""}, // the truth
	} {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("z/data.pkl")
		w.Write(tensorPickle("w", int(tc.claim/4), 0, []int{1}, []int{1}))
		rw, err := zw.CreateRaw(&zip.FileHeader{Name: "z/data/0", Method: zip.Deflate,
			CompressedSize64: uint64(comp.Len()), UncompressedSize64: uint64(tc.claim), CRC32: crc32.ChecksumIEEE(make([]byte, 4096))})
		if err != nil {
			t.Fatal(err)
		}
		rw.Write(comp.Bytes())
		zw.Close()
		_, err = readBytes(buf.Bytes(), "lie.pth")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("claim %d: err = %v, want %q", tc.claim, err, tc.want)
		}
	}
}

// TestPanicBecomesError checks the last-resort recover in Read, using a
// reader that panics as a stand-in for a bug.
func TestPanicBecomesError(t *testing.T) {
	_, err := Read(panicReader{}, 100, "p.pth")
	if !errors.Is(err, errInternal) || !strings.HasPrefix(err.Error(), "p.pth: ") {
		t.Errorf("err = %v", err)
	}
}

type panicReader struct{}

func (panicReader) ReadAt([]byte, int64) (int, error) { panic("boom") }
