// Package weights is lorafit's counterpart of torchvision's Weights enums
// (ResNet50_Weights.IMAGENET1K_V2 and friends): a registry of the pretrained
// ResNet checkpoints with the facts needed to use them (URL, SHA-256 prefix,
// preprocessing, ImageNet categories) and a resumable, verifying downloader
// that shares file names with torch hub's cache.
//
// The registry itself lives in registry_gen.go, generated from the installed
// torchvision by gen_registry.py so that no URL or hash is ever typed by hand.
package weights

//go:generate /usr/bin/python3 gen_registry.py

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lorafit/lorafit/preprocess"
)

// Weights describes one pretrained checkpoint, mirroring the fields of a
// torchvision WeightsEnum member (url, meta, transforms).
type Weights struct {
	// Name is "<arch>/<ENUM_MEMBER>", e.g. "resnet50/IMAGENET1K_V2".
	Name string
	// Arch is the torchvision model builder name, e.g. "resnet50".
	Arch string
	// URL is the canonical download location on download.pytorch.org.
	URL string
	// SHA256Prefix is the leading hex of the file's SHA-256, taken from the
	// file name the way torch.hub does (<arch>-<hex>.pth → <hex>).
	SHA256Prefix string
	// NumParams is the parameter count torchvision reports in meta.
	NumParams int
	// Acc1 and Acc5 are the ImageNet-1K top-1/top-5 accuracies (percent).
	Acc1, Acc5 float64
	// Recipe links to the training recipe that produced the weights.
	Recipe string
	// Preprocess is the eval preprocessing the weights expect.
	Preprocess preprocess.Preprocess
	// Interpolation is the torchvision InterpolationMode of its resize,
	// e.g. "bilinear" (the only one lorafit implements).
	Interpolation string
	// Categories are the class names in logit order. The slice is shared by
	// all registry entries; do not modify it.
	Categories []string
}

// TorchvisionName returns the torchvision spelling, e.g.
// "ResNet50_Weights.IMAGENET1K_V2", for messages aimed at PyTorch users.
func (w *Weights) TorchvisionName() string {
	_, member, _ := strings.Cut(w.Name, "/")
	if cls, ok := enumClasses[w.Arch]; ok {
		return cls + "." + member
	}
	return w.Name
}

// FileName is the last element of the URL path; torch hub stores the file
// under the same name, which lets the two caches be shared.
func (w *Weights) FileName() string {
	if u, err := url.Parse(w.URL); err == nil && u.Path != "" {
		return path.Base(u.Path)
	}
	return path.Base(w.URL)
}

// CachedPath is where the file lives (or will live) inside cache dir.
func (w *Weights) CachedPath(dir string) string {
	return filepath.Join(dir, w.FileName())
}

// TorchvisionVersion reports the torchvision release the registry was
// generated from, so a mismatch with a user's PyTorch setup can be explained.
func TorchvisionVersion() string { return torchvisionVersion }

// Lookup finds weights by name, case-insensitively. Accepted spellings:
//
//	resnet50/IMAGENET1K_V2           lorafit
//	ResNet50_Weights.IMAGENET1K_V2   torchvision
//	resnet50/DEFAULT                 the enum's DEFAULT alias (the best available)
//
// The returned value is a copy, so callers may modify it (e.g. the URL)
// without affecting the registry.
func Lookup(name string) (*Weights, error) {
	arch, member, ok := splitName(name)
	if ok {
		if member == "default" {
			if d, found := defaultWeights[arch]; found {
				member = strings.ToLower(d)
			}
		}
		for i := range registry {
			w := &registry[i]
			if w.Arch == arch && strings.EqualFold(w.Name, arch+"/"+member) {
				c := *w
				return &c, nil
			}
		}
	}
	known := make([]string, 0, len(registry)+len(defaultWeights))
	for _, w := range All() {
		known = append(known, w.Name)
	}
	archs := make([]string, 0, len(defaultWeights))
	for a := range defaultWeights {
		archs = append(archs, a+"/DEFAULT")
	}
	sort.Strings(archs)
	known = append(known, archs...)
	return nil, fmt.Errorf("weights: unknown weights %q; known: %s (torchvision spelling such as ResNet50_Weights.IMAGENET1K_V2 also works)",
		name, strings.Join(known, ", "))
}

