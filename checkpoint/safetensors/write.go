package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/fsutil"
)

// Save writes sd and metadata to path atomically: it writes a temporary file
// in the same directory, fsyncs it and renames it over path, so a crash or an
// error never leaves a partial adapter where PEFT (or a resumed run) would
// pick it up. On any error the temporary file is removed and an existing file
// at path is left untouched. The StateDict is validated before anything is
// created. An existing file's permissions are kept; a new file gets 0644.
func Save(path string, sd *checkpoint.StateDict, metadata map[string]string) error {
	hdr, err := encodeHeader(sd, metadata)
	if err == nil {
		err = fsutil.WriteFile(path, func(w io.Writer) error { return writeBody(w, hdr, sd) })
	}
	if err != nil {
		return fmt.Errorf("safetensors: save %s: %w", path, err)
	}
	return nil
}

// Write encodes sd and metadata to w. Tensors are laid out in sd.Names order
// (the reference writer instead sorts by dtype alignment, then name; readers,
// the reference included, sort by offset, so either order loads). With mixed
// dtypes this order can leave a tensor at an offset that is not a multiple of
// its element size: the format and the reference reader allow that, but some
// zero-copy loaders want aligned data and must copy. (Padding between tensors
// is no fix: the reference rejects holes.) A single-dtype file such as a LoRA
// adapter is always aligned, since the header is padded to 8 bytes. __metadata__ is written when metadata is non-nil, keys sorted so the
// output is reproducible. The StateDict is validated before the first byte is
// written, so an invalid one writes nothing.
func Write(w io.Writer, sd *checkpoint.StateDict, metadata map[string]string) error {
	hdr, err := encodeHeader(sd, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if err := writeBody(w, hdr, sd); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

func writeBody(w io.Writer, hdr []byte, sd *checkpoint.StateDict) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	for _, name := range sd.Names {
		if _, err := bw.Write(sd.Tensors[name].Data); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// encodeHeader validates sd and returns the 8-byte length followed by the
// JSON header, padded with spaces to a multiple of 8 bytes as the reference
// writer does so that the data buffer starts 8-aligned. The JSON is compact
// and escapes strings exactly as the reference (serde_json) does, so for the
// same tensor order our bytes equal the reference's.
func encodeHeader(sd *checkpoint.StateDict, metadata map[string]string) ([]byte, error) {
	if sd == nil {
		return nil, errors.New("nil StateDict")
	}
	js := make([]byte, 8, 8+64*(len(sd.Names)+1))
	js = append(js, '{')
	first := true
	if metadata != nil {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("metadata %q is not valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		js = append(js, `"`+metadataKey+`":{`...)
		for i, k := range keys {
			if i > 0 {
				js = append(js, ',')
			}
			js = appendJSONString(js, k)
			js = append(js, ':')
			js = appendJSONString(js, metadata[k])
		}
		js = append(js, '}')
		first = false
	}
	seen := make(map[string]bool, len(sd.Names))
	var offset int64
	for _, name := range sd.Names {
		if seen[name] {
			return nil, fmt.Errorf("tensor %q is listed twice in Names", name)
		}
		seen[name] = true
		if name == metadataKey {
			return nil, fmt.Errorf("tensor name %q is reserved for metadata", name)
		}
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("tensor name %q is not valid UTF-8", name)
		}
		t := sd.Tensors[name]
		if t == nil {
			return nil, fmt.Errorf("tensor %q is listed in Names but has no tensor", name)
		}
		if t.DType.Size() == 0 {
			return nil, fmt.Errorf("tensor %q: unsupported dtype %q", name, t.DType)
		}
		n, ok := byteSize(t.DType, t.Shape)
		if !ok {
			return nil, fmt.Errorf("tensor %q: shape %v is negative or overflows", name, t.Shape)
		}
		if int64(len(t.Data)) != n {
			return nil, fmt.Errorf("tensor %q: data is %d bytes, but dtype %s × shape %v needs %d", name, len(t.Data), t.DType, t.Shape, n)
		}
		if !first {
			js = append(js, ',')
		}
		first = false
		js = appendJSONString(js, name)
		js = append(js, `:{"dtype":`...)
		js = appendJSONString(js, string(t.DType))
		js = append(js, `,"shape":[`...)
		for i, d := range t.Shape {
			if i > 0 {
				js = append(js, ',')
			}
			js = strconv.AppendInt(js, int64(d), 10)
		}
		js = append(js, `],"data_offsets":[`...)
		js = strconv.AppendInt(js, offset, 10)
		js = append(js, ',')
		offset += n
		js = strconv.AppendInt(js, offset, 10)
		js = append(js, "]}"...)
	}
	if len(sd.Tensors) != len(seen) {
		for name := range sd.Tensors {
			if !seen[name] {
				return nil, fmt.Errorf("tensor %q is in Tensors but not in Names", name)
			}
		}
	}
	js = append(js, '}')
	for (len(js)-8)%8 != 0 {
		js = append(js, ' ')
	}
	if len(js)-8 > MaxHeaderSize {
		return nil, fmt.Errorf("header would be %d bytes, over the %d-byte limit readers enforce", len(js)-8, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(js[:8], uint64(len(js)-8))
	return js, nil
}

// appendJSONString quotes s the way serde_json and Python's json (with
// ensure_ascii=False) do: only '"', '\\' and control characters are escaped,
// so the header bytes match theirs.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}
