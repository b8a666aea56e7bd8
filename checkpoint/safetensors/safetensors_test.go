package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/checkpoint"
)

var update = flag.Bool("update", false, "rewrite testdata/go_written.safetensors (then run make_fixtures.py --check-go)")

// expected is testdata/reference.json, written by make_fixtures.py.
type expected struct {
	Order    []string          `json:"order"`
	Metadata map[string]string `json:"metadata"`
	Tensors  map[string]struct {
		DType   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		DataHex string `json:"data_hex"`
		Values  []any  `json:"values"`
	} `json:"tensors"`
}

func loadExpected(t *testing.T) *expected {
	t.Helper()
	raw, err := os.ReadFile("testdata/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // I64 values beyond 2^53 must stay exact
	var e expected
	if err := dec.Decode(&e); err != nil {
		t.Fatal(err)
	}
	return &e
}

// stateDictFrom builds the fixture's tensors in the given order.
func stateDictFrom(t *testing.T, e *expected, order []string) *checkpoint.StateDict {
	t.Helper()
	sd := checkpoint.NewStateDict()
	for _, name := range order {
		x := e.Tensors[name]
		data, err := hex.DecodeString(x.DataHex)
		if err != nil {
			t.Fatal(err)
		}
		sd.Set(name, &checkpoint.Tensor{DType: checkpoint.DType(x.DType), Shape: x.Shape, Data: data})
	}
	return sd
}

// checkValue compares element i of raw little-endian data with the JSON value
// make_fixtures.py recorded: an exact integer, or a float64 (or "nan"/"inf").
func checkValue(t *testing.T, name string, dt checkpoint.DType, data []byte, i int, want any) {
	t.Helper()
	le := binary.LittleEndian
	var gotInt int64
	var gotFloat float64
	isFloat := true
	switch dt {
	case checkpoint.F64:
		gotFloat = math.Float64frombits(le.Uint64(data[8*i:]))
	case checkpoint.F32:
		gotFloat = float64(math.Float32frombits(le.Uint32(data[4*i:])))
	case checkpoint.F16:
		gotFloat = float64(checkpoint.HalfToFloat32(le.Uint16(data[2*i:])))
	case checkpoint.BF16:
		gotFloat = float64(math.Float32frombits(uint32(le.Uint16(data[2*i:])) << 16))
	default:
		isFloat = false
		switch dt {
		case checkpoint.I64:
			gotInt = int64(le.Uint64(data[8*i:]))
		case checkpoint.I32:
			gotInt = int64(int32(le.Uint32(data[4*i:])))
		case checkpoint.I16:
			gotInt = int64(int16(le.Uint16(data[2*i:])))
		case checkpoint.I8:
			gotInt = int64(int8(data[i]))
		case checkpoint.U8, checkpoint.Bool:
			gotInt = int64(data[i])
		default:
			t.Fatalf("%s: unexpected dtype %s", name, dt)
		}
	}
	if !isFloat {
		n, err := want.(json.Number).Int64()
		if err != nil || n != gotInt {
			t.Errorf("%s[%d] = %d, want %v", name, i, gotInt, want)
		}
		return
	}
	var w float64
	switch v := want.(type) {
	case string:
		switch v {
		case "nan":
			if !math.IsNaN(gotFloat) {
				t.Errorf("%s[%d] = %v, want NaN", name, i, gotFloat)
			}
			return
		case "inf":
			w = math.Inf(1)
		case "-inf":
			w = math.Inf(-1)
		}
	case json.Number:
		var err error
		if w, err = strconv.ParseFloat(string(v), 64); err != nil {
			t.Fatal(err)
		}
	}
	if math.Float64bits(w) != math.Float64bits(gotFloat) { // bits: -0 ≠ +0
		t.Errorf("%s[%d] = %v, want %v", name, i, gotFloat, w)
	}
}

// TestReferenceFixture reads a file made by make_fixtures.py (an independent
// implementation of the spec, laid out as the reference writer lays it out)
// and checks every tensor against the values Python recorded.
func TestReferenceFixture(t *testing.T) {
	e := loadExpected(t)
	sd, meta, err := Load("testdata/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sd.Names, e.Order) {
		t.Errorf("names = %q\nwant      %q", sd.Names, e.Order)
	}
	if !reflect.DeepEqual(meta, e.Metadata) {
		t.Errorf("metadata = %q, want %q", meta, e.Metadata)
	}
	for _, name := range e.Order {
		x := e.Tensors[name]
		got := sd.Get(name)
		if got == nil {
			t.Errorf("missing %q", name)
			continue
		}
		if string(got.DType) != x.DType || !slices.Equal(got.Shape, x.Shape) {
			t.Errorf("%q: %s%v, want %s%v", name, got.DType, got.Shape, x.DType, x.Shape)
		}
		if got.Shape == nil {
			t.Errorf("%q: nil shape, want an empty one", name)
		}
		if h := hex.EncodeToString(got.Data); h != x.DataHex {
			t.Errorf("%q: data %s, want %s", name, h, x.DataHex)
		}
		if got.NumElements() != len(x.Values) {
			t.Fatalf("%q: %d elements, want %d", name, got.NumElements(), len(x.Values))
		}
		for i, v := range x.Values {
			checkValue(t, name, got.DType, got.Data, i, v)
		}
	}

	entries, meta2, err := ReadHeader("testdata/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(meta2, e.Metadata) {
		t.Errorf("ReadHeader metadata = %q", meta2)
	}
	var pos int64
	for i, en := range entries {
		x := e.Tensors[en.Name]
		if en.Name != e.Order[i] || string(en.DType) != x.DType || !slices.Equal(en.Shape, x.Shape) ||
			en.Begin != pos || en.End != pos+int64(len(x.DataHex)/2) {
			t.Errorf("entry %d = %+v", i, en)
		}
		pos = en.End
	}
}

// TestWriterMatchesReference: given the reference's tensor order, our writer
// must produce the very bytes the reference layout has.
func TestWriterMatchesReference(t *testing.T) {
	e := loadExpected(t)
	want, err := os.ReadFile("testdata/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, stateDictFrom(t, e, e.Order), e.Metadata); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("writer output differs from reference.safetensors\n got %q\nwant %q", buf.Bytes(), want)
	}
}

// goWrittenOrder is a torch-like insertion order, deliberately not the
// reference's, so the Python check shows readers accept any layout order.
func goWrittenOrder(e *expected) []string {
	order := slices.Clone(e.Order)
	slices.Reverse(order)
	return order
}

// TestGoWrittenFixture pins the bytes of testdata/go_written.safetensors,
// which make_fixtures.py --check-go verifies with its own parser; -update
// rewrites it.
func TestGoWrittenFixture(t *testing.T) {
	e := loadExpected(t)
	sd := stateDictFrom(t, e, goWrittenOrder(e))
	path := "testdata/go_written.safetensors"
	if *update {
		if err := Save(path, sd, e.Metadata); err != nil {
			t.Fatal(err)
		}
		t.Log("rewrote", path, "- now run: /usr/bin/python3 checkpoint/safetensors/testdata/make_fixtures.py --check-go")
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, sd, e.Metadata); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("writer output changed from %s; rerun with -update and make_fixtures.py --check-go", path)
	}
	back, meta, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Names, goWrittenOrder(e)) || !reflect.DeepEqual(meta, e.Metadata) {
		t.Errorf("read back names %q, metadata %q", back.Names, meta)
	}
}

