// Package pth reads PyTorch .pth/.pt state_dicts (torch.save output) natively,
// so lorafit can start from the official torchvision weights without Python.
//
// Loading is safe on untrusted files, like torch.load(weights_only=True): the
// pickle inside is decoded by a restricted interpreter that only accepts the
// globals a tensor state_dict needs and never executes anything. Every length
// and tensor view is checked against the data actually present, so corrupt
// or truncated input yields an error naming the file, never a panic or an
// allocation larger than the file justifies.
//
// Supported containers: the zip format torch.save writes since 1.6 (stored or
// deflated entries, any top-level directory name) and the older "legacy"
// stream (_use_new_zipfile_serialization=False). The pre-0.4 tar format and
// TorchScript archives are refused with an explanation.
//
// The pickled object must be a dict (or OrderedDict) of name → tensor. Training
// checkpoints that wrap it as {"state_dict": ...} or {"model": ...} are
// unwrapped (that key wins; the rest, e.g. optimizer state or the epoch, is
// ignored). Any non-tensor value in the state_dict itself is an error naming
// its key. Tensors come out C-contiguous, each with its own bytes, in the
// pickle's key order; nn.Parameter is treated as its data.
package pth

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"path"
	"strings"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/limits"
)

// Load reads the state_dict in a .pth/.pt file, which must be a regular
// file (see limits.OpenRegular).
func Load(path string) (*checkpoint.StateDict, error) {
	f, fi, err := limits.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f, fi.Size(), path)
}

// errInternal marks a recovered panic: a bug in this package, reported as an
// error rather than crashing the caller on a hostile file.
var errInternal = errors.New("internal error in the .pth reader (please report)")

