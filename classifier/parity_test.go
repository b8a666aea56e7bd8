package classifier

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/nn"
)

// peftFixture is what lora/testdata/make_fixtures.py recorded with a
// PEFT-equivalent PyTorch wrapper around the same base.
type peftFixture struct {
	X, R, Logits []float32
	GradX        []float32 `json:"grad_x"`
	XShape       []int     `json:"x_shape"`
	LogitsShape  []int     `json:"logits_shape"`
	Grads        map[string][]float32
	DeltaWeights map[string]struct {
		Shape  []int
		Values []float32
	} `json:"delta_weights"`
}

// TestPEFTParity loads adapters PyTorch wrote in PEFT's format onto the
// base fixture and checks logits, gradients (input and every adapter
// tensor) and merge deltas against PyTorch's.
func TestPEFTParity(t *testing.T) {
	base := loadBase(t, testutil.ResNet50W4)
	for _, name := range []string{"case2_like", "strided_rslora", "case4_like"} {
		t.Run(name, func(t *testing.T) {
			dir := testutil.Path(filepath.Join("lora", "testdata", name))
			raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			var f peftFixture
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			a, warning, err := adapter.Load(dir, base, false)
			if err != nil || warning != "" {
				t.Fatalf("the fixture's base binding: %v %s", err, warning)
			}
			x := tensors.FromFlatDataAndDimensions(f.X, f.XShape...)
			testutil.AssertClose(t, "logits", logits(t, base, a, x), f.Logits, 1e-4)

			entries := map[string]adapter.Entry{}
			var keys []string
			for _, e := range a.Entries() {
				if _, ok := f.Grads[e.Key]; ok {
					entries[e.Key] = e
					keys = append(keys, e.Key)
				}
			}
			if len(keys) != len(f.Grads) {
				t.Fatalf("fixture has gradients for %d tensors, the adapter has %d of them", len(f.Grads), len(keys))
			}
			frozen, own := BaseFeed(base, a), AdapterFeed(a, nil)
			exec, err := NewExec(testutil.Backend(), func(inputs []*Node) []*Node {
				x, r := inputs[0], inputs[1]
				w := nn.Weights{}
				frozen.Bind(inputs[2:2+len(frozen.Keys)], w)
				own.Bind(inputs[2+len(frozen.Keys):], w)
				fw := &Forward{Net: base.Net, Adapter: a, Weights: w}
				wrt := []*Node{x}
				for _, k := range keys {
					wrt = append(wrt, w[k])
				}
				return Gradient(ReduceAllSum(Mul(fw.Logits(x, 0), r)), wrt...)
			})
			if err != nil {
				t.Fatal(err)
			}
			args := append([]any{x, tensors.FromFlatDataAndDimensions(f.R, f.LogitsShape...)}, frozen.Args()...)
			outs, err := exec.Call(append(args, own.Args()...)...)
			if err != nil {
				t.Fatal(err)
			}
			testutil.AssertClose(t, "d/dx", tensors.MustCopyFlatData[float32](outs[0]), f.GradX, 1e-4)
			for i, k := range keys {
				e := entries[k]
				got := e.Layout.ToTorch(tensors.MustCopyFlatData[float32](outs[i+1]), e.Shape)
				testutil.AssertClose(t, "d/d "+k, got, f.Grads[k], 1e-4)
			}
			own2, _ := a.StateDict()
			checked := 0
			for mod, want := range f.DeltaWeights {
				for _, tg := range a.Targets {
					if tg.Module.Name+".weight" != mod {
						continue
					}
					checked++
					av, _ := own2.Get(tg.Module.Name + ".lora_A.weight").Float32s()
					bv, _ := own2.Get(tg.Module.Name + ".lora_B.weight").Float32s()
					testutil.AssertClose(t, mod+": merge delta", tg.DeltaWeight(av, bv), want.Values, 1e-5)
				}
			}
			if checked != len(f.DeltaWeights) || checked == 0 {
				t.Errorf("checked %d merge deltas of %d", checked, len(f.DeltaWeights))
			}
		})
	}
}