func f32(shape []int, vals ...float32) *checkpoint.Tensor { return checkpoint.FromFloat32(shape, vals) }

// TestReferenceVectors checks our writer against the byte strings the
// reference implementation's own unit tests pin for its serializer.
func TestReferenceVectors(t *testing.T) {
	zeroTo5 := string([]byte{0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0, 0xa0, 0x40})
	n := func(v int) string { return string([]byte{byte(v), 0, 0, 0, 0, 0, 0, 0}) }
	tests := []struct {
		name string
		sd   func() *checkpoint.StateDict
		meta map[string]string
		want string
	}{
		{"empty", checkpoint.NewStateDict, nil, n(8) + "{}      "},
		{"metadata only", checkpoint.NewStateDict, map[string]string{"framework": "pt"},
			n(40) + `{"__metadata__":{"framework":"pt"}}     `},
		{"unpadded", func() *checkpoint.StateDict {
			sd := checkpoint.NewStateDict()
			sd.Set("attn.0", f32([]int{1, 2, 3}, 0, 1, 2, 3, 4, 5))
			return sd
		}, nil, n(64) + `{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}` + zeroTo5},
		{"padded", func() *checkpoint.StateDict {
			sd := checkpoint.NewStateDict()
			sd.Set("attn0", f32([]int{1, 1, 2, 3}, 0, 1, 2, 3, 4, 5))
			return sd
		}, nil, n(72) + `{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ` + zeroTo5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tc.sd(), tc.meta); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("got  %q\nwant %q", buf.String(), tc.want)
			}
			sd, meta, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(meta, tc.meta) || sd.Len() != tc.sd().Len() {
				t.Errorf("read back %d tensors, metadata %q", sd.Len(), meta)
			}
		})
	}
}

