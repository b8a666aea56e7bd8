package serve

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lorafit/lorafit/adapter"
)

// BaseName is the reserved name of the base model's own classes.
const BaseName = "base"

// Errors the HTTP layer maps to status codes.
var (
	// ErrNotFound: no adapter of that name under the directory (404).
	ErrNotFound = errors.New("no such adapter")
	// ErrWrongBase: the adapter is bound to other base weights (409).
	ErrWrongBase = errors.New("adapter bound to another base")
)

// validName is what an adapter's name may be: one path element, no
// leading dot, so that no name can reach outside the directory.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Registry holds the adapters of a directory: each sub-directory is one,
// named by its directory name, loaded on first use and kept in an LRU
// bounded by count and by bytes. A model handed out stays valid (and
// unchanged) until released, even if it is reloaded or evicted meanwhile.
type Registry struct {
	Dir string
	// MaxAdapters and MaxBytes bound what stays loaded (the base's own
	// model is not counted); the least recently used adapter is evicted
	// first, never one just loaded.
	MaxAdapters int
	MaxBytes    int64
	// CheckEvery is how often, at most, a loaded adapter's directory is
	// checked for changes on use (0: every use); a changed one is reloaded.
	CheckEvery time.Duration

	engine  *Engine
	base    *Model
	metrics *metrics

	mu      sync.Mutex
	entries map[string]*entry
	lru     *list.List // of *entry, most recent first
	loading map[string]*loadCall
	bytes   int64
}

type entry struct {
	name    string
	model   *Model
	print   fingerprint
	checked time.Time
	elem    *list.Element
	loaded  time.Time
	version int
}

type loadCall struct {
	done  chan struct{}
	model *Model
	print fingerprint
	err   error
}

// held counts who uses a model (requests in flight, the cache itself);
// the last release of an evicted model frees its graphs.
type held struct {
	mu      sync.Mutex
	refs    int
	retired bool
}

// NewRegistry serves the adapters under dir on e, with base as the model
// named "base".
func NewRegistry(dir string, e *Engine, base *Model, m *metrics) *Registry {
	if m == nil {
		m = newMetrics()
	}
	return &Registry{Dir: dir, MaxAdapters: 128, MaxBytes: 1 << 30, CheckEvery: 2 * time.Second,
		engine: e, base: base, metrics: m, entries: map[string]*entry{}, lru: list.New(), loading: map[string]*loadCall{}}
}

