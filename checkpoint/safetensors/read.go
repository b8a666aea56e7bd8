package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/limits"
)

// Load reads a whole file: its tensors, in file order (by data offset), and
// its __metadata__ (nil when the file has none).
func Load(path string) (*checkpoint.StateDict, map[string]string, error) {
	f, size, err := openSized(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return Read(f, size, path)
}

// Read decodes a safetensors file of the given size from r. name is used only
// in error messages. Tensors come back in file order (by data offset); their
// Data slices share one allocation but are capped, so appending to one never
// overwrites another.
func Read(r io.ReaderAt, size int64, name string) (*checkpoint.StateDict, map[string]string, error) {
	n, entries, meta, err := readHeader(r, size, name)
	if err != nil {
		return nil, nil, err
	}
	// readHeader checked that the entries exactly cover the buffer, so its
	// length is bounded by the real size and every slice below is in range.
	if err := limits.CheckpointBytes.Check(size - 8 - n); err != nil {
		return nil, nil, formatErr(name, "", "data buffer: %v", err)
	}
	buf := make([]byte, size-8-n)
	if err := readFull(r, buf, 8+n, name, "tensor data"); err != nil {
		return nil, nil, err
	}
	sd := checkpoint.NewStateDict()
	for _, e := range entries {
		sd.Set(e.Name, &checkpoint.Tensor{DType: e.DType, Shape: e.Shape, Data: buf[e.Begin:e.End:e.End]})
	}
	return sd, meta, nil
}

// ReadHeader lists a file's tensors (in file order, by offset) and metadata
// without reading the tensor data, so inspecting a multi-GB file is cheap. The
// header is validated exactly as Load validates it.
func ReadHeader(path string) ([]Entry, map[string]string, error) {
	f, size, err := openSized(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	_, entries, meta, err := readHeader(f, size, path)
	return entries, meta, err
}

// openSized opens a regular file (refusing devices, FIFOs and directories
// at once; see limits.OpenRegular) and returns its size.
func openSized(path string) (*os.File, int64, error) {
	f, fi, err := limits.OpenRegular(path)
	if err != nil {
		return nil, 0, fmt.Errorf("safetensors: %w", err)
	}
	return f, fi.Size(), nil
}

// readFull is ReadAt that treats a short read as an error, since a ReaderAt
// may return io.EOF together with a full buffer.
func readFull(r io.ReaderAt, p []byte, off int64, file, what string) error {
	if len(p) == 0 {
		return nil
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("safetensors: %s: reading %s: %w", file, what, err)
}

// readHeader reads, parses and validates the header, returning its length N
// and the entries sorted by offset. Nothing is allocated beyond the bounded
// header before validation.
func readHeader(r io.ReaderAt, size int64, file string) (int64, []Entry, map[string]string, error) {
	if size < 8 {
		return 0, nil, nil, formatErr(file, "", "file is %d bytes, too short for the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if err := readFull(r, lenBuf[:], 0, file, "header length"); err != nil {
		return 0, nil, nil, err
	}
	un := binary.LittleEndian.Uint64(lenBuf[:])
	if un > MaxHeaderSize {
		return 0, nil, nil, formatErr(file, "", "header length %d exceeds the %d-byte limit (corrupt or not a safetensors file)", un, MaxHeaderSize)
	}
	n := int64(un)
	if n > size-8 {
		return 0, nil, nil, formatErr(file, "", "header length %d runs past the end of the %d-byte file (truncated?)", n, size)
	}
	hdr := make([]byte, n)
	if err := readFull(r, hdr, 8, file, "header"); err != nil {
		return 0, nil, nil, err
	}
	entries, meta, err := parseHeader(hdr, file)
	if err != nil {
		return 0, nil, nil, err
	}
	if err := validateLayout(entries, size-8-n, file); err != nil {
		return 0, nil, nil, err
	}
	return n, entries, meta, nil
}

// parseHeader decodes the JSON header token by token rather than into a map,
// so that duplicate keys (which a map would silently collapse) are caught and
// every type error names the tensor it is in.
func parseHeader(hdr []byte, file string) ([]Entry, map[string]string, error) {
	if !utf8.Valid(hdr) {
		return nil, nil, formatErr(file, "", "header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return nil, nil, formatErr(file, "", "header is not a JSON object: %v", err)
	}
	seen := map[string]bool{}
	var entries []Entry
	var meta map[string]string
	for dec.More() {
		tok, err := token(dec)
		if err != nil {
			return nil, nil, formatErr(file, "", "header: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, formatErr(file, "", "header key %v is not a string", describe(tok))
		}
		if seen[key] {
			if key == metadataKey {
				return nil, nil, formatErr(file, "", "duplicate %s key", metadataKey)
			}
			return nil, nil, formatErr(file, key, "appears twice in the header")
		}
		seen[key] = true
		if key == metadataKey {
			if meta, err = parseMetadata(dec); err != nil {
				return nil, nil, formatErr(file, "", "%s: %v", metadataKey, err)
			}
			continue
		}
		e, err := parseInfo(dec)
		if err != nil {
			return nil, nil, formatErr(file, key, "%v", err)
		}
		e.Name = key
		entries = append(entries, e)
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, nil, formatErr(file, "", "header: %v", err)
	}
	// Only whitespace (the writer's space padding) may follow the object.
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, formatErr(file, "", "invalid JSON after the header object: %v", err)
		}
		return nil, nil, formatErr(file, "", "unexpected %v after the header object", describe(tok))
	}
	return entries, meta, nil
}

// token is dec.Token with its errors said to be JSON syntax errors (and a
// premature EOF called one), so messages tell corruption from other faults.
func token(dec *json.Decoder) (json.Token, error) {
	tok, err := dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return tok, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := token(dec)
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("expected %q, found %v", want, describe(tok))
	}
	return nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	case json.Delim:
		return strconv.Quote(v.String())
	}
	return fmt.Sprint(tok)
}

// parseMetadata reads the __metadata__ value: an object of strings, or null
// (which the reference reader also accepts, as "no metadata").
func parseMetadata(dec *json.Decoder) (map[string]string, error) {
	tok, err := token(dec)
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("must be an object of strings, found %v", describe(tok))
	}
	meta := map[string]string{}
	for dec.More() {
		tok, err := token(dec)
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("key %v is not a string", describe(tok))
		}
		if _, dup := meta[key]; dup {
			return nil, fmt.Errorf("key %q appears twice", key)
		}
		tok, err = token(dec)
		if err != nil {
			return nil, err
		}
		val, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("value of %q is %v, not a string", key, describe(tok))
		}
		meta[key] = val
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	return meta, nil
}