func bits16(vals ...uint16) []byte {
	b := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(b[2*i:], v)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	nanF32 := []byte{0x01, 0x00, 0xc0, 0x7f, 0xff, 0xff, 0xff, 0xff} // NaN payloads must survive
	tests := []struct {
		name    string
		tensors []string
		values  []*checkpoint.Tensor
		meta    map[string]string
	}{
		{"nothing", nil, nil, nil},
		{"empty metadata kept", nil, nil, map[string]string{}},
		{"all dtypes", []string{"f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool"}, []*checkpoint.Tensor{
			{DType: checkpoint.F64, Shape: []int{1}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
			{DType: checkpoint.F32, Shape: []int{2, 1}, Data: nanF32},
			{DType: checkpoint.F16, Shape: []int{3}, Data: bits16(0x3c00, 0x7c01, 0x8001)},
			{DType: checkpoint.BF16, Shape: []int{1, 1, 1}, Data: bits16(0xffc1)},
			{DType: checkpoint.I64, Shape: []int{}, Data: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
			{DType: checkpoint.I32, Shape: []int{1}, Data: []byte{0, 0, 0, 0x80}},
			{DType: checkpoint.I16, Shape: []int{2}, Data: []byte{1, 2, 3, 4}},
			{DType: checkpoint.I8, Shape: []int{1}, Data: []byte{0x80}},
			{DType: checkpoint.U8, Shape: []int{0}, Data: []byte{}},
			{DType: checkpoint.Bool, Shape: []int{2}, Data: []byte{1, 0}},
		}, map[string]string{"format": "pt", "": "empty key", "ctl": "\x00\x1f\u2028<&>"}},
		{"misaligned mixed dtypes in given order", []string{"z.odd_half", "a.float", "m.scalar"}, []*checkpoint.Tensor{
			{DType: checkpoint.F16, Shape: []int{3}, Data: bits16(1, 2, 3)},
			f32([]int{2}, 1.5, -2),
			{DType: checkpoint.F64, Shape: nil, Data: make([]byte, 8)},
		}, map[string]string{"format": "pt"}},
		{"odd names", []string{"", "é/\"\\\n", "x.__metadata__"}, []*checkpoint.Tensor{
			f32([]int{1}, 1), f32([]int{1}, 2), f32([]int{0}),
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sd := checkpoint.NewStateDict()
			for i, name := range tc.tensors {
				sd.Set(name, tc.values[i])
			}
			path := filepath.Join(t.TempDir(), "adapter_model.safetensors")
			if err := Save(path, sd, tc.meta); err != nil {
				t.Fatal(err)
			}
			back, meta, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(meta, tc.meta) {
				t.Errorf("metadata = %#v, want %#v", meta, tc.meta)
			}
			if !slices.Equal(back.Names, sd.Names) {
				t.Errorf("names = %q, want %q", back.Names, sd.Names)
			}
			for _, name := range sd.Names {
				w, g := sd.Get(name), back.Get(name)
				if g == nil || g.DType != w.DType || len(g.Shape) != len(w.Shape) ||
					(len(w.Shape) > 0 && !slices.Equal(g.Shape, w.Shape)) || !bytes.Equal(g.Data, w.Data) {
					t.Errorf("%q = %+v, want %+v", name, g, w)
				}
			}
			raw, _ := os.ReadFile(path)
			if n := binary.LittleEndian.Uint64(raw); n%8 != 0 || raw[8] != '{' {
				t.Errorf("header length %d not 8-aligned or not starting with {", n)
			}
		})
	}
}

// TestReadSlicesDoNotAlias: appending to one tensor's Data must not clobber
// the next, though they share one read buffer.
func TestReadSlicesDoNotAlias(t *testing.T) {
	sd := checkpoint.NewStateDict()
	sd.Set("a", f32([]int{1}, 1))
	sd.Set("b", f32([]int{1}, 2))
	var buf bytes.Buffer
	if err := Write(&buf, sd, nil); err != nil {
		t.Fatal(err)
	}
	back, _, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "mem")
	if err != nil {
		t.Fatal(err)
	}
	a := back.Get("a")
	a.Data = append(a.Data, 9, 9, 9, 9)
	if !bytes.Equal(back.Get("b").Data, sd.Get("b").Data) {
		t.Error("append to a overwrote b")
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestSaveAtomic(t *testing.T) {
	good := checkpoint.NewStateDict()
	good.Set("w", f32([]int{2}, 1, 2))
	short := checkpoint.NewStateDict()
	short.Set("w", &checkpoint.Tensor{DType: checkpoint.F32, Shape: []int{2, 2}, Data: make([]byte, 12)})
	unlisted := checkpoint.NewStateDict()
	unlisted.Set("w", f32([]int{1}, 1))
	unlisted.Tensors["ghost"] = f32([]int{1}, 1)
	tests := []struct {
		name    string
		sd      *checkpoint.StateDict
		meta    map[string]string
		setup   func(t *testing.T, dir string) string // returns the target path
		wantErr string
	}{
		{"missing dir", good, nil, func(t *testing.T, dir string) string {
			return filepath.Join(dir, "nope", "a.safetensors")
		}, "no such file"},
		{"data shorter than shape", short, nil, nil, `"w": data is 12 bytes`},
		{"nil tensor", &checkpoint.StateDict{Names: []string{"x"}, Tensors: map[string]*checkpoint.Tensor{}}, nil, nil, "has no tensor"},
		{"tensor not in Names", unlisted, nil, nil, `"ghost" is in Tensors but not in Names`},
		{"duplicate name", &checkpoint.StateDict{Names: []string{"w", "w"}, Tensors: good.Tensors}, nil, nil, "listed twice"},
		{"reserved name", &checkpoint.StateDict{Names: []string{"__metadata__"}, Tensors: map[string]*checkpoint.Tensor{"__metadata__": f32([]int{1}, 1)}}, nil, nil, "reserved"},
		{"unknown dtype", &checkpoint.StateDict{Names: []string{"q"}, Tensors: map[string]*checkpoint.Tensor{"q": {DType: "Q4", Data: []byte{1}}}}, nil, nil, "unsupported dtype"},
		{"negative dim", &checkpoint.StateDict{Names: []string{"q"}, Tensors: map[string]*checkpoint.Tensor{"q": {DType: "F32", Shape: []int{-1}}}}, nil, nil, "negative or overflows"},
		{"invalid UTF-8 name", &checkpoint.StateDict{Names: []string{"\xff"}, Tensors: map[string]*checkpoint.Tensor{"\xff": f32([]int{1}, 1)}}, nil, nil, "UTF-8"},
		{"invalid UTF-8 metadata", good, map[string]string{"k": "\xfe"}, nil, "UTF-8"},
		{"nil StateDict", nil, nil, nil, "nil StateDict"},
		{"rename onto a directory", good, nil, func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "taken")
			if err := os.MkdirAll(filepath.Join(p, "child"), 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}, "taken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "adapter_model.safetensors")
			const old = "previous good adapter"
			if tc.setup != nil {
				path = tc.setup(t, dir)
			} else if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
				t.Fatal(err)
			}
			before := listDir(t, dir)
			err := Save(path, tc.sd, tc.meta)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if after := listDir(t, dir); !slices.Equal(after, before) {
				t.Errorf("dir went from %q to %q: temp file left behind", before, after)
			}
			if tc.setup == nil {
				if got, _ := os.ReadFile(path); string(got) != old {
					t.Errorf("existing file clobbered: %q", got)
				}
			}
			var buf bytes.Buffer
			if tc.setup == nil && Write(&buf, tc.sd, tc.meta) == nil || buf.Len() != 0 {
				t.Errorf("Write accepted the invalid StateDict or wrote %d bytes", buf.Len())
			}
		})
	}

	t.Run("replace keeps permissions", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "a.safetensors")
		if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Save(path, good, nil); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, %v; want 0600", fi.Mode(), err)
		}
		if names := listDir(t, dir); !slices.Equal(names, []string{"a.safetensors"}) {
			t.Errorf("dir holds %q", names)
		}
		var buf bytes.Buffer
		Write(&buf, good, nil)
		if got, _ := os.ReadFile(path); !bytes.Equal(got, buf.Bytes()) {
			t.Error("saved bytes differ from Write's")
		}
	})
}

