package weights

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/internal/digest"
	"github.com/lorafit/lorafit/limits"
	"github.com/lorafit/lorafit/resnet"
)

// Source says where a model's weights came from; it travels into logs,
// reports and adapter files so a result can always be traced to its base.
type Source struct {
	Spec     string   // what the user passed to --weights
	Registry *Weights // set for a registry name (transforms, categories)
	Path     string   // file read, "" for random
	SHA256   string   // full hex digest of the file, "" for random
	Random   bool
	Seed     uint64
}

// String is a short human description.
func (s *Source) String() string {
	switch {
	case s.Random:
		return fmt.Sprintf("random init (seed %d)", s.Seed)
	case s.Registry != nil:
		return fmt.Sprintf("%s (%s, sha256 %s)", s.Registry.Name, s.Path, short(s.SHA256))
	}
	return fmt.Sprintf("%s (sha256 %s)", s.Path, short(s.SHA256))
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// OpenOptions are the choices Open needs besides the spec.
type OpenOptions struct {
	Arch       string // architecture for "random" (default resnet50)
	NumClasses int    // classes for "random" (default 1000)
	CacheDir   string // default CacheDir()
	Progress   io.Writer
	Download   bool // fetch a registry name that is not cached yet
}

// Open resolves a --weights spec into a state_dict and says where it came
// from. A spec is one of: a registry name (`resnet50/IMAGENET1K_V2`, taken
// from the cache or downloaded), a path to a `.pth`/`.pt` or `.safetensors`
// file (recognized by content, not extension), or `random` / `random:SEED`
// for torchvision's initialization with a fixed seed. Nothing is ever
// substituted silently: any failure is an error.
func Open(ctx context.Context, spec string, opts OpenOptions) (*checkpoint.StateDict, *Source, error) {
	if spec == "" {
		return nil, nil, fmt.Errorf("no weights given: pass a registry name (e.g. resnet50/IMAGENET1K_V2), a .pth/.safetensors path, or random")
	}
	if spec == "random" || strings.HasPrefix(spec, "random:") {
		src := &Source{Spec: spec, Random: true}
		if s, ok := strings.CutPrefix(spec, "random:"); ok {
			seed, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("weights %q: the seed after random: must be a non-negative integer", spec)
			}
			src.Seed = seed
		}
		arch := opts.Arch
		if arch == "" {
			arch = "resnet50"
		}
		cfg, err := resnet.ConfigFor(arch)
		if err != nil {
			return nil, nil, err
		}
		if opts.NumClasses > 0 {
			cfg.NumClasses = opts.NumClasses
		}
		sd := resnet.RandomStateDict(cfg, src.Seed)
		src.SHA256 = Digest(sd)
		return sd, src, nil
	}
	if _, err := os.Stat(spec); err == nil {
		sd, info, err := ReadFile(spec)
		if err != nil {
			return nil, nil, err
		}
		return sd, &Source{Spec: spec, Path: spec, SHA256: info.SHA256}, nil
	}
	w, lerr := Lookup(spec)
	if lerr != nil {
		if ext := filepath.Ext(spec); ext == ".pth" || ext == ".pt" || ext == ".safetensors" {
			return nil, nil, fmt.Errorf("weights file %s: no such file", spec)
		}
		return nil, nil, fmt.Errorf("weights %q is neither a file nor a known name: %w", spec, lerr)
	}
	dir := opts.CacheDir
	if dir == "" {
		d, err := CacheDir()
		if err != nil {
			return nil, nil, err
		}
		dir = d
	}
	path, _, err := w.Locate(dir)
	if err != nil {
		if !opts.Download {
			return nil, nil, notCachedError(w, dir, err)
		}
		path, err = Download(ctx, w, dir, DownloadOptions{Progress: opts.Progress})
		if err != nil {
			return nil, nil, err
		}
	}
	sd, info, err := ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return sd, &Source{Spec: spec, Registry: w, Path: path, SHA256: info.SHA256}, nil
}

// notCachedError explains a failed Locate: not downloaded yet, or a cached
// file that is damaged or not the expected one, with the fix for each.
func notCachedError(w *Weights, dir string, err error) error {
	p := w.CachedPath(dir)
	var hm *HashMismatchError
	var ue *unusableError
	switch {
	case errors.As(err, &hm):
		return fmt.Errorf("%s: cached file %s is damaged or not %s: its sha256 starts with %s, not %s; delete it and run `lorafit weights download %s` (or put the right file there)",
			w.Name, p, w.FileName(), short(hm.Actual), hm.Expected, w.Name)
	case errors.As(err, &ue):
		return fmt.Errorf("%s: cached file %s cannot be used (%v); remove it and run `lorafit weights download %s`", w.Name, p, ue.cause, w.Name)
	}
	return fmt.Errorf("%s is not downloaded yet: run `lorafit weights download %s` (or put %s at %s)", w.Name, w.Name, w.FileName(), p)
}

// Digest is a SHA-256 over a state_dict's names, dtypes, shapes and bytes:
// the identity of weights that never were a file (random init), so
// adapters trained on them can still be bound to their base.
func Digest(sd *checkpoint.StateDict) string {
	h := digest.New()
	for _, k := range sd.Names {
		t := sd.Get(k)
		fmt.Fprintf(h, "%s|%s|%v|", k, t.DType, t.Shape)
		h.Write(t.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// FileInfo is what ReadFile learns about a file besides its tensors.
type FileInfo struct {
	Format string // "pth" or "safetensors"
	SHA256 string // hex digest of the whole file
}

// ReadFile loads a PyTorch (.pth/.pt, zip or legacy) or safetensors file,
// telling them apart by their content (see Format), not their extension.
// The file must be regular (see limits.OpenRegular): /dev/zero or a FIFO
// fails at once instead of being read forever. It is opened once, so the
// digest and the tensors come from the same file.
func ReadFile(path string) (*checkpoint.StateDict, FileInfo, error) {
	var info FileInfo
	f, fi, err := limits.OpenRegular(path)
	if err != nil {
		return nil, info, err
	}
	defer f.Close()
	size := fi.Size()
	h := digest.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return nil, info, fmt.Errorf("%s: %w", path, err)
	}
	info.SHA256 = hex.EncodeToString(h.Sum(nil))
	head := make([]byte, 9)
	n, _ := f.ReadAt(head, 0)
	info.Format = Format(head[:n], size)
	var sd *checkpoint.StateDict
	switch info.Format {
	case "pth":
		sd, err = pth.Read(f, size, path)
	case "safetensors":
		sd, _, err = safetensors.Read(f, size, path)
	default:
		return nil, info, fmt.Errorf("%s: neither a PyTorch .pth/.pt file nor a safetensors file (starts with % x)", path, head[:n])
	}
	if err != nil {
		return nil, info, err
	}
	return sd, info, nil
}

// Format names a checkpoint format from a file's first bytes (9 suffice)
// and its size: "safetensors", "pth" (zip or legacy pickle), or "". The
// formats are tried from the most to the least structured, so one valid
// format is never taken for another: safetensors first (an 8-byte
// little-endian header length that fits the file, then '{' — a length of
// 128, 384, 640, … starts with the bytes of a pickle PROTO opcode), then
// zip by its signature, and the legacy pickle stream (PROTO 2–5) last.
func Format(head []byte, size int64) string {
	if len(head) >= 9 && size >= 10 && head[8] == '{' {
		if n := binary.LittleEndian.Uint64(head); n >= 2 && n <= uint64(size-8) {
			return "safetensors"
		}
	}
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return "pth"
	case len(head) >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5:
		return "pth"
	}
	return ""
}