// path is the adapter directory of a name: DIR/NAME, or DIR/NAME/adapter
// as `lorafit train --out DIR/NAME` writes it.
func (r *Registry) path(name string) (string, error) {
	if !validName.MatchString(name) || name == BaseName || r.Dir == "" {
		return "", fmt.Errorf("%w %q", ErrNotFound, name)
	}
	dir := filepath.Join(r.Dir, name)
	for _, d := range []string{dir, filepath.Join(dir, "adapter")} {
		if fi, err := os.Stat(filepath.Join(d, adapter.ConfigFile)); err == nil && fi.Mode().IsRegular() {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w %q in %s", ErrNotFound, name, r.Dir)
}

// Names lists the adapters under the directory, sorted.
func (r *Registry) Names() ([]string, error) {
	if r.Dir == "" {
		return nil, nil
	}
	des, err := os.ReadDir(r.Dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		if _, err := r.path(de.Name()); err == nil {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// fingerprint identifies an adapter directory's contents cheaply: the
// identity, size and time of the directory and its files. Saving an
// adapter (which replaces its directory whole) changes it.
type fingerprint string

func fingerprintOf(dir string) fingerprint {
	var b strings.Builder
	for _, p := range []string{dir, filepath.Join(dir, adapter.ConfigFile), filepath.Join(dir, adapter.WeightsFile), filepath.Join(dir, adapter.InfoFile)} {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s|%d|%d|%v;", filepath.Base(p), fi.Size(), fi.ModTime().UnixNano(), inode(fi))
		} else {
			b.WriteString("-;")
		}
	}
	return fingerprint(b.String())
}

// Acquire returns the model of a name ("" or "base": the base's), loading
// it on first use; Release must follow. Errors wrap ErrNotFound or
// ErrWrongBase where those apply.
func (r *Registry) Acquire(name string) (*Model, error) {
	if name == "" || name == BaseName {
		r.base.hold()
		return r.base, nil
	}
	dir, err := r.path(name)
	if err != nil {
		// Its directory is gone: so is the adapter.
		r.mu.Lock()
		if e, ok := r.entries[name]; ok {
			r.removeLocked(e)
		}
		r.mu.Unlock()
		return nil, err
	}
	r.mu.Lock()
	if e, ok := r.entries[name]; ok {
		stale := false
		if time.Since(e.checked) >= r.CheckEvery {
			e.checked = time.Now()
			stale = fingerprintOf(dir) != e.print
		}
		if !stale {
			r.lru.MoveToFront(e.elem)
			e.model.hold()
			r.mu.Unlock()
			r.metrics.add(&r.metrics.cacheHits, 1)
			return e.model, nil
		}
	}
	r.mu.Unlock()
	r.metrics.add(&r.metrics.cacheMisses, 1)
	m, err := r.load(name, dir)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Release ends a use of a model from Acquire or Reload.
func (r *Registry) Release(m *Model) { m.release() }

// Reload (re)loads an adapter from its directory now; requests already
// holding the previous version finish with it.
func (r *Registry) Reload(name string) (*Model, error) {
	dir, err := r.path(name)
	if err != nil {
		return nil, err
	}
	return r.load(name, dir)
}

// load reads, binds and prepares an adapter and installs it in the cache,
// returning it held. Concurrent loads of one name share the work.
func (r *Registry) load(name, dir string) (*Model, error) {
	r.mu.Lock()
	if c, ok := r.loading[name]; ok {
		r.mu.Unlock()
		<-c.done
		if c.err != nil {
			return nil, c.err
		}
		// The loader installed it; take our own hold if it is still there.
		return r.holdInstalled(name, dir)
	}
	c := &loadCall{done: make(chan struct{})}
	r.loading[name] = c
	r.mu.Unlock()

	t0 := time.Now()
	c.print = fingerprintOf(dir)
	c.model, c.err = r.prepare(name, dir)
	r.metrics.observeLoad(time.Since(t0), c.err)

	r.mu.Lock()
	delete(r.loading, name)
	var m *Model
	if c.err == nil {
		m = c.model
		m.hold() // the cache's hold
		m.hold() // the caller's
		version := 1
		if old, ok := r.entries[name]; ok {
			version = old.version + 1
			r.removeLocked(old)
		}
		m.Version = version
		e := &entry{name: name, model: m, print: c.print, checked: time.Now(), loaded: time.Now(), version: version}
		e.elem = r.lru.PushFront(e)
		r.entries[name] = e
		r.bytes += m.Bytes
		r.evictLocked(e)
	}
	r.mu.Unlock()
	close(c.done)
	return m, c.err
}

// holdInstalled holds the model a concurrent load installed (or what
// replaced it since); if it was evicted meanwhile, it loads again.
func (r *Registry) holdInstalled(name, dir string) (*Model, error) {
	r.mu.Lock()
	if e, ok := r.entries[name]; ok {
		e.model.hold()
		r.mu.Unlock()
		return e.model, nil
	}
	r.mu.Unlock()
	return r.load(name, dir)
}

// prepare loads an adapter directory and readies it on the engine.
func (r *Registry) prepare(name, dir string) (*Model, error) {
	f, err := adapter.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("adapter %q: %w", name, err)
	}
	if _, err := f.CheckBase(r.engine.Base.SHA256, false); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrongBase, strings.Replace(err.Error(), "; pass --allow-base-mismatch to load it anyway", "", 1))
	}
	a, err := f.Bind(r.engine.Base.Net)
	if err != nil {
		return nil, fmt.Errorf("adapter %q: %w", name, err)
	}
	labels := a.Info.ClassNames
	if len(labels) != a.NumClasses() {
		labels = nil
	}
	return r.engine.Prepare(name, a, a.Info.Preprocess, labels)
}

// Unload drops an adapter from the cache (requests holding it finish with
// it); it tells whether it was loaded.
func (r *Registry) Unload(name string) (bool, error) {
	if _, err := r.path(name); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[name]
	if ok {
		r.removeLocked(e)
		r.metrics.add(&r.metrics.unloads, 1)
	}
	return ok, nil
}

// removeLocked takes an entry out of the cache and drops the cache's hold.
func (r *Registry) removeLocked(e *entry) {
	r.lru.Remove(e.elem)
	delete(r.entries, e.name)
	r.bytes -= e.model.Bytes
	e.model.retire()
}

// evictLocked evicts least recently used adapters, never keep, until the
// bounds hold.
func (r *Registry) evictLocked(keep *entry) {
	for r.lru.Len() > 1 && (r.lru.Len() > max(r.MaxAdapters, 1) || r.bytes > r.MaxBytes) {
		last := r.lru.Back().Value.(*entry)
		if last == keep {
			break
		}
		r.removeLocked(last)
		r.metrics.add(&r.metrics.evictions, 1)
	}
}

// Loaded reports the loaded adapters' names, with their versions (1 for
// the first load, one more per reload).
func (r *Registry) Loaded() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for n, e := range r.entries {
		out[n] = e.version
	}
	return out
}

// LoadedBytes is the memory the loaded adapters' tensors take.
func (r *Registry) LoadedBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Close drops every adapter from the cache.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		r.removeLocked(e)
	}
}

func (m *Model) hold() {
	m.h.mu.Lock()
	m.h.refs++
	m.h.mu.Unlock()
}

// release drops a hold; the last one of a retired model frees its graphs.
func (m *Model) release() {
	m.h.mu.Lock()
	m.h.refs--
	free := m.h.refs == 0 && m.h.retired
	m.h.mu.Unlock()
	if free {
		m.Close()
	}
}

// retire drops the cache's hold: the model frees its graphs when the last
// request using it is done.
func (m *Model) retire() {
	m.h.mu.Lock()
	m.h.retired = true
	m.h.mu.Unlock()
	m.release()
}