// Read reads a state_dict from size bytes of r; name identifies the input in
// error messages. Sizes are checked against the limits package's
// CheckpointBytes and Pickle* limits before anything of that size is
// allocated.
func Read(r io.ReaderAt, size int64, name string) (sd *checkpoint.StateDict, err error) {
	defer func() {
		if p := recover(); p != nil {
			sd, err = nil, fmt.Errorf("%s: %w: %v", name, errInternal, p)
		}
	}()
	l := &loader{r: r, size: size, storages: map[string]*storageRef{}}
	if l.maxBytes, err = limits.CheckpointBytes.Max(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sd, err = l.read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return sd, nil
}

type loader struct {
	r        io.ReaderAt
	size     int64
	storages map[string]*storageRef // by key, as persistent ids name them
	legacy   bool
	// attach finds the bytes of a newly referenced storage (sets its read).
	attach func(*storageRef) error
	// Bytes taken so far from stored and from deflated zip entries; see
	// readEntry.
	stored, inflated int64
	// declared is the bytes of all storages referenced so far, which may
	// not pass maxBytes (limits.CheckpointBytes).
	declared, maxBytes int64
}

func (l *loader) read() (*checkpoint.StateDict, error) {
	if l.size < 0 {
		return nil, errors.New("negative size")
	}
	head := make([]byte, min(l.size, 512))
	if n, err := l.r.ReadAt(head, 0); n < len(head) {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	var top any
	var err error
	switch {
	case len(head) < 4:
		return nil, fmt.Errorf("file is %d bytes long, too short to be a PyTorch checkpoint", l.size)
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		top, err = l.readZip()
	case head[0] == opProto:
		l.legacy = true
		top, err = l.readLegacy()
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return nil, errors.New("this is the pre-0.4 tar-based torch.save format, which is not supported; re-save it with a current PyTorch")
	default:
		return nil, errors.New("not a PyTorch checkpoint: neither a zip archive (torch.save since 1.6) nor a legacy torch.save pickle")
	}
	if err != nil {
		return nil, err
	}
	return l.stateDict(top)
}

// persistentLoad resolves a storage reference to a shared *storageRef.
func (l *loader) persistentLoad(pid any) (any, error) {
	key, dtype, numel, err := parseStorageID(pid, l.legacy)
	if err != nil {
		return nil, err
	}
	if s, ok := l.storages[key]; ok {
		if s.dtype != dtype || s.numel != numel {
			return nil, fmt.Errorf("storage %q is referenced as both %d×%s and %d×%s", key, s.numel, s.dtype, numel, dtype)
		}
		return s, nil
	}
	s := &storageRef{key: key, dtype: dtype, numel: numel}
	if n := s.nbytes(); n > l.maxBytes-l.declared { // nbytes ≤ MaxInt64: numel ≤ MaxInt64/8
		return nil, fmt.Errorf("storage %q (%d × %s): %w", key, numel, dtype,
			&limits.ExceededError{Limit: limits.CheckpointBytes, Got: satAdd(l.declared, n), Max: l.maxBytes})
	}
	l.declared += s.nbytes()
	if err := l.attach(s); err != nil {
		return nil, err
	}
	l.storages[key] = s
	return s, nil
}

// --- zip format ---------------------------------------------------------

// Deflate cannot expand data by more than about 1032:1; a larger claimed
// ratio is a lie that would make us allocate for data that is not there.
const maxDeflateRatio = 1100

func (l *loader) readZip() (any, error) {
	zr, err := zip.NewReader(l.r, l.size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // nothing is extracted to disk
		return nil, fmt.Errorf("not a valid zip archive (truncated or corrupt?): %w", err)
	}
	files := map[string]*zip.File{}
	var pkls []string
	for _, f := range zr.File {
		if _, dup := files[f.Name]; dup {
			return nil, fmt.Errorf("zip archive has two entries named %q", f.Name)
		}
		files[f.Name] = f
		if dir, base := path.Split(f.Name); base == "data.pkl" && !strings.Contains(strings.TrimSuffix(dir, "/"), "/") {
			pkls = append(pkls, f.Name)
		}
	}
	if len(pkls) != 1 {
		if len(pkls) > 1 {
			return nil, fmt.Errorf("zip archive has several top-level data.pkl entries (%s)", strings.Join(pkls, ", "))
		}
		return nil, errors.New("zip archive has no data.pkl: not a file written by torch.save")
	}
	prefix := strings.TrimSuffix(pkls[0], "data.pkl")
	if _, ok := files[prefix+"constants.pkl"]; ok {
		return nil, errors.New("this is a TorchScript archive (torch.jit.save), not a state_dict; save model.state_dict() with torch.save instead")
	}

	if f, ok := files[prefix+"byteorder"]; ok {
		b, err := l.readEntry(f, int64(min(f.UncompressedSize64, 64)))
		if err != nil {
			return nil, err
		}
		switch order := strings.TrimSpace(string(b)); order {
		case "little":
		case "big":
			return nil, errors.New("checkpoint was saved on a big-endian machine (byteorder \"big\"); only little-endian checkpoints are supported")
		default:
			return nil, fmt.Errorf("unknown byteorder %q", order)
		}
	}

	l.attach = func(s *storageRef) error {
		entry := prefix + "data/" + s.key
		f, ok := files[entry]
		if !ok {
			return fmt.Errorf("missing storage entry %q", entry)
		}
		if f.UncompressedSize64 != uint64(s.nbytes()) {
			return fmt.Errorf("storage entry %q holds %d bytes, but %d × %s needs %d", entry, f.UncompressedSize64, s.numel, s.dtype, s.nbytes())
		}
		s.read = func() ([]byte, error) { return l.readEntry(f, s.nbytes()) }
		return nil
	}

	f := files[pkls[0]]
	if err := limits.PickleBytes.Check(int64(min(f.UncompressedSize64, 1<<62))); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	pkl, err := l.readEntry(f, int64(f.UncompressedSize64))
	if err != nil {
		return nil, err
	}
	u, err := newUnpickler(newSource(bytes.NewReader(pkl), 0, int64(len(pkl))), l.persistentLoad)
	if err != nil {
		return nil, err
	}
	top, err := u.load()
	if err != nil && !errors.Is(err, errRefusedGlobal) {
		err = fmt.Errorf("%s: %w", f.Name, err)
	}
	return top, err
}

// readEntry reads a whole zip entry of the expected size, verifying its
// CRC. Memory stays bounded by what the file can really hold: sizes the file
// cannot back are refused before allocating, stored entries may not add up
// to more than the file (entries can overlap), deflated ones not to more than
// the best possible compression ratio allows, and a deflated entry's buffer
// only grows as data actually decompresses.
func (l *loader) readEntry(f *zip.File, want int64) ([]byte, error) {
	comp, uncomp := f.CompressedSize64, f.UncompressedSize64
	store := f.Method == zip.Store
	plausible := want >= 0 && comp <= uint64(l.size) && uncomp == uint64(want) &&
		((store && comp == uncomp && want <= l.size-l.stored) ||
			(!store && uncomp <= comp*maxDeflateRatio+1024 && want <= l.size*maxDeflateRatio-l.inflated))
	if !plausible {
		return nil, fmt.Errorf("zip entry %q has implausible sizes (%d compressed, %d uncompressed, %d expected) for a %d-byte file",
			f.Name, comp, uncomp, want, l.size)
	}
	if store {
		// The entry's bytes must lie inside the file, where its local
		// header says they start, before we allocate for them.
		if off, err := f.DataOffset(); err != nil || off > l.size-want {
			return nil, fmt.Errorf("zip entry %q: its %d bytes are not in the %d-byte file (truncated?)", f.Name, want, l.size)
		}
		l.stored += want
	} else {
		l.inflated += want
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("zip entry %q: %w", f.Name, err)
	}
	defer rc.Close()
	var buf []byte
	if store {
		buf = make([]byte, want)
		_, err = io.ReadFull(rc, buf)
	} else {
		b := bytes.NewBuffer(make([]byte, 0, min(want, 1<<20)))
		_, err = b.ReadFrom(io.LimitReader(rc, want))
		buf = b.Bytes()
		if err == nil && int64(len(buf)) < want {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		return nil, fmt.Errorf("zip entry %q: %w (file truncated?)", f.Name, err)
	}
	// Reading to EOF makes archive/zip check the CRC.
	if n, err := io.Copy(io.Discard, io.LimitReader(rc, 1)); err != nil {
		return nil, fmt.Errorf("zip entry %q is corrupt: %w", f.Name, err)
	} else if n != 0 {
		return nil, fmt.Errorf("zip entry %q holds more data than its header says", f.Name)
	}
	return buf, nil
}

// --- legacy format ------------------------------------------------------

// The legacy stream is: pickle(magic number), pickle(protocol version 1001),
// pickle(sys_info), the object pickle, pickle(sorted storage keys), then for
// each key an int64 element count followed by the storage's raw bytes.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

const legacyProtocolVersion = 1001

func (l *loader) readLegacy() (any, error) {
	src := newSource(l.r, 0, l.size)
	u, err := newUnpickler(src, nil)
	if err != nil {
		return nil, err
	}
	magic, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("legacy header: %w", err)
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, errors.New("not a PyTorch checkpoint: a pickle without torch.save's magic number (a plain pickle is not supported)")
	}
	version, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("legacy header: %w", err)
	}
	if version != any(int64(legacyProtocolVersion)) {
		return nil, fmt.Errorf("legacy header: unsupported protocol version %s (want %d)", describe(version), legacyProtocolVersion)
	}
	sysInfo, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("legacy header: %w", err)
	}
	if d, ok := sysInfo.(*pyDict); ok {
		if le, ok := d.get("little_endian"); ok && le == false {
			return nil, errors.New("checkpoint was saved on a big-endian machine; only little-endian checkpoints are supported")
		}
	}

	var pending []*storageRef
	l.attach = func(s *storageRef) error { pending = append(pending, s); return nil }
	u.persistentLoad = l.persistentLoad
	top, err := u.load()
	if err != nil {
		return nil, err
	}
	u.persistentLoad = nil
	keysVal, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("storage key list: %w", err)
	}
	keys, ok := keysVal.(*pyList)
	if !ok {
		return nil, fmt.Errorf("storage key list is a %s", typeName(keysVal))
	}

	// Walk the raw storages, recording where each one's bytes are.
	at := src.pos
	listed := map[string]bool{}
	for _, k := range keys.items {
		key := asString(k)
		s, ok := l.storages[key]
		if !ok || listed[key] {
			return nil, fmt.Errorf("storage key list has unexpected key %s", describe(k))
		}
		listed[key] = true
		var hdr [8]byte
		if at > l.size-8 {
			return nil, fmt.Errorf("storage %q: %w", key, errTruncated)
		}
		if _, err := l.r.ReadAt(hdr[:], at); err != nil {
			return nil, fmt.Errorf("storage %q: %w", key, err)
		}
		if n := int64(binary.LittleEndian.Uint64(hdr[:])); n != s.numel {
			return nil, fmt.Errorf("storage %q has %d elements on disk but the pickle says %d", key, n, s.numel)
		}
		dataAt, n := at+8, s.nbytes()
		if n > l.size-dataAt {
			return nil, fmt.Errorf("storage %q: %w", key, errTruncated)
		}
		s.read = func() ([]byte, error) {
			buf := make([]byte, n)
			if _, err := l.r.ReadAt(buf, dataAt); err != nil {
				return nil, fmt.Errorf("storage %q: %w", key, err)
			}
			return buf, nil
		}
		at = dataAt + n
	}
	for _, s := range pending {
		if !listed[s.key] {
			return nil, fmt.Errorf("storage %q is used but its data is missing", s.key)
		}
	}
	return top, nil
}

