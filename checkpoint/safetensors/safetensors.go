// Package safetensors reads and writes the safetensors format, the one HF PEFT
// uses for adapter_model.safetensors, so adapters trained here load in PEFT and
// the other way round.
//
// A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
//
//	{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//	 "__metadata__": {"key": "value"}}
//
// and then the data buffer; offsets are relative to the buffer start.
//
// Reading validates the file as strictly as the reference implementation does
// (and a little more: duplicate keys are errors), because a file from the
// internet must never make us panic, allocate absurd amounts of memory, or
// silently hand back tensors that alias or skip bytes.
package safetensors

import (
	"fmt"
	"strconv"

	"github.com/lorafit/lorafit/checkpoint"
)

// MaxHeaderSize is the largest JSON header accepted, the reference
// implementation's limit: it bounds what a hostile length prefix can make us
// allocate before anything is validated.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding the string→string metadata.
const metadataKey = "__metadata__"

// Entry describes one tensor of a file without its data, for listing big
// files cheaply.
type Entry struct {
	Name  string
	DType checkpoint.DType
	Shape []int
	// Begin and End are the data_offsets: byte offsets relative to the start
	// of the data buffer, which itself starts at byte 8+N of the file.
	Begin, End int64
}

// FormatError reports a file that is not valid safetensors (as opposed to an
// I/O failure), naming the file and, where one is at fault, the tensor.
type FormatError struct {
	File   string
	Tensor string // empty when the problem is not tied to one tensor
	Reason string
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("safetensors: %s: tensor %s: %s", e.File, strconv.Quote(e.Tensor), e.Reason)
	}
	return fmt.Sprintf("safetensors: %s: %s", e.File, e.Reason)
}

func formatErr(file, tensor, format string, args ...any) error {
	return &FormatError{File: file, Tensor: tensor, Reason: fmt.Sprintf(format, args...)}
}
