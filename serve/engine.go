package serve

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/nn"
	"github.com/lorafit/lorafit/preprocess"
)

// DefaultBuckets are the batch sizes graphs are compiled for; a batch is
// padded up to the next one. Steps of about 1.5× waste at most a third of a
// batch to padding while keeping the number of compiled graphs small. There
// is no bucket below 4: on the Go backend a batch of 1 or 2 takes longer
// than a batch of 4 (the small-matrix matmul path), so padding to 4 is
// faster as well as fewer graphs.
var DefaultBuckets = []int{4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256}

// Engine runs batches that mix adapters on one base: the frozen network
// runs once for the whole batch, each sample gets its own adapter's LoRA
// deltas (gathered per sample, as Punica's SGMV does for LLMs) and its own
// fc and head. It is safe for concurrent use.
//
// The base's tensors are fed to the shared pass as parameters, never baked
// in as constants: its graphs are compiled per batch size and adapter mix,
// and each baked graph would hold a copy of the base. A model's tail (its
// fc and head, a few MB) is baked into one graph of its own, whose batch
// axis is dynamic, where the backend prefers constants.
type Engine struct {
	Base *backbone.Base

	backend   compute.Backend
	buckets   []int
	maxTrunks int
	fcStage   int // stages [0, fcStage) are the trunk: stem, blocks, pool
	trunkFeed *classifier.Feed
	modules   map[string]nn.Module
	order     map[string]int    // module name → position in the network
	bnOf      map[string]string // conv → the batch norm folded into it
	feedIndex map[string]int    // trunk feed key → position
	merge     bool
	shards    int        // parts a batch is split into, run at once (backend.Shards)
	matMu     sync.Mutex // serializes materialize

	mu       sync.Mutex // guards what follows
	trunks   map[string]*trunkExec
	tick     int64
	compiles int64
	closed   bool
}

// EngineOptions tune an Engine; the zero value is the defaults.
type EngineOptions struct {
	// Buckets are the batch sizes compiled (default DefaultBuckets, cut at
	// MaxBatch); a larger batch is padded to a multiple of the largest.
	Buckets []int
	// MaxBatch is the largest batch Run is given (default 64).
	MaxBatch int
	// MaxTrunkGraphs bounds the trunk executables kept, one per set of LoRA
	// target modules seen in a batch (default 16); the least recently used
	// is dropped.
	MaxTrunkGraphs int
	// NoMerge turns off the merged path: without it, a batch whose samples
	// all use one adapter runs the plain trunk on that adapter's merged
	// weights (W + scaling·B·A, precomputed when it is prepared), at the
	// speed of a merged model.
	NoMerge bool
}

// NewEngine prepares base for serving on backend b.
func NewEngine(b compute.Backend, base *backbone.Base, opts EngineOptions) *Engine {
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 {
		maxBatch = 64
	}
	buckets := opts.Buckets
	if len(buckets) == 0 {
		buckets = DefaultBuckets
	}
	var bs []int
	for _, n := range buckets {
		if n > 0 && n < maxBatch {
			bs = append(bs, n)
		}
	}
	bs = append(bs, maxBatch)
	slices.Sort(bs)
	bs = slices.Compact(bs)
	e := &Engine{
		Base: base, backend: b, buckets: bs, maxTrunks: opts.MaxTrunkGraphs,
		fcStage: base.Net.StageOf("fc"), modules: map[string]nn.Module{}, order: map[string]int{},
		bnOf: map[string]string{}, feedIndex: map[string]int{}, merge: !opts.NoMerge,
		trunks: map[string]*trunkExec{}, shards: backend.Shards(b),
	}
	for _, pair := range base.Net.ConvBNs() {
		e.bnOf[pair.Conv.Name] = pair.BN
	}
	if e.maxTrunks <= 0 {
		e.maxTrunks = 16
	}
	for i, m := range base.Net.Modules() {
		e.modules[m.Name], e.order[m.Name] = m, i
	}
	// The trunk reads every base tensor but fc's, with conv and batch-norm
	// pairs folded (as classifier.Predictor reads them).
	e.trunkFeed = &classifier.Feed{}
	all := classifier.BaseFeed(base, nil)
	for i, k := range all.Keys {
		if !strings.HasPrefix(k, "fc.") {
			e.feedIndex[k] = len(e.trunkFeed.Keys)
			e.trunkFeed.Add(k, all.Values[i])
		}
	}
	return e
}