// file assembles a safetensors file from a header string and data bytes.
func file(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func withLen(n uint64, rest string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

func TestCorruptInputs(t *testing.T) {
	d8 := make([]byte, 8)
	d12 := make([]byte, 12)
	tests := []struct {
		name       string
		data       []byte
		wantTensor string // the tensor the error must name, if any
		wantMsg    string
	}{
		{"empty file", nil, "", "too short"},
		{"7 bytes", []byte{1, 2, 3, 4, 5, 6, 7}, "", "too short"},
		{"header length 2^63", withLen(1<<63, "{}"), "", "exceeds"},
		{"header length just over limit", withLen(MaxHeaderSize+1, "{}"), "", "exceeds"},
		{"header length past EOF", withLen(100, "{}"), "", "past the end"},
		{"zero header", withLen(0, ""), "", "not a JSON object"},
		{"not UTF-8", file("{\"\xff\":1}", nil), "", "UTF-8"},
		{"not JSON", file("hello", nil), "", "not a JSON object"},
		{"array", file("[]", nil), "", "not a JSON object"},
		{"unterminated", file(`{"a":{"dtype":"F32"`, nil), "a", ""},
		{"trailing garbage", file("{} x", nil), "", "after the header object"},
		{"two objects", file("{}{}", nil), "", "unexpected"},
		{"NUL padding", file("{}\x00", nil), "", "after the header object"},
		{"entry not object", file(`{"a":[1]}`, nil), "a", "must be an object"},
		{"unknown dtype", file(`{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}`, []byte{0}), "a", `unsupported dtype "F8_E4M3"`},
		{"dtype not string", file(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, d8[:4]), "a", "not a string"},
		{"negative dim", file(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, d8[:4]), "a", "negative"},
		{"fractional dim", file(`{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}`, d8[:4]), "a", "not an integer"},
		{"dim beyond int", file(`{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}`, d8[:4]), "a", "not an integer"},
		{"shape overflow", file(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, d8[:4]), "a", "overflows"},
		{"shape overflow before zero", file(`{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, nil), "a", "overflows"},
		{"shape not array", file(`{"a":{"dtype":"F32","shape":3,"data_offsets":[0,4]}}`, d8[:4]), "a", "not an array"},
		{"three offsets", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, d8[:4]), "a", "3 numbers"},
		{"negative offset", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, d8[:4]), "a", "negative"},
		{"end before begin", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`, d8[:4]), "a", "end before"},
		{"missing dtype", file(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, d8[:4]), "a", "missing dtype"},
		{"missing shape", file(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, d8[:4]), "a", "missing shape"},
		{"missing offsets", file(`{"a":{"dtype":"F32","shape":[1]}}`, d8[:4]), "a", "missing data_offsets"},
		{"wrong dtype size", file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}`, d8), "a", "span 8 bytes, but dtype F16 × shape [2] needs 4"},
		{"offsets outside buffer", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, d8[:4]), "a", "outside the 4-byte data buffer"},
		{"huge offsets", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775806,9223372036854775807]}}`, nil), "a", "outside"},
		{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, d12), "b", `overlap tensor "a"`},
		{"same span twice", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, d8), "b", "overlap"},
		{"hole", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, d12), "b", `4-byte hole after tensor "a"`},
		{"hole at start", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), "a", "hole at the start"},
		{"trailing bytes", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, d8), "", "cover only 4"},
		{"bytes but no tensors", file(`{}`, d8), "", "cover only 0"},
		{"metadata value number", file(`{"__metadata__":{"k":1}}`, nil), "", `value of "k" is 1, not a string`},
		{"metadata value object", file(`{"__metadata__":{"k":{}}}`, nil), "", "not a string"},
		{"metadata array", file(`{"__metadata__":["x"]}`, nil), "", "must be an object"},
		{"duplicate tensor", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil), "a", "twice"},
		{"duplicate metadata key", file(`{"__metadata__":{"k":"1","k":"2"}}`, nil), "", `"k" appears twice`},
		{"duplicate __metadata__", file(`{"__metadata__":{},"__metadata__":{}}`, nil), "", "duplicate __metadata__"},
		{"duplicate field", file(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, d8[:4]), "a", `"dtype" appears twice`},
		{"deep nesting in unknown field", file(`{"a":{"x":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`,"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil), "a", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Read(bytes.NewReader(tc.data), int64(len(tc.data)), "bad.safetensors")
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FormatError", err)
			}
			if fe.File != "bad.safetensors" || fe.Tensor != tc.wantTensor || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %v (tensor %q), want tensor %q and message containing %q", err, fe.Tensor, tc.wantTensor, tc.wantMsg)
			}
		})
	}
}

