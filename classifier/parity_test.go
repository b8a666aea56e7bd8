package classifier

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/resnet"
	"github.com/lorafit/lorafit/weights"
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
	sd, info, err := weights.ReadFile(baseFixture)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"case2_like", "strided_rslora", "case4_like"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "lora", "testdata", name)
			raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			var f peftFixture
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			a, err := ReadAdapter(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.CheckBase(info.SHA256, false); err != nil {
				t.Fatalf("the fixture's base binding: %v", err)
			}
			m := build(t, sd, a.Spec)
			if err := a.Apply(m); err != nil {
				t.Fatal(err)
			}
			x := tensors.FromFlatDataAndDimensions(f.X, f.XShape...)
			if d := maxRelDiff(logits(t, m, x), f.Logits); d > 1e-4 {
				t.Errorf("logits differ from PyTorch's by %.2g relative", d)
			}

			entries := map[string]Entry{}
			var keys []string
			for _, e := range m.AdapterEntries() {
				if _, ok := f.Grads[e.Key]; ok {
					entries[e.Key] = e
					keys = append(keys, e.Key)
				}
			}
			if len(keys) != len(f.Grads) {
				t.Fatalf("fixture has gradients for %d tensors, the adapter has %d of them", len(f.Grads), len(keys))
			}
			exec := model.MustNewExec(goBackend(), m.Base.Store, func(_ *model.Scope, x, r *Node) []*Node {
				g := x.Graph()
				model.GetStore(g).SetTraining(g, true) // variables as parameters, not constants
				wrt := []*Node{x}
				for _, k := range keys {
					wrt = append(wrt, m.Base.Store.GetVariable(resnet.VarPath(k)).NodeValue(g))
				}
				return Gradient(ReduceAllSum(Mul(m.Logits(x), r)), wrt...)
			})
			outs := exec.MustCall(x, tensors.FromFlatDataAndDimensions(f.R, f.LogitsShape...))
			if d := maxRelDiff(tensors.MustCopyFlatData[float32](outs[0]), f.GradX); d > 1e-4 {
				t.Errorf("d/dx differs by %.2g", d)
			}
			for i, k := range keys {
				e := entries[k]
				got := e.Layout.ToTorch(tensors.MustCopyFlatData[float32](outs[i+1]), e.Shape)
				if d := maxRelDiff(got, f.Grads[k]); d > 1e-4 {
					t.Errorf("d/d %s differs by %.2g", k, d)
				}
			}
			checked := 0
			for mod, want := range f.DeltaWeights {
				for _, tg := range m.Targets {
					if tg.Module.Name+".weight" != mod {
						continue
					}
					checked++
					ea, eb := entries[tg.Module.Name+".lora_A.weight"], entries[tg.Module.Name+".lora_B.weight"]
					av, _ := m.get(ea)
					bv, _ := m.get(eb)
					if d := maxRelDiff(tg.DeltaWeight(av, bv), want.Values); d > 1e-5 {
						t.Errorf("%s: merge delta differs by %.2g", mod, d)
					}
				}
			}
			if checked != len(f.DeltaWeights) || checked == 0 {
				t.Errorf("checked %d merge deltas of %d", checked, len(f.DeltaWeights))
			}
		})
	}
}