// Bucket is the batch size a batch of n runs as.
func (e *Engine) Bucket(n int) int {
	for _, b := range e.buckets {
		if b >= n {
			return b
		}
	}
	top := e.buckets[len(e.buckets)-1]
	return (n + top - 1) / top * top
}

// Model is an adapter prepared for serving, or the base's own classes (a
// nil Adapter). It is immutable once prepared; Close releases its graphs.
type Model struct {
	Name    string
	Adapter *adapter.Adapter
	Pre     preprocess.Preprocess
	Labels  []string
	// Shared tells whether the model runs on the shared trunk: it saves no
	// module before fc. Adapters that save a conv or batch norm inside the
	// network run alone, their samples as a sub-batch through the whole
	// network.
	Shared bool
	// Bytes is the memory its tensors take.
	Bytes int64
	// Version counts the loads of its adapter directory (1 for the first;
	// 0 for the base), set by the Registry.
	Version int

	engine    *Engine
	h         held
	loras     []trunkLoRA // LoRA targets in the trunk, in network order
	merged    []any       // the trunk's arguments with loras merged in (nil: not mergeable)
	tail      *Exec       // fc (its LoRA) and the head, on pooled features
	bakeTail  bool        // the tail's tensors are constants of its graph
	collapsed bool        // fc is multiplied into the head's first layer (collapseTail)
	full      *Exec       // the whole network, for a model that is not Shared
	feed      *classifier.Feed
}

// trunkLoRA is one LoRA target of the trunk, laid out for concatenation
// with other adapters': A as rows of r (graph layout [K·K·C, r]) and B
// dense [r, O] with the scaling folded in (a grouped conv's B expanded to
// zeros outside each group).
type trunkLoRA struct {
	module nn.Module
	rank   int
	a, b   []float32
}

// NumClasses is the width of the model's logits.
func (m *Model) NumClasses() int {
	if m.Adapter != nil {
		return m.Adapter.NumClasses()
	}
	return m.engine.Base.Net.NumClasses()
}

