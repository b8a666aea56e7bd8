package backbone

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/internal/digest"
	"github.com/lorafit/lorafit/nn"
)

// Base is a network with its pretrained weights: the frozen model adapters
// sit on. Its tensors are kept in graph layout (see nn.Layout) and are never
// changed once loaded: one Base serves any number of adapters, in training
// and in inference, at the same time.
type Base struct {
	Net Network
	// Source names where the weights came from, for messages.
	Source string
	// SHA256 identifies the weights (the file's digest, or a digest of the
	// tensors for weights that never were a file): adapters bind to it.
	SHA256 string

	tensors map[string]*tensors.Tensor

	foldOnce sync.Once
	folded   map[string]*tensors.Tensor
}

// Keys of the folded form of a conv and its frozen batch norm: the conv's
// weight times the batch norm's scale γ/√(var+ε) per output channel, and
// the shift β − mean·scale (on the batch norm's name, with the scale, which
// a LoRA delta on the conv needs).
const (
	FoldedWeight = ".folded_weight"
	FoldedScale  = ".folded_scale"
	FoldedShift  = ".folded_shift"
)

// Folded returns the base's conv and batch-norm pairs folded (see
// FoldedWeight), computed once: inference and training with a frozen batch
// norm then run one conv and one add instead of a conv and four
// elementwise ops, with the same results up to float rounding.
func (b *Base) Folded() map[string]*tensors.Tensor {
	b.foldOnce.Do(func() {
		b.folded = map[string]*tensors.Tensor{}
		for _, pair := range b.Net.ConvBNs() {
			gamma := tensors.MustCopyFlatData[float32](b.tensors[pair.BN+".weight"])
			beta := tensors.MustCopyFlatData[float32](b.tensors[pair.BN+".bias"])
			mean := tensors.MustCopyFlatData[float32](b.tensors[pair.BN+".running_mean"])
			variance := tensors.MustCopyFlatData[float32](b.tensors[pair.BN+".running_var"])
			scale, shift := make([]float32, len(gamma)), make([]float32, len(gamma))
			for c := range gamma {
				s := float64(gamma[c]) / math.Sqrt(float64(variance[c])+BNEps)
				scale[c], shift[c] = float32(s), float32(float64(beta[c])-float64(mean[c])*s)
			}
			w := b.tensors[pair.Conv.Name+".weight"]
			vals := tensors.MustCopyFlatData[float32](w) // [KH,KW,C/g,O]: O is the last axis
			for i := range vals {
				vals[i] *= scale[i%len(scale)]
			}
			b.folded[pair.Conv.Name+FoldedWeight] = tensors.FromFlatDataAndDimensions(vals, w.Shape().Dimensions...)
			b.folded[pair.BN+FoldedScale] = tensors.FromFlatDataAndDimensions(scale, len(scale))
			b.folded[pair.BN+FoldedShift] = tensors.FromFlatDataAndDimensions(shift, len(shift))
		}
	})
	return b.folded
}