// --- the state_dict ------------------------------------------------------

// budgetSlack allows small stride-0 (expanded) tensors beyond the
// proportional budget in stateDict.
const budgetSlack = 64 << 20

func (l *loader) stateDict(top any) (*checkpoint.StateDict, error) {
	d, ok := top.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("the saved object is a %s, not a state_dict (a dict of tensors)", typeName(top))
	}
	where := "state_dict"
	for _, wrapper := range []string{"state_dict", "model"} {
		if inner, ok := d.get(wrapper); ok {
			if innerDict, ok := inner.(*pyDict); ok {
				d, where = innerDict, fmt.Sprintf("state_dict (under %q)", wrapper)
				break
			}
		}
	}

	// Output may be up to 4× the distinct storage bytes (tied weights
	// legitimately repeat), plus slack; see materialize. Counting uses lets
	// the last tensor of each storage take over or release its bytes.
	var stored int64
	uses := map[*storageRef]int{}
	for _, v := range d.vals {
		if t, ok := v.(*tensorRef); ok {
			if uses[t.storage]++; uses[t.storage] == 1 {
				stored = min(stored+min(t.storage.nbytes(), 1<<60), 1<<60)
			}
		}
	}
	budget := outputBudget{expand: budgetSlack + 4*stored, max: l.maxBytes}

	sd := checkpoint.NewStateDict()
	for i, k := range d.keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("%s has a non-string key %s", where, describe(k))
		}
		t, ok := d.vals[i].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("%s key %q holds %s, not a tensor", where, name, describe(d.vals[i]))
		}
		uses[t.storage]--
		tensor, err := materialize(t, &budget, uses[t.storage] == 0)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		sd.Set(name, tensor)
	}
	return sd, nil
}