// parseInfo reads one tensor's {"dtype", "shape", "data_offsets"} object.
// Unknown fields are skipped, as the reference reader does.
func parseInfo(dec *json.Decoder) (Entry, error) {
	var e Entry
	if err := expectDelim(dec, '{'); err != nil {
		return e, fmt.Errorf("entry must be an object: %v", err)
	}
	var haveDType, haveShape, haveOffsets bool
	seen := map[string]bool{}
	for dec.More() {
		tok, err := token(dec)
		if err != nil {
			return e, err
		}
		key, ok := tok.(string)
		if !ok {
			return e, fmt.Errorf("key %v is not a string", describe(tok))
		}
		if seen[key] {
			return e, fmt.Errorf("field %q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "dtype":
			tok, err := token(dec)
			if err != nil {
				return e, err
			}
			s, ok := tok.(string)
			if !ok {
				return e, fmt.Errorf("dtype is %v, not a string", describe(tok))
			}
			e.DType = checkpoint.DType(s)
			if e.DType.Size() == 0 {
				return e, fmt.Errorf("unknown or unsupported dtype %q", s)
			}
			haveDType = true
		case "shape":
			dims, err := parseUints(dec, "shape", math.MaxInt)
			if err != nil {
				return e, err
			}
			e.Shape = make([]int, len(dims))
			for i, d := range dims {
				e.Shape[i] = int(d)
			}
			haveShape = true
		case "data_offsets":
			offs, err := parseUints(dec, "data_offsets", math.MaxInt64)
			if err != nil {
				return e, err
			}
			if len(offs) != 2 {
				return e, fmt.Errorf("data_offsets has %d numbers, want [begin, end]", len(offs))
			}
			e.Begin, e.End = int64(offs[0]), int64(offs[1])
			haveOffsets = true
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return e, fmt.Errorf("invalid JSON in field %q: %w", key, err)
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return e, err
	}
	switch {
	case !haveDType:
		return e, errors.New("missing dtype")
	case !haveShape:
		return e, errors.New("missing shape")
	case !haveOffsets:
		return e, errors.New("missing data_offsets")
	}
	return e, nil
}

// parseUints reads a JSON array of non-negative integers no larger than max.
func parseUints(dec *json.Decoder, field string, max uint64) ([]uint64, error) {
	tok, err := token(dec)
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("%s is %v, not an array", field, describe(tok))
	}
	out := []uint64{}
	for dec.More() {
		tok, err := token(dec)
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s holds %v, not an integer", field, describe(tok))
		}
		v, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil || v > max {
			if len(num) > 0 && num[0] == '-' {
				return nil, fmt.Errorf("%s holds negative %s", field, num)
			}
			return nil, fmt.Errorf("%s holds %s, not an integer in [0, %d]", field, num, max)
		}
		out = append(out, v)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, err
	}
	return out, nil
}

