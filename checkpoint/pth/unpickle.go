package pth

// A restricted pickle interpreter. Python's pickle is a small stack machine
// whose GLOBAL and REDUCE opcodes can import and call anything, which is why
// loading an untrusted .pth with plain torch.load can run arbitrary code. This
// one only knows the opcodes a state_dict uses, resolves globals against an
// allow-list supplied by the caller (torch.go), and never executes anything:
// "calling" an allowed global runs a Go function that builds the value.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"unicode/utf8"

	"github.com/lorafit/lorafit/limits"
)

// Pickle values are plain Go values:
//
//	None → nil, bool, int → int64 or *big.Int, float → float64,
//	str → string, bytes → pyBytes, tuple → pyTuple, list → *pyList,
//	dict/OrderedDict → *pyDict, allowed global → *pyGlobal,
//	and whatever the persistent-load and global callbacks return.
type (
	pyTuple []any
	pyBytes []byte
	pyList  struct{ items []any }
)

// pyDict keeps insertion order, like Python dicts, because a state_dict's key
// order is part of what users see.
type pyDict struct {
	keys  []any
	vals  []any
	index map[any]int
}

func newPyDict() *pyDict { return &pyDict{index: map[any]int{}} }

// dictKey maps a pickle value to a comparable Go map key. Only scalar keys are
// supported; state_dicts and the training checkpoints wrapping them use
// strings and ints.
func dictKey(k any) (any, error) {
	switch k := k.(type) {
	case nil, bool, int64, float64, string:
		return k, nil
	case pyBytes:
		return bytesKey(k), nil
	}
	return nil, fmt.Errorf("unsupported dict key of type %s", typeName(k))
}

type bytesKey string

func (d *pyDict) set(k, v any) error {
	hk, err := dictKey(k)
	if err != nil {
		return err
	}
	if i, ok := d.index[hk]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[hk] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

// get returns the value stored under a string key.
func (d *pyDict) get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// pyGlobal is an allowed module attribute. call is nil for globals that are
// only used as type tags (storage classes); REDUCE on those is an error.
type pyGlobal struct {
	name string // "module.attr"
	call func(args pyTuple) (any, error)
}

// unpickler runs one pickle. It reads through src so that a legacy file's
// pickles can be decoded in sequence straight from disk.
type unpickler struct {
	src     *source
	globals map[string]*pyGlobal
	// persistentLoad resolves BINPERSID ids (torch's storage references).
	persistentLoad func(pid any) (any, error)

	stack []any
	marks []int
	memo  map[uint32]any

	// pushes counts the values pushed so far (across the loads of one
	// file); with the other budget fields it bounds what a pickle can make
	// us allocate. Each opcode pushes at most one value, so the count is
	// also at most the pickle's length: memory stays proportional to the
	// input, and capped by the limits whatever the input.
	pushes int64
	budget pickleBudget
}

// pickleBudget holds the limits in force for one file (read once, not per
// opcode).
type pickleBudget struct {
	bytes, pushes, stack, memo, container int64
}

func newPickleBudget() (pickleBudget, error) {
	var b pickleBudget
	for _, f := range []struct {
		l   *limits.Limit
		dst *int64
	}{
		{limits.PickleBytes, &b.bytes}, {limits.PickleObjects, &b.pushes}, {limits.PickleStack, &b.stack},
		{limits.PickleMemo, &b.memo}, {limits.PickleContainer, &b.container},
	} {
		v, err := f.l.Max()
		if err != nil {
			return b, err
		}
		*f.dst = v
	}
	return b, nil
}

func newUnpickler(src *source, persistentLoad func(any) (any, error)) (*unpickler, error) {
	b, err := newPickleBudget()
	if err != nil {
		return nil, err
	}
	return &unpickler{src: src, globals: allowedGlobals, persistentLoad: persistentLoad, budget: b}, nil
}

// overBudget checks the structure built so far against the budget; called
// after every opcode, each of which adds at most a few entries.
func (u *unpickler) overBudget() error {
	for _, c := range []struct {
		l        *limits.Limit
		got, max int64
	}{
		{limits.PickleObjects, u.pushes, u.budget.pushes},
		{limits.PickleStack, int64(len(u.stack) + len(u.marks)), u.budget.stack},
		{limits.PickleMemo, int64(len(u.memo)), u.budget.memo},
	} {
		if c.got > c.max {
			return &limits.ExceededError{Limit: c.l, Got: c.got, Max: c.max}
		}
	}
	return nil
}

// fits checks a container's new length against the budget.
func (u *unpickler) fits(n int) error {
	if int64(n) > u.budget.container {
		return &limits.ExceededError{Limit: limits.PickleContainer, Got: int64(n), Max: u.budget.container}
	}
	return nil
}

// errRefusedGlobal marks the error for a global outside the allow-list so
// callers and tests can tell a refusal from corruption.
var errRefusedGlobal = errors.New("refusing pickle global")

func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case pyBytes:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case *pyGlobal:
		return v.name
	case *tensorRef:
		return "tensor"
	case *storageRef:
		return "storage"
	}
	return fmt.Sprintf("%T", v)
}

