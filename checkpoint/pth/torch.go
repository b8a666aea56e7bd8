package pth

// What the pickle in a .pth means: the allow-listed torch globals, storage
// references (persistent ids), and turning a (storage, offset, size, stride)
// view into a C-contiguous checkpoint.Tensor.

import (
	"errors"
	"fmt"
	"math"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/limits"
)

// storageDTypes maps torch's legacy typed-storage classes, which is how
// torch.save still names a storage's element type, to our dtypes.
var storageDTypes = map[string]checkpoint.DType{
	"torch.FloatStorage":    checkpoint.F32,
	"torch.HalfStorage":     checkpoint.F16,
	"torch.BFloat16Storage": checkpoint.BF16,
	"torch.DoubleStorage":   checkpoint.F64,
	"torch.LongStorage":     checkpoint.I64,
	"torch.IntStorage":      checkpoint.I32,
	"torch.ShortStorage":    checkpoint.I16,
	"torch.CharStorage":     checkpoint.I8,
	"torch.ByteStorage":     checkpoint.U8,
	"torch.BoolStorage":     checkpoint.Bool,
}

// allowedGlobals is everything a tensor state_dict pickle may reference; any
// other global is refused before anything else happens. The callables are
// interpreted here, never imported or run.
var allowedGlobals = func() map[string]*pyGlobal {
	g := map[string]*pyGlobal{
		"collections.OrderedDict":                    {call: newOrderedDict},
		"torch._utils._rebuild_tensor_v2":            {call: rebuildTensorV2},
		"torch._utils._rebuild_parameter":            {call: rebuildParameter},
		"torch._utils._rebuild_parameter_with_state": {call: rebuildParameter},
		"torch.Size": {call: torchSize},
	}
	for name := range storageDTypes {
		g[name] = &pyGlobal{} // a type tag, not callable
	}
	for name, v := range g {
		v.name = name
	}
	return g
}()

// storageRef is one torch storage: a flat run of numel elements of one dtype,
// which several tensors may view. Its bytes are read only when a tensor of
// the returned state_dict needs them.
type storageRef struct {
	key   string
	dtype checkpoint.DType
	numel int64
	read  func() ([]byte, error) // set by the container
	data  []byte
}

func (s *storageRef) nbytes() int64 { return s.numel * int64(s.dtype.Size()) }

func (s *storageRef) bytes() ([]byte, error) {
	if s.data == nil {
		if s.read == nil {
			return nil, fmt.Errorf("storage %q has no data", s.key)
		}
		b, err := s.read()
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != s.nbytes() {
			return nil, fmt.Errorf("storage %q: read %d bytes, want %d", s.key, len(b), s.nbytes())
		}
		s.data = b
	}
	return s.data, nil
}

// tensorRef is a strided view of a storage, as torch pickles a tensor. Its
// geometry is checked against the storage when it is materialized.
type tensorRef struct {
	storage      *storageRef
	offset       int64
	size, stride []int64
}

func newOrderedDict(args pyTuple) (any, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("expected no arguments, got %d", len(args))
	}
	return newPyDict(), nil
}

func torchSize(args pyTuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("expected 1 argument, got %d", len(args))
	}
	t, ok := args[0].(pyTuple)
	if !ok {
		return nil, fmt.Errorf("expected a tuple, got %s", typeName(args[0]))
	}
	return t, nil
}

// rebuildTensorV2 interprets torch._utils._rebuild_tensor_v2(storage,
// storage_offset, size, stride, requires_grad, backward_hooks[, metadata]).
// requires_grad, hooks and metadata do not affect the values and are ignored.
func rebuildTensorV2(args pyTuple) (any, error) {
	if len(args) != 6 && len(args) != 7 {
		return nil, fmt.Errorf("expected 6 or 7 arguments, got %d", len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("argument 1 is a %s, not a storage", typeName(args[0]))
	}
	off, ok := args[1].(int64)
	if !ok {
		return nil, fmt.Errorf("storage offset is a %s, not an int", typeName(args[1]))
	}
	size, err := intTuple("size", args[2])
	if err != nil {
		return nil, err
	}
	stride, err := intTuple("stride", args[3])
	if err != nil {
		return nil, err
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("size %v and stride %v differ in length", size, stride)
	}
	return &tensorRef{storage: st, offset: off, size: size, stride: stride}, nil
}

// rebuildParameter interprets _rebuild_parameter(data, requires_grad,
// backward_hooks[, state]): an nn.Parameter is just its data here.
func rebuildParameter(args pyTuple) (any, error) {
	if len(args) != 3 && len(args) != 4 {
		return nil, fmt.Errorf("expected 3 or 4 arguments, got %d", len(args))
	}
	t, ok := args[0].(*tensorRef)
	if !ok {
		return nil, fmt.Errorf("data is a %s, not a tensor", typeName(args[0]))
	}
	return t, nil
}

func intTuple(what string, v any) ([]int64, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("%s is a %s, not a tuple", what, typeName(v))
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("%s has a %s element", what, typeName(x))
		}
		out[i] = n
	}
	return out, nil
}