// The reference reader accepts these; so must we.
func TestLenientInputs(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		meta map[string]string
	}{
		{"null metadata", file(`{"__metadata__":null}`, nil), nil},
		{"unknown field", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":{"k":[1]}}}`, []byte{7}), nil},
		{"whitespace and no padding", file(" {\n\"__metadata__\" : {\"k\":\"v\"} }\t", nil), map[string]string{"k": "v"}},
		{"offsets out of key order", file(`{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1, 2}), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sd, meta, err := Read(bytes.NewReader(tc.data), int64(len(tc.data)), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(meta, tc.meta) {
				t.Errorf("metadata = %#v", meta)
			}
			if tc.name == "offsets out of key order" && !slices.Equal(sd.Names, []string{"a", "b"}) {
				t.Errorf("names = %q, want file (offset) order", sd.Names)
			}
		})
	}
}

// TestTruncated cuts the reference fixture at every length: each must fail
// cleanly, in Read and in ReadHeader.
func TestTruncated(t *testing.T) {
	full, err := os.ReadFile("testdata/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for n := 0; n < len(full); n++ {
		_, _, err := Read(bytes.NewReader(full[:n]), int64(n), "cut")
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("cut at %d: err = %v, want a *FormatError", n, err)
		}
		if n%97 == 0 || n == len(full)-1 {
			p := filepath.Join(dir, "cut.safetensors")
			os.WriteFile(p, full[:n], 0o644)
			if _, _, err := ReadHeader(p); err == nil {
				t.Fatalf("ReadHeader accepted a file cut at %d", n)
			}
		}
	}
}

// shortReader claims more bytes than it has, like a file truncated while
// being read: an I/O error, not a panic or a short tensor.
func TestReaderShorterThanSize(t *testing.T) {
	full, err := os.ReadFile("testdata/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Read(bytes.NewReader(full[:len(full)-3]), int64(len(full)), "shrinking")
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "shrinking") {
		t.Errorf("err = %v, want unexpected EOF naming the file", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Load(filepath.Join(dir, "missing.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: %v", err)
	}
	if _, _, err := ReadHeader(dir); err == nil {
		t.Error("ReadHeader of a directory succeeded")
	}
}
