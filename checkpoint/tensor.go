// Package checkpoint holds the in-memory form of a model's state_dict that every
// file format in lorafit reads into and writes from: named, ordered tensors of raw
// little-endian bytes. Keeping the bytes raw lets a loader stay dtype-exact (a
// bf16 checkpoint round-trips bit for bit) and defers float conversion to the
// one place that needs it.
package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType names an element type the way safetensors spells it, because that is
// the spelling users see in every other tool that lists tensors.
type DType string

const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size is the number of bytes of one element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// Tensor is one entry of a state_dict: C-contiguous little-endian bytes.
type Tensor struct {
	DType DType
	Shape []int
	Data  []byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// FromFloat32 wraps float32 values as an F32 tensor of the given shape.
func FromFloat32(shape []int, values []float32) *Tensor {
	t := &Tensor{DType: F32, Shape: append([]int(nil), shape...), Data: make([]byte, 4*len(values))}
	for i, v := range values {
		binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(v))
	}
	if t.NumElements() != len(values) {
		panic(fmt.Sprintf("checkpoint.FromFloat32: shape %v holds %d values, got %d", shape, t.NumElements(), len(values)))
	}
	return t
}

// FromInt64 wraps int64 values as an I64 tensor: batch norm's
// num_batches_tracked counters, kept so state_dicts round-trip.
func FromInt64(shape []int, values []int64) *Tensor {
	t := &Tensor{DType: I64, Shape: append([]int(nil), shape...), Data: make([]byte, 8*len(values))}
	for i, v := range values {
		binary.LittleEndian.PutUint64(t.Data[8*i:], uint64(v))
	}
	return t
}

// Float32s converts the values to float32, whatever the stored float or
// integer dtype. Integers convert exactly up to 2^24.
func (t *Tensor) Float32s() ([]float32, error) {
	n := t.NumElements()
	size := t.DType.Size()
	if size == 0 {
		return nil, fmt.Errorf("dtype %q is not supported", t.DType)
	}
	if len(t.Data) != n*size {
		return nil, fmt.Errorf("tensor of shape %v and dtype %s needs %d bytes, has %d", t.Shape, t.DType, n*size, len(t.Data))
	}
	out := make([]float32, n)
	b := t.Data
	le := binary.LittleEndian
	for i := range out {
		switch t.DType {
		case F32:
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		case F64:
			out[i] = float32(math.Float64frombits(le.Uint64(b[8*i:])))
		case F16:
			out[i] = HalfToFloat32(le.Uint16(b[2*i:]))
		case BF16:
			out[i] = math.Float32frombits(uint32(le.Uint16(b[2*i:])) << 16)
		case I64:
			out[i] = float32(int64(le.Uint64(b[8*i:])))
		case I32:
			out[i] = float32(int32(le.Uint32(b[4*i:])))
		case I16:
			out[i] = float32(int16(le.Uint16(b[2*i:])))
		case I8:
			out[i] = float32(int8(b[i]))
		case U8, Bool:
			out[i] = float32(b[i])
		}
	}
	return out, nil
}

// HalfToFloat32 converts an IEEE 754 binary16 value, subnormals and
// infinities included.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: renormalize
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// Float32ToHalf rounds to the nearest binary16 (ties to even).
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := mant >> shift
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return sign | uint16(half)
}

// BF16ToFloat32 widens a bfloat16 value (exact).
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToBF16 rounds to the nearest bfloat16 (ties to even), as PyTorch does.
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN stays NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// StateDict is an ordered name → tensor map, as torch's state_dict is: order
// matters to users reading `lorafit inspect` and to files written back out.
type StateDict struct {
	Names   []string
	Tensors map[string]*Tensor
}

// NewStateDict returns an empty StateDict.
func NewStateDict() *StateDict { return &StateDict{Tensors: map[string]*Tensor{}} }

// Set adds or replaces a tensor, keeping first-insertion order.
func (sd *StateDict) Set(name string, t *Tensor) {
	if _, ok := sd.Tensors[name]; !ok {
		sd.Names = append(sd.Names, name)
	}
	sd.Tensors[name] = t
}

// Get returns the named tensor or nil.
func (sd *StateDict) Get(name string) *Tensor { return sd.Tensors[name] }

// Len is the number of entries.
func (sd *StateDict) Len() int { return len(sd.Names) }