// Opcodes, as named in CPython's Lib/pickle.py.
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opBinFloat       = 'G'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opNone           = 'N'
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opBinString      = 'T'
	opShortBinString = 'U'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opProto          = 0x80
	opNewObj         = 0x81
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
)

// load runs the machine until STOP and returns the top of the stack.
func (u *unpickler) load() (any, error) {
	u.stack, u.marks, u.memo = nil, nil, map[uint32]any{}
	for {
		at := u.src.pos
		b, err := u.src.read(1)
		if err != nil {
			return nil, fmt.Errorf("corrupt pickle: data ends at offset %d before the STOP opcode: %w", at, err)
		}
		op := b[0]
		if op == opStop {
			v, err := u.pop()
			if err != nil {
				return nil, fmt.Errorf("corrupt pickle: STOP at offset %d: %w", at, err)
			}
			return v, nil
		}
		if err := u.step(op); err != nil {
			var te tensorError
			var le *limits.ExceededError
			switch {
			case errors.Is(err, errRefusedGlobal):
				return nil, err
			case errors.As(err, &te):
				return nil, fmt.Errorf("pickle offset %d: %w", at, te.error)
			case errors.As(err, &le):
				return nil, fmt.Errorf("pickle offset %d: %w", at, err)
			}
			return nil, fmt.Errorf("corrupt pickle: opcode 0x%02x at offset %d: %w", op, at, err)
		}
		if err := u.overBudget(); err != nil {
			return nil, fmt.Errorf("pickle offset %d: %w", at, err)
		}
	}
}

