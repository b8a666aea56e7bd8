package resnet

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
)

// fixture is what resnet/testdata/make_fixtures.py recorded from PyTorch.
type fixture struct {
	X28, X64              []float32
	X28Shape              []int `json:"x28_shape"`
	X64Shape              []int `json:"x64_shape"`
	Logits28, Logits64, R []float32
	GradX28               []float32 `json:"grad_x28"`
	Grads                 map[string][]float32
	NumParams             int `json:"num_params"`
	NumEntries            int `json:"num_entries"`
}

func loadFixture(t *testing.T, name string) (*checkpoint.StateDict, *fixture) {
	t.Helper()
	sd, err := pth.Load(filepath.Join("testdata", name+".pth"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return sd, &f
}

func testBackend(t testing.TB) compute.Backend {
	t.Helper()
	b, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertClose fails when max|got-want| exceeds tol·max|want|: a relative
// tolerance on the tensor's scale, as PyTorch's own parity tests use.
func assertClose(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	var maxDiff, scale float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	if scale == 0 || maxDiff > tol*scale {
		t.Errorf("%s: max |diff| %.3g exceeds %.0e × max |want| %.3g", what, maxDiff, tol, scale)
	}
}

func TestParityWithPyTorch(t *testing.T) {
	for _, name := range []string{"resnet50_w4", "resnet18_w4"} {
		t.Run(name, func(t *testing.T) {
			sd, f := loadFixture(t, name)
			cfg, err := InferConfig(sd)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(cfg.Params()); got != f.NumEntries || sd.Len() != f.NumEntries {
				t.Fatalf("entries: architecture lists %d, file has %d, PyTorch counted %d", got, sd.Len(), f.NumEntries)
			}
			if cfg.NumParams() != f.NumParams {
				t.Fatalf("NumParams %d, PyTorch counted %d", cfg.NumParams(), f.NumParams)
			}
			m := New(cfg)
			if err := m.Load(sd, name); err != nil {
				t.Fatal(err)
			}
			b := testBackend(t)
			logits := model.MustNewExec(b, m.Store, func(_ *model.Scope, x *Node) *Node { return m.Logits(x) })
			got28 := logits.MustCall1(tensors.FromFlatDataAndDimensions(f.X28, f.X28Shape...))
			assertClose(t, "logits 28x28", tensors.MustCopyFlatData[float32](got28), f.Logits28, 1e-4)
			got64 := logits.MustCall1(tensors.FromFlatDataAndDimensions(f.X64, f.X64Shape...))
			assertClose(t, "logits 64x64", tensors.MustCopyFlatData[float32](got64), f.Logits64, 1e-4)

			// Gradients of sum(logits·R) w.r.t. the input and some weights.
			var keys []string
			for k := range f.Grads {
				keys = append(keys, k)
			}
			grads := model.MustNewExec(b, m.Store, func(_ *model.Scope, x, r *Node) []*Node {
				loss := ReduceAllSum(Mul(m.Logits(x), r))
				wrt := []*Node{x}
				for _, k := range keys {
					wrt = append(wrt, m.Store.GetVariable(VarPath(k)).NodeValue(x.Graph()))
				}
				return Gradient(loss, wrt...)
			})
			outs := grads.MustCall(tensors.FromFlatDataAndDimensions(f.X28, f.X28Shape...),
				tensors.FromFlatDataAndDimensions(f.R, 2, cfg.NumClasses))
			assertClose(t, "d/dx", tensors.MustCopyFlatData[float32](outs[0]), f.GradX28, 1e-4)
			params := map[string]Param{}
			for _, p := range cfg.Params() {
				params[p.Name] = p
			}
			for i, k := range keys {
				p := params[k]
				got := p.Kind.Layout().ToTorch(tensors.MustCopyFlatData[float32](outs[i+1]), p.Shape)
				assertClose(t, "d/d "+k, got, f.Grads[k], 1e-4)
			}
		})
	}
}

func TestStateDictRoundTrip(t *testing.T) {
	sd, _ := loadFixture(t, "resnet18_w4")
	cfg, _ := InferConfig(sd)
	m := New(cfg)
	if err := m.Load(sd, "fixture"); err != nil {
		t.Fatal(err)
	}
	out, err := m.StateDict()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(out.Names, ",") != strings.Join(sd.Names, ",") {
		t.Fatalf("key order differs from torchvision's")
	}
	for _, name := range sd.Names {
		a, b := sd.Get(name), out.Get(name)
		if a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || string(a.Data) != string(b.Data) {
			t.Fatalf("%s: not bit-exact after Load → StateDict (%s%v vs %s%v)", name, a.DType, a.Shape, b.DType, b.Shape)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	sd18, _ := loadFixture(t, "resnet18_w4")
	cfg18, _ := InferConfig(sd18)
	cfg50 := cfg18
	cfg50.Block, cfg50.Layers, cfg50.Arch = Bottleneck, [4]int{3, 4, 6, 3}, "resnet50"

	missing := checkpoint.NewStateDict()
	for _, n := range sd18.Names {
		if n != "layer2.1.bn1.running_var" {
			missing.Set(n, sd18.Get(n))
		}
	}
	extra := checkpoint.NewStateDict()
	for _, n := range sd18.Names {
		extra.Set(n, sd18.Get(n))
	}
	extra.Set("head.0.weight", sd18.Get("fc.weight"))
	wrongShape := checkpoint.NewStateDict()
	for _, n := range sd18.Names {
		wrongShape.Set(n, sd18.Get(n))
	}
	wrongShape.Set("fc.bias", checkpoint.FromFloat32([]int{7}, make([]float32, 7)))

	for _, tc := range []struct {
		name string
		cfg  Config
		sd   *checkpoint.StateDict
		want string
	}{
		{"wrong architecture", cfg50, sd18, "holds a resnet18-w4 (BasicBlock [2 2 2 2]"},
		{"missing key", cfg18, missing, `missing key "layer2.1.bn1.running_var"`},
		{"unexpected key", cfg18, extra, `unexpected key "head.0.weight"`},
		{"shape mismatch", cfg18, wrongShape, `key "fc.bias": expected shape [10], found [7]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New(tc.cfg).Load(tc.sd, "file.pth")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "file.pth: ") {
				t.Fatalf("got %v, want an error naming file.pth and containing %q", err, tc.want)
			}
		})
	}
}

// TestTorchvisionArchs checks every depth against torchvision itself: same
// keys in the same order, same shapes, same parameter count.
func TestTorchvisionArchs(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "torchvision_archs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]struct {
		Keys      [][2]json.RawMessage
		NumParams int `json:"num_params"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(Archs()) {
		t.Fatalf("fixture has %d architectures, Archs() %d", len(want), len(Archs()))
	}
	for _, arch := range Archs() {
		t.Run(arch, func(t *testing.T) {
			cfg, err := ConfigFor(arch)
			if err != nil {
				t.Fatal(err)
			}
			params := cfg.Params()
			w := want[arch]
			if len(params) != len(w.Keys) {
				t.Fatalf("%d entries, torchvision has %d", len(params), len(w.Keys))
			}
			for i, p := range params {
				var name string
				var shape []int
				_ = json.Unmarshal(w.Keys[i][0], &name)
				_ = json.Unmarshal(w.Keys[i][1], &shape)
				if p.Name != name || !slices.Equal(p.Shape, shape) {
					t.Fatalf("entry %d: %s%v, torchvision has %s%v", i, p.Name, p.Shape, name, shape)
				}
			}
			if cfg.NumParams() != w.NumParams {
				t.Errorf("NumParams %d, torchvision %d", cfg.NumParams(), w.NumParams)
			}
		})
	}
	if _, err := ConfigFor("resnet49"); err == nil || !strings.Contains(err.Error(), "resnet50") {
		t.Errorf("unknown arch error should list known names, got %v", err)
	}
}