// Prepare readies a (nil: the base alone) for serving under name.
func (e *Engine) Prepare(name string, a *adapter.Adapter, pre preprocess.Preprocess, labels []string) (*Model, error) {
	if err := pre.Validate(); err != nil {
		return nil, fmt.Errorf("%s: preprocessing: %w", name, err)
	}
	if a != nil && a.Net() != e.Base.Net {
		return nil, fmt.Errorf("%s: the adapter was bound to another network", name)
	}
	m := &Model{Name: name, Adapter: a, Pre: pre, Labels: labels, engine: e, Shared: true}
	if a != nil {
		for _, en := range a.Entries() {
			n := 1
			for _, d := range en.Shape {
				n *= d
			}
			m.Bytes += 4 * int64(n)
			if en.Kind != "lora" && e.inTrunk(en.Module) {
				m.Shared = false
			}
		}
	}
	if !m.Shared {
		m.feed = classifier.BaseFeed(e.Base, a)
		own := classifier.AdapterFeed(a, nil)
		m.feed.Keys = append(m.feed.Keys, own.Keys...)
		m.feed.Values = append(m.feed.Values, own.Values...)
		exec, err := NewExec(e.backend, func(inputs []*Node) *Node {
			w := nn.Weights{}
			m.feed.Bind(inputs[1:], w)
			f := &classifier.Forward{Net: e.Base.Net, Adapter: a, Weights: w}
			return f.Logits(inputs[0], 0)
		})
		if err != nil {
			return nil, err
		}
		m.full = exec.SetMaxCache(-1).WithName("serve-" + name)
		if err := e.materialize(m.feed.Values); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return m, nil
	}
	if a != nil {
		for _, t := range a.Targets {
			if !e.inTrunk(t.Module.Name) {
				continue
			}
			if t.Module.Type != nn.Conv2d {
				return nil, fmt.Errorf("%s: LoRA target %s: only convs are adapted before fc", name, t.Module.Name)
			}
			m.loras = append(m.loras, layoutLoRA(a, t.Module, t.R, t.Scaling))
			m.Bytes += 4 * int64(len(m.loras[len(m.loras)-1].a)+len(m.loras[len(m.loras)-1].b))
		}
		slices.SortFunc(m.loras, func(x, y trunkLoRA) int { return e.order[x.module.Name] - e.order[y.module.Name] })
		if e.merge && len(m.loras) > 0 {
			m.merged = e.mergeTrunk(m)
			for i, v := range m.merged {
				if v != e.trunkFeed.Values[i] {
					m.Bytes += 4 * int64(v.(*tensors.Tensor).Size())
				}
			}
		}
	}
	// The tail reads the base's fc unless the adapter has its own, and the
	// adapter's fc, head and fc LoRA tensors.
	m.feed = &classifier.Feed{}
	own := map[string]bool{}
	if a != nil {
		for _, en := range a.Entries() {
			if !e.inTrunk(en.Module) {
				m.feed.Add(en.Key, a.Tensor(en.Key))
				if en.Kind != "lora" {
					own[en.Module] = true
				}
			}
		}
	}
	if !own["fc"] {
		for _, k := range []string{"fc.weight", "fc.bias"} {
			m.feed.Add(k, e.Base.Tensor(k))
		}
	}
	if a != nil && len(a.Head) > 0 {
		feed, ok, err := e.collapseTail(a, m.feed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if ok {
			m.feed, m.collapsed = feed, true
		}
	}
	// On a backend that prefers constants (the Go backend then packs each
	// weight matrix once, not on every call), the tail's tensors are baked
	// into one graph per model whose batch axis is dynamic: a copy of the
	// model's fc and head, not one per batch size. Otherwise they are fed.
	m.bakeTail = classifier.BakeBase(e.backend)
	exec, err := NewExec(e.backend, func(inputs []*Node) *Node {
		w := nn.Weights{}
		if m.bakeTail {
			m.feed.Consts(inputs[0].Graph(), w)
		} else {
			m.feed.Bind(inputs[1:], w)
		}
		if m.collapsed {
			y := nn.Dense(inputs[0], w.Get(collapsedKey+".weight"), w.Get(collapsedKey+".bias"))
			for _, h := range a.Head[1:] {
				y = nn.Dense(nn.ReLU(y), w.Get(h.Name+".weight"), w.Get(h.Name+".bias"))
			}
			return y
		}
		f := &classifier.Forward{Net: e.Base.Net, Adapter: a, Weights: w}
		return f.Logits(inputs[0], e.fcStage)
	})
	if err != nil {
		return nil, err
	}
	m.tail = exec.SetMaxCache(-1).WithName("serve-tail-" + name)
	if m.bakeTail {
		m.tail = m.tail.WithDynamicAxes([]string{"batch", ""})
		for _, v := range m.feed.Values {
			m.Bytes += 2 * 4 * int64(v.Size()) // the constants and their packed copy
		}
	}
	fed := slices.Clone(e.trunkFeed.Values)
	for _, v := range m.merged {
		fed = append(fed, v.(*tensors.Tensor))
	}
	if !m.bakeTail {
		fed = append(fed, m.feed.Values...)
	}
	if err := e.materialize(fed); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// materialize moves tensors a model's passes read onto the device before
// Run's parts, at once, read them (see classifier.Materialize): once every
// model is prepared, no execution moves a tensor another one reads.
func (e *Engine) materialize(ts []*tensors.Tensor) error {
	e.matMu.Lock()
	defer e.matMu.Unlock()
	return classifier.Materialize(e.backend, ts)
}

// collapsedKey names fc and the head's first layer multiplied into one.
const collapsedKey = "fc·head.0"

// collapseTail multiplies fc (with its LoRA, if it has one) into the
// head's first Linear when that makes the tail smaller: no nonlinearity
// comes between them, so x·W_fc·W_0 + (b_fc·W_0 + b_0) is the same map
// (up to the order of float additions). For case 2 (fc 2048→1000, then
// 1000→512) the tail's weights shrink from 10.5 MB to 4.7 MB — and the
// tail reads all of its weights once per batch, whatever its rows.
func (e *Engine) collapseTail(a *adapter.Adapter, feed *classifier.Feed) (*classifier.Feed, bool, error) {
	h0 := a.Head[0]
	in, mid := e.Base.Net.FeatureDim(), h0.In
	if in*h0.Out >= in*mid+mid*h0.Out {
		return nil, false, nil
	}
	get := map[string]*tensors.Tensor{}
	for i, k := range feed.Keys {
		get[k] = feed.Values[i]
	}
	args := []any{get["fc.weight"], get["fc.bias"], get[h0.Name+".weight"], get[h0.Name+".bias"]}
	t, lora := target(a, "fc")
	if lora {
		args = append(args, get["fc.lora_A.weight"], get["fc.lora_B.weight"])
	}
	// Weights are [out,in]: W = W₀·W_fc, b = W₀·b_fc + b₀.
	exec, err := NewExec(e.backend, func(x []*Node) []*Node {
		w := x[0]
		if lora {
			w = Add(w, MulScalar(MatMul(x[5], x[4]), t.Scaling)) // B·A
		}
		bias := Add(Reshape(MatMul(x[2], Reshape(x[1], mid, 1)), h0.Out), x[3])
		return []*Node{MatMul(x[2], w), bias}
	})
	if err != nil {
		return nil, false, err
	}
	defer exec.Finalize()
	out, err := exec.Call(args...)
	if err != nil {
		return nil, false, err
	}
	c := &classifier.Feed{}
	c.Add(collapsedKey+".weight", out[0])
	c.Add(collapsedKey+".bias", out[1])
	for _, h := range a.Head[1:] {
		c.Add(h.Name+".weight", get[h.Name+".weight"])
		c.Add(h.Name+".bias", get[h.Name+".bias"])
	}
	return c, true, nil
}

func target(a *adapter.Adapter, module string) (lora.Target, bool) {
	for _, t := range a.Targets {
		if t.Module.Name == module {
			return t, true
		}
	}
	return lora.Target{}, false
}

// inTrunk tells whether a module runs before fc (a head's modules, which
// the network does not know, run after).
func (e *Engine) inTrunk(module string) bool {
	s := e.Base.Net.StageOf(module)
	return s >= 0 && s < e.fcStage
}

// layoutLoRA lays out a conv target's tensors for concatenation.
func layoutLoRA(a *adapter.Adapter, m nn.Module, r int, scaling float64) trunkLoRA {
	av := tensors.MustCopyFlatData[float32](a.Tensor(m.Name + ".lora_A.weight")) // [K·K·C, r]
	bv := tensors.MustCopyFlatData[float32](a.Tensor(m.Name + ".lora_B.weight")) // [r/g, O]
	o, g := m.Out, m.NumGroups()
	rg, og := r/g, o/g
	dense := make([]float32, r*o)
	for k := range rg {
		for c := range o {
			gi := c / og
			dense[(gi*rg+k)*o+c] = float32(float64(bv[k*o+c]) * scaling)
		}
	}
	return trunkLoRA{module: m, rank: r, a: av, b: dense}
}

// mergeTrunk returns the trunk's arguments with m's LoRA folded into the
// conv weights: W' = W + s·(A·B) per output channel o, where A·B is
// scaling·B·A in graph layout and s the batch norm's scale already folded
// into W (the delta the hook adds is scaled the same way). A grouped conv's
// update mixes every input channel and cannot be folded into its grouped
// weight: then nil, and m always takes the mixed path.
func (e *Engine) mergeTrunk(m *Model) []any {
	args := e.trunkFeed.Args()
	for _, l := range m.loras {
		if l.module.NumGroups() > 1 {
			return nil
		}
		key := l.module.Name + ".weight"
		var scale []float32
		if bn, ok := e.bnOf[l.module.Name]; ok {
			if _, folded := e.feedIndex[l.module.Name+backbone.FoldedWeight]; folded {
				key = l.module.Name + backbone.FoldedWeight
				scale = tensors.MustCopyFlatData[float32](e.Base.Folded()[bn+backbone.FoldedScale])
			}
		}
		i, ok := e.feedIndex[key]
		if !ok {
			return nil
		}
		w := e.trunkFeed.Values[i]
		v := tensors.MustCopyFlatData[float32](w) // [K·K·C, O]
		o, r := l.module.Out, l.rank
		for row := range len(v) / o {
			a := l.a[row*r : (row+1)*r]
			dst := v[row*o : (row+1)*o]
			for c := range o {
				var d float64
				for k, av := range a {
					d += float64(av) * float64(l.b[k*o+c])
				}
				if scale != nil {
					d *= float64(scale[c])
				}
				dst[c] += float32(d)
			}
		}
		args[i] = tensors.FromFlatDataAndDimensions(v, w.Shape().Dimensions...)
	}
	return args
}

// Close releases the model's compiled graphs. It must not be running.
func (m *Model) Close() {
	for _, x := range []*Exec{m.tail, m.full} {
		if x != nil {
			x.Finalize()
		}
	}
}

// Item is one image for a model: 3·S·S floats (CHW, preprocessed with the
// model's Pre, S its crop size).
type Item struct {
	Model *Model
	X     []float32
}

// Stats describe one Run. A batch runs as parts at once, one per core: the
// counts add up over its parts, the times are the longest part's.
type Stats struct {
	Images   int           // samples given
	Padded   int           // samples run, padding included
	Adapters int           // distinct models
	Trunks   int           // shared-trunk passes (per input size, one per part)
	Merged   int           // of which on one adapter's merged weights
	Solo     int           // sub-batches of models that cannot share the trunk
	Trunk    time.Duration // time in trunk passes
	Tails    time.Duration // time in per-model tails and solo passes
}

// add counts a part's passes in st; parts run at once, so the times are
// the longest part's.
func (st *Stats) add(p Stats) {
	st.Padded += p.Padded
	st.Trunks += p.Trunks
	st.Merged += p.Merged
	st.Solo += p.Solo
	st.Trunk = max(st.Trunk, p.Trunk)
	st.Tails = max(st.Tails, p.Tails)
}

// minPart is the fewest images a part of a shared pass has: the smallest
// bucket, below which a second execution costs more than it saves.
const minPart = 4

// Run computes the logits of every item, in order. The shared pass of each
// input size is split into parts, at most one per core (backend.Shards),
// that run at once with models that cannot share the trunk: one execution
// of the Go backend keeps one core busy.
func (e *Engine) Run(items []Item) ([][]float32, Stats, error) {
	st := Stats{Images: len(items)}
	out := make([][]float32, len(items))
	bySize := map[int][]int{}
	var sizes []int
	solo := map[*Model][]int{}
	var soloOrder []*Model
	seen := map[*Model]bool{}
	for i, it := range items {
		m := it.Model
		if len(it.X) != 3*m.Pre.Crop*m.Pre.Crop {
			return nil, st, fmt.Errorf("serve: item %d has %d values, want 3×%d×%d", i, len(it.X), m.Pre.Crop, m.Pre.Crop)
		}
		if !seen[m] {
			seen[m] = true
			st.Adapters++
		}
		if !m.Shared {
			if solo[m] == nil {
				soloOrder = append(soloOrder, m)
			}
			solo[m] = append(solo[m], i)
			continue
		}
		s := m.Pre.Crop
		if bySize[s] == nil {
			sizes = append(sizes, s)
		}
		bySize[s] = append(bySize[s], i)
	}
	var tasks []func(*Stats) error
	for _, s := range sizes {
		for _, idx := range splitParts(bySize[s], e.shards) {
			tasks = append(tasks, func(pst *Stats) error { return e.runShared(items, idx, s, out, pst) })
		}
	}
	for _, m := range soloOrder {
		tasks = append(tasks, func(pst *Stats) error { return e.runSolo(m, items, solo[m], out, pst) })
	}
	if err := e.runAtOnce(tasks, &st); err != nil {
		return nil, st, err
	}
	return out, st, nil
}

// splitParts cuts idx into at most shards contiguous parts of at least
// minPart images each, their sizes as equal as they can be.
func splitParts(idx []int, shards int) [][]int {
	n := max(1, min(shards, len(idx)/minPart))
	parts := make([][]int, 0, n)
	for i := range n {
		parts = append(parts, idx[i*len(idx)/n:(i+1)*len(idx)/n])
	}
	return parts
}

// runAtOnce runs the tasks, at most e.shards at a time, adding their
// stats to st; the first error (in task order) is returned.
func (e *Engine) runAtOnce(tasks []func(*Stats) error, st *Stats) error {
	parts := make([]Stats, len(tasks))
	if err := backend.AtOnce(len(tasks), e.shards, func(i int) error { return tasks[i](&parts[i]) }); err != nil {
		return err
	}
	for _, p := range parts {
		st.add(p)
	}
	return nil
}

// runSolo runs the items idx of a model that cannot share the trunk as one
// sub-batch through the whole network.
func (e *Engine) runSolo(m *Model, items []Item, idx []int, out [][]float32, st *Stats) error {
	t0 := time.Now()
	n := e.Bucket(len(idx))
	s := m.Pre.Crop
	x := make([]float32, n*3*s*s)
	for r, i := range idx {
		copy(x[r*3*s*s:], items[i].X)
	}
	args := append([]any{tensors.FromFlatDataAndDimensions(x, n, 3, s, s)}, m.feed.Args()...)
	logits, err := callFlat(m.full, args)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	c := m.NumClasses()
	for r, i := range idx {
		out[i] = logits[r*c : (r+1)*c]
	}
	st.Solo++
	st.Padded += n
	st.Tails += time.Since(t0)
	return nil
}

// runShared runs the items idx, all of input size s, through one trunk
// pass, then each model's tail on its rows.
func (e *Engine) runShared(items []Item, idx []int, s int, out [][]float32, st *Stats) error {
	t0 := time.Now()
	n := e.Bucket(len(idx))
	// Slots: the distinct models with LoRA in the trunk, in order of first
	// appearance; their count is rounded up to a power of two (at least
	// minSlots), and each module's rank to one, so that a few graphs serve
	// every mix.
	slot := map[*Model]int{}
	var slotted []*Model
	for _, i := range idx {
		if m := items[i].Model; len(m.loras) > 0 {
			if _, ok := slot[m]; !ok {
				slot[m] = len(slotted)
				slotted = append(slotted, m)
			}
		}
	}
	merged := false
	if len(slotted) == 1 && slotted[0].merged != nil {
		merged = true
		for _, i := range idx {
			merged = merged && items[i].Model == slotted[0]
		}
	}
	if merged {
		// One adapter alone: the plain trunk on its merged weights.
		slotted = nil
	}
	numSlots := 0
	if len(slotted) > 0 {
		numSlots = max(minSlots, pow2(len(slotted)))
	}
	rankOf := map[string]int{}
	var modules []nn.Module
	for _, m := range slotted {
		for _, l := range m.loras {
			if _, ok := rankOf[l.module.Name]; !ok {
				modules = append(modules, l.module)
			}
			rankOf[l.module.Name] = max(rankOf[l.module.Name], pow2(l.rank))
		}
	}
	slices.SortFunc(modules, func(x, y nn.Module) int { return e.order[x.Name] - e.order[y.Name] })

	x := make([]float32, n*3*s*s)
	for r, i := range idx {
		copy(x[r*3*s*s:], items[i].X)
	}
	args := []any{tensors.FromFlatDataAndDimensions(x, n, 3, s, s)}
	if len(modules) > 0 {
		onehot := make([]float32, n*numSlots)
		for r, i := range idx {
			if k, ok := slot[items[i].Model]; ok {
				onehot[r*numSlots+k] = 1
			}
		}
		args = append(args, tensors.FromFlatDataAndDimensions(onehot, n, numSlots))
		for _, mod := range modules {
			a, b := concatLoRA(mod, rankOf[mod.Name], numSlots, slotted)
			args = append(args, a, b)
		}
	}
	if merged {
		args = append(args, items[idx[0]].Model.merged...)
		st.Merged++
	} else {
		args = append(args, e.trunkFeed.Args()...)
	}
	family := fmt.Sprint(s, numSlots, rankOf)
	trunk, err := e.acquireTrunk(modules, fmt.Sprint(n, family))
	if err != nil {
		return err
	}
	if e.newFamily(trunk, family) {
		// The first batch of this mix: compile the other batch sizes in
		// the background, so later batches of the mix do not wait.
		go e.compileFamily(trunk, family, shapesOf(args), len(modules) > 0)
	}
	pooled, err := callFlat(trunk.exec, args)
	e.releaseTrunk(trunk)
	if err != nil {
		return fmt.Errorf("serve: shared pass: %w", err)
	}
	st.Trunks++
	st.Padded += n
	t1 := time.Now()
	st.Trunk += t1.Sub(t0)

	// Each model's tail on its rows of the pooled features.
	f := e.Base.Net.FeatureDim()
	rows := map[*Model][]int{} // positions in idx
	var order []*Model
	for r, i := range idx {
		m := items[i].Model
		if rows[m] == nil {
			order = append(order, m)
		}
		rows[m] = append(rows[m], r)
	}
	for _, m := range order {
		rs := rows[m]
		// The baked tail's batch axis is dynamic, but fewer than 4 rows
		// take the backend's small-matrix path, ~15× slower than 4 rows:
		// pad to 4.
		k := max(len(rs), minTailRows)
		if !m.bakeTail {
			k = e.Bucket(len(rs))
		}
		feat := make([]float32, k*f)
		for j, r := range rs {
			copy(feat[j*f:(j+1)*f], pooled[r*f:(r+1)*f])
		}
		targs := []any{tensors.FromFlatDataAndDimensions(feat, k, f)}
		if !m.bakeTail {
			targs = append(targs, m.feed.Args()...)
		}
		logits, err := callFlat(m.tail, targs)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		c := m.NumClasses()
		for j, r := range rs {
			out[idx[r]] = logits[j*c : (j+1)*c]
		}
	}
	st.Tails += time.Since(t1)
	return nil
}

// Warm compiles the plain trunk (the base alone, or one adapter on its
// merged weights) for every batch size at input size s, so that the first
// requests do not wait for compilation.
func (e *Engine) Warm(ctx context.Context, s int) error {
	family := fmt.Sprint(s, 0, map[string]int{})
	in := []shapes.Shape{shapes.Make(dtypes.Float32, e.buckets[0], 3, s, s)}
	for _, v := range e.trunkFeed.Values {
		in = append(in, v.Shape())
	}
	t, err := e.acquireTrunk(nil, "")
	if err != nil {
		return err
	}
	e.newFamily(t, family)
	return e.compileFamily(t, family, in, false)
}

// newFamily tells whether a trunk executable meets a mix (input size, slot
// count, ranks) for the first time, and takes a hold on it for
// compileFamily if so.
func (e *Engine) newFamily(t *trunkExec, family string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t.families[family] {
		return false
	}
	t.families[family] = true
	t.refs++
	return true
}

// compileFamily compiles a trunk's graphs of one mix for every batch size
// not compiled yet, then drops the hold newFamily took. in are the shapes
// of one call's arguments; the batch axis of the images (and of the slots,
// if slotted) is replaced by each bucket.
func (e *Engine) compileFamily(t *trunkExec, family string, in []shapes.Shape, slotted bool) error {
	defer e.releaseTrunk(t)
	for _, n := range e.buckets {
		e.mu.Lock()
		skip := e.closed || t.evicted || t.shapes[fmt.Sprint(n, family)] || len(t.shapes) >= maxShapesPerTrunk
		if !skip {
			t.shapes[fmt.Sprint(n, family)] = true
			e.compiles++
		}
		e.mu.Unlock()
		if skip {
			continue
		}
		shp := slices.Clone(in)
		shp[0] = withBatch(shp[0], n)
		if slotted {
			shp[1] = withBatch(shp[1], n)
		}
		if _, err := t.exec.Compile(shp...); err != nil {
			return err
		}
	}
	return nil
}

func withBatch(s shapes.Shape, n int) shapes.Shape {
	d := slices.Clone(s.Dimensions)
	d[0] = n
	return shapes.Make(s.DType, d...)
}

func shapesOf(args []any) []shapes.Shape {
	out := make([]shapes.Shape, len(args))
	for i, a := range args {
		out[i] = a.(*tensors.Tensor).Shape()
	}
	return out
}

// concatLoRA lays the slotted models' A and B for one module side by side
// along the rank axis: slot k's ranks are columns [k·R, k·R+r) of A
// [K·K·C, S·R] (graph layout) and rows of B [S·R, O]; a model without this target, a
// smaller rank and an empty slot leave zeros.
func concatLoRA(mod nn.Module, rank, numSlots int, slotted []*Model) (a, b *tensors.Tensor) {
	k, c, o := mod.Kernel, mod.In, mod.Out
	rows := k * k * c
	width := numSlots * rank
	av := make([]float32, rows*width)
	bv := make([]float32, width*o)
	for s, m := range slotted {
		for _, l := range m.loras {
			if l.module.Name != mod.Name {
				continue
			}
			r := l.rank
			for i := range rows {
				copy(av[i*width+s*rank:i*width+s*rank+r], l.a[i*r:(i+1)*r])
			}
			copy(bv[s*rank*o:], l.b)
		}
	}
	return tensors.FromFlatDataAndDimensions(av, rows, width), tensors.FromFlatDataAndDimensions(bv, width, o)
}

// pow2 is the smallest power of two ≥ n (0 for 0).
func pow2(n int) int {
	if n <= 0 {
		return 0
	}
	p := 1
	for p < n {
		p *= 2
	}
	return p
}

// callFlat runs an executable and returns its one output's values.
func callFlat(x *Exec, args []any) ([]float32, error) {
	out, err := x.Call(args...)
	if err != nil {
		return nil, err
	}
	v := tensors.MustCopyFlatData[float32](out[0])
	for _, t := range out {
		t.FinalizeAll()
	}
	return v, nil
}

// trunkExec is the shared pass for one set of LoRA target modules; its
// graphs are compiled per batch size, input size, slot count and ranks.
type trunkExec struct {
	exec     *Exec
	used     int64
	refs     int
	evicted  bool
	shapes   map[string]bool // graph signatures compiled (batch size, mix)
	families map[string]bool // mixes met (input size, slots, ranks)
}

// minTailRows is the fewest rows a tail runs on (see runShared).
const minTailRows = 4

// minSlots is the fewest adapter slots a mixed pass has: a few mostly
// empty slots cost little (the LoRA convs are ~3% of the pass at 8 slots of
// rank 8), while every distinct slot count is another graph to compile.
const minSlots = 8

// maxShapesPerTrunk bounds the graphs one trunk executable compiles
// (bucket × input size × slots × ranks); past it the executable is
// replaced, which frees its graphs.
const maxShapesPerTrunk = 96

// acquireTrunk returns the shared pass for a set of LoRA targets (in
// network order), creating it on first use; releaseTrunk must follow.
func (e *Engine) acquireTrunk(modules []nn.Module, signature string) (*trunkExec, error) {
	names := make([]string, len(modules))
	for i, m := range modules {
		names[i] = m.Name
	}
	key := strings.Join(names, ",")
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("serve: engine closed")
	}
	e.tick++
	t, ok := e.trunks[key]
	if ok && signature != "" && !t.shapes[signature] && len(t.shapes) >= maxShapesPerTrunk {
		e.evictLocked(key)
		ok = false
	}
	if !ok {
		for len(e.trunks) >= e.maxTrunks {
			var oldest string
			for k, t := range e.trunks {
				if oldest == "" || t.used < e.trunks[oldest].used {
					oldest = k
				}
			}
			e.evictLocked(oldest)
		}
		mods := slices.Clone(modules)
		exec, err := NewExec(e.backend, func(inputs []*Node) *Node {
			return e.trunkGraph(mods, inputs)
		})
		if err != nil {
			return nil, err
		}
		t = &trunkExec{exec: exec.SetMaxCache(-1).WithName("serve-trunk"), shapes: map[string]bool{}, families: map[string]bool{}}
		e.trunks[key] = t
	}
	if signature != "" && !t.shapes[signature] {
		t.shapes[signature] = true
		e.compiles++
	}
	t.used = e.tick
	t.refs++
	return t, nil
}

func (e *Engine) releaseTrunk(t *trunkExec) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.refs--
	if t.evicted && t.refs == 0 {
		t.exec.Finalize()
	}
}