// Load checks sd against net's state_dict entries and converts it to graph
// layout. Every problem is reported at once: a missing key, an unexpected
// key and a shape mismatch each name the key.
func Load(net Network, sd *checkpoint.StateDict, source, sha string) (*Base, error) {
	want := net.Params()
	keys := make([]string, len(want))
	shapes := make([][]int, len(want))
	for i, p := range want {
		keys[i], shapes[i] = p.Name, p.Shape
	}
	if problems := Mismatches(sd, keys, shapes); len(problems) > 0 {
		return nil, fmt.Errorf("%s: does not fit %s: %s", source, net.Describe(), Summarize(problems, 8))
	}
	// Converting ResNet-50's 25M values to graph layout is a third of a
	// second on one core, on the way to every verb's first output: the
	// tensors convert independently, one at a time per core.
	converted := make([]*tensors.Tensor, len(want))
	err := backend.AtOnce(len(want), runtime.GOMAXPROCS(0), func(i int) (err error) {
		if converted[i], err = ToGraph(sd.Get(want[i].Name), want[i].Kind.Layout()); err != nil {
			return fmt.Errorf("%s: key %q: %w", source, want[i].Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b := &Base{Net: net, Source: source, SHA256: sha, tensors: make(map[string]*tensors.Tensor, len(want))}
	for i, p := range want {
		b.tensors[p.Name] = converted[i]
	}
	return b, nil
}

// Tensor returns an entry in graph layout (nil if the network has no such
// key). Callers must not modify it.
func (b *Base) Tensor(key string) *tensors.Tensor { return b.tensors[key] }

// StateDict exports the weights in PyTorch layout under torchvision's keys,
// in torchvision's order: what `torch.load` + `load_state_dict` expect.
func (b *Base) StateDict() *checkpoint.StateDict {
	sd := checkpoint.NewStateDict()
	for _, p := range b.Net.Params() {
		sd.Set(p.Name, ToTorch(b.tensors[p.Name], p.Kind.Layout(), p.Shape))
	}
	return sd
}

// Digest hashes every tensor as it is now: equal before and after training
// an adapter, or the base was modified.
func (b *Base) Digest() string {
	h := digest.New()
	for _, p := range b.Net.Params() {
		t := b.tensors[p.Name]
		fmt.Fprintf(h, "%s|%s|", p.Name, t.Shape())
		t.MustConstFlatData(func(flat any) {
			switch v := flat.(type) {
			case []float32:
				var buf [4]byte
				for _, f := range v {
					binary.LittleEndian.PutUint32(buf[:], math.Float32bits(f))
					h.Write(buf[:])
				}
			case []int64:
				var buf [8]byte
				for _, n := range v {
					binary.LittleEndian.PutUint64(buf[:], uint64(n))
					h.Write(buf[:])
				}
			}
		})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ToGraph converts a state_dict tensor to the dtype and layout graphs read:
// float32 (whatever float or integer dtype it was stored as), except int64
// scalars such as num_batches_tracked, which stay int64.
func ToGraph(t *checkpoint.Tensor, layout nn.Layout) (*tensors.Tensor, error) {
	if t.DType == checkpoint.I64 && len(t.Shape) == 0 {
		if len(t.Data) != 8 {
			return nil, fmt.Errorf("int64 scalar with %d bytes", len(t.Data))
		}
		return tensors.FromScalar(int64(binary.LittleEndian.Uint64(t.Data))), nil
	}
	vals, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	v, dims := layout.ToStore(vals, t.Shape)
	return tensors.FromFlatDataAndDimensions(v, dims...), nil
}

// ToTorch converts a graph tensor back to a state_dict tensor of the given
// PyTorch shape: F32, or I64 for int64 tensors.
func ToTorch(t *tensors.Tensor, layout nn.Layout, shape []int) *checkpoint.Tensor {
	if t.DType() == dtypes.Int64 {
		return checkpoint.FromInt64(shape, tensors.MustCopyFlatData[int64](t))
	}
	return checkpoint.FromFloat32(shape, layout.ToTorch(tensors.MustCopyFlatData[float32](t), shape))
}

// Mismatches compares a state_dict with the keys and shapes a model
// expects and names every problem: a missing key, an unexpected key, a shape
// that differs.
func Mismatches(sd *checkpoint.StateDict, keys []string, shapes [][]int) []string {
	var problems []string
	known := map[string]bool{}
	for i, k := range keys {
		known[k] = true
		t := sd.Get(k)
		switch {
		case t == nil:
			problems = append(problems, fmt.Sprintf("missing key %q", k))
		case !slices.Equal(t.Shape, shapes[i]):
			problems = append(problems, fmt.Sprintf("key %q: expected shape %v, found %v", k, shapes[i], t.Shape))
		}
	}
	for _, name := range sd.Names {
		if !known[name] {
			problems = append(problems, fmt.Sprintf("unexpected key %q", name))
		}
	}
	return problems
}

// Summarize joins up to max problems and says how many more there are.
func Summarize(problems []string, max int) string {
	if len(problems) <= max {
		return strings.Join(problems, "; ")
	}
	return strings.Join(problems[:max], "; ") + fmt.Sprintf("; and %d more", len(problems)-max)
}