// parseStorageID checks one persistent id and returns its parts. torch.save's
// zip format writes ('storage', storage_type, key, location, numel); the
// legacy format appends a view_metadata that torch >= 1.0 always leaves None.
func parseStorageID(pid any, legacy bool) (key string, dtype checkpoint.DType, numel int64, err error) {
	t, ok := pid.(pyTuple)
	want := 5
	if legacy {
		want = 6
	}
	if !ok || len(t) != want || asString(t[0]) != "storage" {
		return "", "", 0, fmt.Errorf("unsupported persistent id %s (expected a %d-tuple starting with 'storage')", describe(pid), want)
	}
	g, ok := t[1].(*pyGlobal)
	if !ok {
		return "", "", 0, fmt.Errorf("storage type is a %s", typeName(t[1]))
	}
	if dtype, ok = storageDTypes[g.name]; !ok {
		return "", "", 0, fmt.Errorf("unsupported storage type %s", g.name)
	}
	key = asString(t[2])
	if key == "" {
		return "", "", 0, fmt.Errorf("storage key is a %s", typeName(t[2]))
	}
	numel, ok = t[4].(int64)
	if !ok || numel < 0 || numel > math.MaxInt64/8 {
		return "", "", 0, fmt.Errorf("storage %q has invalid element count %s", key, describe(t[4]))
	}
	if legacy && t[5] != nil {
		return "", "", 0, fmt.Errorf("storage %q is a storage view (pre-1.0 torch.save), which is not supported", key)
	}
	return key, dtype, numel, nil
}

// asString accepts str and (Python 2) bytes, "" for anything else.
func asString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case pyBytes:
		return string(v)
	}
	return ""
}

// describe is a short, non-recursive rendering of a value for errors (pickled
// containers can contain themselves).
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool, int64, float64:
		return fmt.Sprint(v)
	case string:
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		return fmt.Sprintf("%q", v)
	case pyTuple:
		return fmt.Sprintf("a %d-tuple", len(v))
	}
	return "a " + typeName(v)
}

// outputBudget is what the tensors of one state_dict may still allocate:
// expand, a multiple of the stored bytes (stride-0 or repeated views could
// otherwise expand a small file into an enormous allocation), and max
// (limits.CheckpointBytes) less used, the bytes produced so far.
type outputBudget struct{ expand, used, max int64 }

// take reserves n bytes or explains which budget they exceed.
func (b *outputBudget) take(n int64) error {
	if n > b.expand {
		return errors.New("tensors expand to far more than the stored data (stride-0 or repeated views); refusing to allocate")
	}
	if n > b.max-b.used {
		return fmt.Errorf("tensors expand past the limit: %w", &limits.ExceededError{Limit: limits.CheckpointBytes, Got: satAdd(b.used, n), Max: b.max})
	}
	b.expand -= n
	b.used += n
	return nil
}

// satAdd adds non-negative sizes for error messages, saturating instead of
// wrapping when a limit has been raised near MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// materialize gathers a tensor view into fresh C-contiguous bytes. Every
// index it touches is checked to lie inside the storage first. budget limits
// the bytes produced across all tensors. lastUse says no
// later tensor needs the storage: its bytes are then released, or taken over
// without a copy when this tensor is exactly the whole storage, the usual
// case for a state_dict.
func materialize(t *tensorRef, budget *outputBudget, lastUse bool) (*checkpoint.Tensor, error) {
	st := t.storage
	es := int64(st.dtype.Size())
	numel, last, err := viewExtent(t)
	if err != nil {
		return nil, err
	}
	if numel > 0 && last >= st.numel {
		return nil, fmt.Errorf("view (offset %d, size %v, stride %v) reaches element %d of storage %q, which holds %d elements",
			t.offset, t.size, t.stride, last, st.key, st.numel)
	}
	if err := budget.take(numel * es); err != nil { // viewExtent keeps it in range
		return nil, err
	}

	shape := make([]int, len(t.size))
	for i, d := range t.size {
		shape[i] = int(d)
	}
	out := &checkpoint.Tensor{DType: st.dtype, Shape: shape}
	if numel == 0 {
		out.Data = []byte{}
		return out, nil
	}
	// Read the storage before allocating the output: it proves the data
	// behind the sizes is really there.
	data, err := st.bytes()
	if err != nil {
		return nil, err
	}
	if lastUse {
		st.data = nil
	}

	// Trailing dimensions laid out contiguously are copied as one run.
	inner, run := len(t.size), int64(1)
	for inner > 0 && (t.size[inner-1] == 1 || t.stride[inner-1] == run) {
		run *= t.size[inner-1]
		inner--
	}
	if inner == 0 && t.offset == 0 && numel == st.numel && lastUse {
		out.Data = data
		return out, nil
	}
	out.Data = make([]byte, numel*es)
	runBytes := run * es
	idx := make([]int64, inner)
	for o := int64(0); o < int64(len(out.Data)); o += runBytes {
		src := t.offset
		for d, i := range idx {
			src += i * t.stride[d]
		}
		copy(out.Data[o:o+runBytes], data[src*es:src*es+runBytes])
		for d := inner - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < t.size[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}

// viewExtent returns the number of elements of a view and the largest
// storage index it touches, refusing negative or overflowing geometry.
func viewExtent(t *tensorRef) (numel, last int64, err error) {
	if len(t.size) > 64 {
		return 0, 0, fmt.Errorf("tensor has %d dimensions", len(t.size))
	}
	if t.offset < 0 {
		return 0, 0, fmt.Errorf("negative storage offset %d", t.offset)
	}
	const limit = math.MaxInt64 / 8 // keeps numel*elementSize in range
	numel, last = 1, t.offset
	for i, n := range t.size {
		s := t.stride[i]
		if n < 0 || s < 0 {
			return 0, 0, fmt.Errorf("negative size or stride (size %v, stride %v)", t.size, t.stride)
		}
		if n == 0 {
			numel = 0
			continue
		}
		if numel > limit/n {
			return 0, 0, fmt.Errorf("size %v is too large", t.size)
		}
		numel *= n
		if s != 0 && (n-1 > (limit-last)/s) {
			return 0, 0, fmt.Errorf("view (offset %d, size %v, stride %v) is out of range", t.offset, t.size, t.stride)
		}
		last += (n - 1) * s
	}
	return numel, last, nil
}