// evictLocked drops a trunk executable; its graphs are freed once no pass
// runs them.
func (e *Engine) evictLocked(key string) {
	t := e.trunks[key]
	delete(e.trunks, key)
	t.evicted = true
	if t.refs == 0 {
		t.exec.Finalize()
	}
}

// Compiles counts the shared-pass graphs compiled so far.
func (e *Engine) Compiles() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.compiles
}

// trunkGraph is the shared pass: inputs are images [N,3,S,S], then, if
// there are LoRA targets, the slot of each sample one-hot [N, slots] and
// each target's concatenated A and B, then the base's tensors.
func (e *Engine) trunkGraph(modules []nn.Module, inputs []*Node) *Node {
	x, rest := inputs[0], inputs[1:]
	loraA, loraB := map[string]*Node{}, map[string]*Node{}
	var onehot *Node
	if len(modules) > 0 {
		onehot, rest = rest[0], rest[1:]
		for _, m := range modules {
			loraA[m.Name], loraB[m.Name], rest = rest[0], rest[1], rest[2:]
		}
	}
	w := nn.Weights{}
	e.trunkFeed.Bind(rest, w)
	p := &backbone.Pass{Weights: w}
	if len(modules) > 0 {
		p.Hook = func(m nn.Module, xin *Node) *Node {
			a, ok := loraA[m.Name]
			if !ok {
				return nil
			}
			return mixedDelta(xin, a, loraB[m.Name], onehot, m)
		}
	}
	return e.Base.Net.Forward(x, p, 0, e.fcStage)
}