func (u *unpickler) step(op byte) error {
	switch op {
	case opProto:
		b, err := u.src.read(1)
		if err != nil {
			return err
		}
		if b[0] > 5 {
			return fmt.Errorf("unsupported pickle protocol %d", b[0])
		}
	case opFrame:
		// Frames only help buffered readers; their length is just checked.
		if _, err := u.length(8); err != nil {
			return err
		}
	case opMark:
		u.marks = append(u.marks, len(u.stack))
	case opPop:
		_, err := u.pop()
		return err
	case opPopMark:
		_, err := u.popMark()
		return err
	case opDup:
		v, err := u.top()
		if err != nil {
			return err
		}
		u.push(v)

	case opNone:
		u.push(nil)
	case opNewTrue:
		u.push(true)
	case opNewFalse:
		u.push(false)
	case opBinInt:
		b, err := u.src.read(4)
		if err != nil {
			return err
		}
		u.push(int64(int32(binary.LittleEndian.Uint32(b))))
	case opBinInt1:
		b, err := u.src.read(1)
		if err != nil {
			return err
		}
		u.push(int64(b[0]))
	case opBinInt2:
		b, err := u.src.read(2)
		if err != nil {
			return err
		}
		u.push(int64(binary.LittleEndian.Uint16(b)))
	case opLong1, opLong4:
		b, err := u.counted(widthOf(op))
		if err != nil {
			return err
		}
		u.push(decodeLong(b))
	case opBinFloat:
		b, err := u.src.read(8)
		if err != nil {
			return err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))

	case opShortBinUni, opBinUnicode, opBinUnicode8:
		b, err := u.counted(widthOf(op))
		if err != nil {
			return err
		}
		if !utf8.Valid(b) {
			return errors.New("string is not valid UTF-8")
		}
		u.push(string(b))
	case opShortBinString, opBinString:
		// Python 2 str: torch.load decodes these as UTF-8 when it can.
		b, err := u.counted(widthOf(op))
		if err != nil {
			return err
		}
		if utf8.Valid(b) {
			u.push(string(b))
		} else {
			u.push(pyBytes(bytes.Clone(b)))
		}
	case opShortBinBytes, opBinBytes, opBinBytes8:
		b, err := u.counted(widthOf(op))
		if err != nil {
			return err
		}
		u.push(pyBytes(bytes.Clone(b)))

	case opEmptyTuple:
		u.push(pyTuple{})
	case opTuple1, opTuple2, opTuple3:
		items, err := u.popN(int(op-opTuple1) + 1)
		if err != nil {
			return err
		}
		u.push(pyTuple(items))
	case opTuple:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(pyTuple(items))
	case opEmptyList:
		u.push(&pyList{})
	case opList:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(&pyList{items: items})
	case opEmptyDict:
		u.push(newPyDict())
	case opDict:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		d := newPyDict()
		if err := setPairs(d, items); err != nil {
			return err
		}
		u.push(d)

	case opAppend, opAppends:
		items, t, err := u.popInto(op == opAppends, 1)
		if err != nil {
			return err
		}
		l, ok := t.(*pyList)
		if !ok {
			return fmt.Errorf("APPEND to %s, not a list", typeName(t))
		}
		if err := u.fits(len(l.items) + len(items)); err != nil {
			return err
		}
		l.items = append(l.items, items...)
	case opSetItem, opSetItems:
		items, t, err := u.popInto(op == opSetItems, 2)
		if err != nil {
			return err
		}
		d, ok := t.(*pyDict)
		if !ok {
			return fmt.Errorf("SETITEM on %s, not a dict", typeName(t))
		}
		if err := u.fits(len(d.keys) + len(items)/2); err != nil {
			return err
		}
		return setPairs(d, items)

	case opBinPut, opLongBinPut:
		idx, err := u.index(widthOf(op))
		if err != nil {
			return err
		}
		return u.put(idx)
	case opMemoize:
		return u.put(uint32(len(u.memo)))
	case opBinGet, opLongBinGet:
		idx, err := u.index(widthOf(op))
		if err != nil {
			return err
		}
		v, ok := u.memo[idx]
		if !ok {
			return fmt.Errorf("memo index %d was never stored", idx)
		}
		u.push(v)

	case opGlobal:
		module, err := u.src.line()
		if err != nil {
			return err
		}
		name, err := u.src.line()
		if err != nil {
			return err
		}
		return u.global(module, name)
	case opStackGlobal:
		items, err := u.popN(2)
		if err != nil {
			return err
		}
		module, ok1 := items[0].(string)
		name, ok2 := items[1].(string)
		if !ok1 || !ok2 {
			return errors.New("STACK_GLOBAL needs two strings")
		}
		return u.global(module, name)
	case opReduce, opNewObj:
		args, err := u.pop()
		if err != nil {
			return err
		}
		fn, err := u.pop()
		if err != nil {
			return err
		}
		g, ok := fn.(*pyGlobal)
		if !ok || g.call == nil {
			return fmt.Errorf("cannot call %s", typeName(fn))
		}
		t, ok := args.(pyTuple)
		if !ok {
			return fmt.Errorf("arguments to %s are a %s, not a tuple", g.name, typeName(args))
		}
		v, err := g.call(t)
		if err != nil {
			return tensorError{fmt.Errorf("%s: %w", g.name, err)}
		}
		u.push(v)
	case opBuild:
		// torch's OrderedDicts carry a _metadata attribute (per-module
		// versions) set through BUILD; it does not affect the tensors.
		if _, err := u.pop(); err != nil {
			return err
		}
		t, err := u.top()
		if err != nil {
			return err
		}
		if _, ok := t.(*pyDict); !ok {
			return fmt.Errorf("BUILD (setting attributes) on %s is not supported", typeName(t))
		}
	case opBinPersID:
		pid, err := u.pop()
		if err != nil {
			return err
		}
		if u.persistentLoad == nil {
			return errors.New("persistent id outside the tensor pickle")
		}
		v, err := u.persistentLoad(pid)
		if err != nil {
			return tensorError{err}
		}
		u.push(v)
	default:
		return errors.New("unknown or unsupported opcode")
	}
	return nil
}

var errStackUnderflow = errors.New("stack underflow")

// tensorError is an error from interpreting a well-formed pickle (a missing
// storage, bad tensor arguments), reported without calling the pickle corrupt.
type tensorError struct{ error }

func (u *unpickler) push(v any) {
	u.stack = append(u.stack, v)
	u.pushes++
}

// avail is the number of items above the most recent MARK; as in CPython,
// opcodes other than the MARK-consuming ones cannot reach below it.
func (u *unpickler) avail() int {
	if len(u.marks) == 0 {
		return len(u.stack)
	}
	return len(u.stack) - u.marks[len(u.marks)-1]
}

func (u *unpickler) top() (any, error) {
	if u.avail() < 1 {
		return nil, errStackUnderflow
	}
	return u.stack[len(u.stack)-1], nil
}

// popN pops (a copy of) the top n items, oldest first.
func (u *unpickler) popN(n int) ([]any, error) {
	if u.avail() < n {
		return nil, errStackUnderflow
	}
	items := append([]any(nil), u.stack[len(u.stack)-n:]...)
	u.stack = u.stack[:len(u.stack)-n]
	return items, nil
}

func (u *unpickler) pop() (any, error) {
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

// popMark returns (a copy of) the items above the most recent MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	if err := u.fits(len(u.stack) - m); err != nil {
		return nil, err
	}
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

// popInto pops the operands of APPEND/SETITEM (n values) or of their
// multi-item forms APPENDS/SETITEMS (all down to the mark), and returns
// them with the container they go into, now on top of the stack.
func (u *unpickler) popInto(multi bool, n int) (items []any, container any, err error) {
	if multi {
		items, err = u.popMark()
	} else {
		items, err = u.popN(n)
	}
	if err != nil {
		return nil, nil, err
	}
	container, err = u.top()
	return items, container, err
}