// byteSize is numel × element size, with ok=false on int64 overflow. Like the
// reference, it multiplies in shape order, so [huge, huge, 0] is an overflow
// rather than an empty tensor.
func byteSize(dt checkpoint.DType, shape []int) (int64, bool) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, false
		}
		n = lo
	}
	hi, lo := bits.Mul64(n, uint64(dt.Size()))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	return int64(lo), true
}

// validateLayout sorts entries by offset and checks that they tile the data
// buffer exactly: each tensor's span matches its dtype and shape, no two
// overlap (aliased tensors would make an in-place update of one corrupt the
// other), and there are no holes or trailing bytes (the reference reader
// rejects those too, so such a file would not load in PEFT).
func validateLayout(entries []Entry, bufLen int64, file string) error {
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].Begin != entries[j].Begin {
			return entries[i].Begin < entries[j].Begin
		}
		return entries[i].End < entries[j].End
	})
	var pos int64
	prev := ""
	for _, e := range entries {
		span := fmt.Sprintf("data_offsets [%d, %d]", e.Begin, e.End)
		if e.End < e.Begin {
			return formatErr(file, e.Name, "%s end before they begin", span)
		}
		if e.End > bufLen {
			return formatErr(file, e.Name, "%s lie outside the %d-byte data buffer", span, bufLen)
		}
		want, ok := byteSize(e.DType, e.Shape)
		if !ok {
			return formatErr(file, e.Name, "shape %v of dtype %s overflows", e.Shape, e.DType)
		}
		if got := e.End - e.Begin; got != want {
			return formatErr(file, e.Name, "%s span %d bytes, but dtype %s × shape %v needs %d", span, got, e.DType, e.Shape, want)
		}
		if e.Begin < pos {
			return formatErr(file, e.Name, "%s overlap tensor %q, which ends at %d", span, prev, pos)
		}
		if e.Begin > pos {
			if prev == "" {
				return formatErr(file, e.Name, "%s leave a %d-byte hole at the start of the data buffer", span, e.Begin-pos)
			}
			return formatErr(file, e.Name, "%s leave a %d-byte hole after tensor %q", span, e.Begin-pos, prev)
		}
		pos = e.End
		prev = e.Name
	}
	if pos != bufLen {
		return formatErr(file, "", "data buffer is %d bytes but the tensors cover only %d (trailing bytes)", bufLen, pos)
	}
	return nil
}