// mixedDelta is every sample's own LoRA delta on a conv: h = conv(x, A_all)
// for all slots at once (cost ∝ the batch's total rank), masked so each
// sample keeps its own slot's ranks, times B_all. For sample i in slot k it
// is exactly Σ_{t<r_k} h_{k·R+t}·B_{k·R+t} = scaling_k·B_k(A_k(x_i)), what
// lora.ConvDelta computes for that adapter alone; other slots contribute
// exact zeros.
func mixedDelta(x, a, b, onehot *Node, m nn.Module) *Node {
	h := nn.Conv2D(x, a, m.Kernel, m.Stride, m.Padding, 1)
	d := h.Shape().Dimensions
	n, width := d[0], d[3]
	slots := onehot.Shape().Dimensions[1]
	rank := width / slots
	mask := Reshape(BroadcastToDims(Reshape(onehot, n, slots, 1), n, slots, rank), n, 1, 1, width)
	h = Mul(h, BroadcastToDims(mask, d...))
	y := MatMul(Reshape(h, n*d[1]*d[2], width), b)
	return Reshape(y, n, d[1], d[2], b.Shape().Dimensions[1])
}

// Close releases the trunk graphs once no pass runs them; Run fails
// afterwards.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.trunks {
		e.evictLocked(k)
	}
	e.closed = true
}