// splitName normalizes the accepted spellings to lower-case (arch, member).
func splitName(name string) (arch, member string, ok bool) {
	s := strings.ToLower(strings.TrimSpace(name))
	if a, m, found := strings.Cut(s, "/"); found {
		return a, m, a != "" && m != ""
	}
	if a, m, found := strings.Cut(s, "."); found {
		a = strings.TrimSuffix(a, "_weights")
		return a, m, a != "" && m != ""
	}
	return "", "", false
}

// All returns copies of every registry entry sorted by name, for listings
// and for "did you mean" messages.
func All() []*Weights {
	out := make([]*Weights, len(registry))
	for i := range registry {
		c := registry[i]
		out[i] = &c
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CacheDir is where lorafit keeps downloaded weights: $LORAFIT_CACHE if set,
// else <os.UserCacheDir()>/lorafit/weights ($XDG_CACHE_HOME or ~/.cache on
// Linux). Keeping our own directory avoids writing into torch's cache.
func CacheDir() (string, error) {
	if d := os.Getenv("LORAFIT_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("weights: no cache directory (set LORAFIT_CACHE): %w", err)
	}
	return filepath.Join(base, "lorafit", "weights"), nil
}

// TorchHubDir returns torch hub's checkpoint directory, resolved exactly as
// torch.hub does ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else
// ~/.cache/torch, plus hub/checkpoints), so files a user already downloaded
// with PyTorch are found instead of fetched again.
func TorchHubDir() (string, error) {
	home := os.Getenv("TORCH_HOME")
	if home == "" {
		xdg := os.Getenv("XDG_CACHE_HOME")
		if xdg == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			xdg = filepath.Join(h, ".cache")
		}
		home = filepath.Join(xdg, "torch")
	} else if strings.HasPrefix(home, "~") {
		// torch applies os.path.expanduser to TORCH_HOME.
		if h, err := os.UserHomeDir(); err == nil {
			home = filepath.Join(h, home[1:])
		}
	}
	return filepath.Join(home, "hub", "checkpoints"), nil
}

// ErrNotCached reports that Locate found no verified copy.
var ErrNotCached = errors.New("weights: no verified local copy")

// Locate returns the path of an existing, verified copy of w: first in dir
// (lorafit's cache), then in torch hub's checkpoint directory. fromTorchHub
// tells the caller to mention where the file came from. When none verifies
// the error wraps ErrNotCached and, if dir holds a file that fails
// verification, that failure too (a *HashMismatchError, or why the file
// cannot be read), so callers can say what is wrong instead of "not
// downloaded"; Download replaces such a file.
func (w *Weights) Locate(dir string) (p string, fromTorchHub bool, err error) {
	var bad error
	if dir != "" {
		p = w.CachedPath(dir)
		verr := VerifyFile(p, w.SHA256Prefix)
		if verr == nil {
			return p, false, nil
		}
		if !errors.Is(verr, os.ErrNotExist) {
			bad = verr
		}
	}
	if hub, herr := TorchHubDir(); herr == nil {
		p = w.CachedPath(hub)
		if filepath.Clean(hub) != filepath.Clean(dir) && VerifyFile(p, w.SHA256Prefix) == nil {
			return p, true, nil
		}
	}
	if bad != nil {
		return "", false, &unusableError{bad}
	}
	return "", false, ErrNotCached
}

// unusableError is Locate's error when the cache holds a file that fails
// verification: it is ErrNotCached, and says why.
type unusableError struct{ cause error }

func (e *unusableError) Error() string   { return ErrNotCached.Error() + ": " + e.cause.Error() }
func (e *unusableError) Unwrap() []error { return []error{ErrNotCached, e.cause} }
