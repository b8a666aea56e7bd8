package safetensors

import (
	"bytes"
	"os"
	"reflect"
	"testing"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/internal/memcheck"
)

// FuzzRead: no input may panic, and whatever Read accepts must survive a
// write/read round trip unchanged (so we never accept something we cannot
// reproduce), nor allocate more than the file justifies. Run with:
// go test ./checkpoint/safetensors/ -run '^$' -fuzz FuzzRead -fuzztime 20s
func FuzzRead(f *testing.F) {
	for _, p := range []string{"testdata/reference.safetensors", "testdata/go_written.safetensors"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add(file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)))
	f.Add(file(`{"__metadata__":{"k":"v"},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(file(`{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, nil))
	f.Add(withLen(1<<63, "{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sd *checkpoint.StateDict
		var meta map[string]string
		var err error
		// At most the file's bytes once more for the data, a copy of the
		// header in the JSON decoder, a few words per shape entry.
		memcheck.Bound(t, len(data), 48, 1<<20, func() {
			sd, meta, err = Read(bytes.NewReader(data), int64(len(data)), "fuzz")
		})
		n, entries, _, herr := readHeader(bytes.NewReader(data), int64(len(data)), "fuzz")
		if (err == nil) != (herr == nil) {
			t.Fatalf("Read err %v but readHeader err %v", err, herr)
		}
		if err != nil {
			return
		}
		if n < 2 || len(entries) != sd.Len() {
			t.Fatalf("readHeader: %d entries, Read: %d tensors", len(entries), sd.Len())
		}
		var buf bytes.Buffer
		if err := Write(&buf, sd, meta); err != nil {
			t.Fatalf("accepted input does not re-encode: %v", err)
		}
		sd2, meta2, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "again")
		if err != nil {
			t.Fatalf("re-encoded input does not read: %v", err)
		}
		if !reflect.DeepEqual(meta, meta2) || !reflect.DeepEqual(sd.Names, sd2.Names) {
			t.Fatalf("round trip changed names/metadata")
		}
		for _, name := range sd.Names {
			a, b := sd.Get(name), sd2.Get(name)
			if a.DType != b.DType || !reflect.DeepEqual(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
				t.Fatalf("round trip changed %q", name)
			}
		}
	})
}