func (u *unpickler) put(idx uint32) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	u.memo[idx] = v
	return nil
}

func (u *unpickler) global(module, name string) error {
	full := module + "." + name
	g, ok := u.globals[full]
	if !ok {
		return fmt.Errorf("%w %q: only tensor state_dict globals are allowed (like torch.load(weights_only=True))", errRefusedGlobal, full)
	}
	u.push(g)
	return nil
}

func setPairs(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return errors.New("odd number of items for a dict")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// widthOf is the size of the length or memo-index operand of an opcode.
func widthOf(op byte) int {
	switch op {
	case opShortBinUni, opShortBinString, opShortBinBytes, opLong1, opBinPut, opBinGet:
		return 1
	case opBinUnicode8, opBinBytes8:
		return 8
	}
	return 4
}

// index reads an unsigned little-endian memo index of the given width.
func (u *unpickler) index(width int) (uint32, error) {
	b, err := u.src.read(width)
	if err != nil {
		return 0, err
	}
	if width == 1 {
		return uint32(b[0]), nil
	}
	return binary.LittleEndian.Uint32(b), nil
}

// length reads an unsigned little-endian length of the given width and
// refuses one longer than the data left, so a corrupt length can never make
// us allocate more than the file holds.
func (u *unpickler) length(width int) (int, error) {
	b, err := u.src.read(width)
	if err != nil {
		return 0, err
	}
	var n uint64
	switch width {
	case 1:
		n = uint64(b[0])
	case 4:
		n = uint64(binary.LittleEndian.Uint32(b))
	case 8:
		n = binary.LittleEndian.Uint64(b)
	}
	if n > uint64(u.src.remaining()) {
		return 0, fmt.Errorf("length %d runs past the end of the data (%d bytes left; file truncated?)", n, u.src.remaining())
	}
	return int(n), nil
}

// counted reads a length-prefixed byte string, which can be no longer
// than a whole pickle may be.
func (u *unpickler) counted(width int) ([]byte, error) {
	n, err := u.length(width)
	if err != nil {
		return nil, err
	}
	if int64(n) > u.budget.bytes {
		return nil, &limits.ExceededError{Limit: limits.PickleBytes, Got: int64(n), Max: u.budget.bytes}
	}
	return u.src.read(n)
}

// decodeLong decodes pickle's little-endian two's-complement integers,
// returning an int64 when the value fits.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	be := make([]byte, len(b))
	for i, c := range b {
		be[len(b)-1-i] = c
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	if v.IsInt64() {
		return v.Int64()
	}
	return v
}

// source reads a byte range of an io.ReaderAt through a small window, so a
// pickle can be decoded from an in-memory entry or straight from a file.
type source struct {
	r        io.ReaderAt
	pos, end int64 // absolute offsets
	buf      []byte
	bufAt    int64
}

func newSource(r io.ReaderAt, start, end int64) *source {
	return &source{r: r, pos: start, end: end}
}

func (s *source) remaining() int64 { return s.end - s.pos }

// errTruncated is returned when data ends before the structure it encodes.
var errTruncated = errors.New("unexpected end of data (file truncated?)")

// read returns the next n bytes. The slice is only valid until the next read.
func (s *source) read(n int) ([]byte, error) {
	if n < 0 || int64(n) > s.remaining() {
		return nil, errTruncated
	}
	if s.pos < s.bufAt || s.pos+int64(n) > s.bufAt+int64(len(s.buf)) {
		size := int64(max(n, 64<<10))
		size = min(size, s.remaining())
		if int64(cap(s.buf)) < size {
			s.buf = make([]byte, size)
		}
		s.buf = s.buf[:size]
		if k, err := s.r.ReadAt(s.buf, s.pos); k < len(s.buf) {
			if err == nil || err == io.EOF {
				err = errTruncated
			}
			s.buf = s.buf[:0]
			return nil, err
		}
		s.bufAt = s.pos
	}
	i := s.pos - s.bufAt
	s.pos += int64(n)
	return s.buf[i : i+int64(n) : i+int64(n)], nil
}

// line reads a newline-terminated line, as GLOBAL's operands are.
func (s *source) line() (string, error) {
	const maxLine = 1024
	var out []byte
	for len(out) <= maxLine {
		b, err := s.read(1)
		if err != nil {
			return "", err
		}
		if b[0] == '\n' {
			if !utf8.Valid(out) {
				return "", errors.New("GLOBAL name is not valid UTF-8")
			}
			return string(out), nil
		}
		out = append(out, b[0])
	}
	return "", errors.New("GLOBAL name longer than 1024 bytes")
}
