package resnet

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/nn"
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

// gradExec returns the logits and the gradients of sum(logits·r) w.r.t. the
// input and the named weights, with every base weight fed as a parameter.
func gradExec(t *testing.T, base *backbone.Base, keys []string) func(x, r *tensors.Tensor) []*tensors.Tensor {
	t.Helper()
	feed := classifier.UnfoldedFeed(base, nil)
	exec, err := NewExec(testutil.Backend(), func(inputs []*Node) []*Node {
		x, r := inputs[0], inputs[1]
		w := nn.Weights{}
		feed.Bind(inputs[2:], w)
		logits := base.Net.Forward(x, &backbone.Pass{Weights: w}, 0, len(base.Net.Stages()))
		wrt := []*Node{x}
		for _, k := range keys {
			wrt = append(wrt, w[k])
		}
		return append([]*Node{logits}, Gradient(ReduceAllSum(Mul(logits, r)), wrt...)...)
	})
	if err != nil {
		t.Fatal(err)
	}
	return func(x, r *tensors.Tensor) []*tensors.Tensor {
		out, err := exec.Call(append([]any{x, r}, feed.Args()...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func logitsOf(t *testing.T, base *backbone.Base, x *tensors.Tensor) []float32 {
	t.Helper()
	out, err := classifier.NewPredictor(testutil.Backend(), base, nil).Logits(x)
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out)
}

func TestParityWithPyTorch(t *testing.T) {
	for _, name := range []string{"resnet50_w4", "resnet18_w4", "resnext_w8"} {
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
			base, err := backbone.Load(New(cfg), sd, name, "")
			if err != nil {
				t.Fatal(err)
			}
			x28 := tensors.FromFlatDataAndDimensions(f.X28, f.X28Shape...)
			testutil.AssertClose(t, "logits 28x28", logitsOf(t, base, x28), f.Logits28, 1e-4)
			testutil.AssertClose(t, "logits 64x64", logitsOf(t, base, tensors.FromFlatDataAndDimensions(f.X64, f.X64Shape...)), f.Logits64, 1e-4)

			// Gradients of sum(logits·R) w.r.t. the input and some weights.
			var keys []string
			for k := range f.Grads {
				keys = append(keys, k)
			}
			outs := gradExec(t, base, keys)(x28, tensors.FromFlatDataAndDimensions(f.R, 2, cfg.NumClasses))
			testutil.AssertClose(t, "d/dx", tensors.MustCopyFlatData[float32](outs[1]), f.GradX28, 1e-4)
			params := map[string]backbone.Param{}
			for _, p := range cfg.Params() {
				params[p.Name] = p
			}
			for i, k := range keys {
				p := params[k]
				got := p.Kind.Layout().ToTorch(tensors.MustCopyFlatData[float32](outs[i+2]), p.Shape)
				testutil.AssertClose(t, "d/d "+k, got, f.Grads[k], 1e-4)
			}
		})
	}
}

func TestStateDictRoundTrip(t *testing.T) {
	sd, _ := loadFixture(t, "resnet18_w4")
	base, err := FromStateDict(sd, "", "fixture", "")
	if err != nil {
		t.Fatal(err)
	}
	out := base.StateDict()
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
		arch string
		sd   *checkpoint.StateDict
		want string
	}{
		{"wrong architecture", "resnet50", sd18, "holds a resnet18-w4 (BasicBlock [2 2 2 2]"},
		{"missing key", "", missing, `missing key "layer2.1.bn1.running_var"`},
		{"unexpected key", "", extra, `unexpected key "head.0.weight"`},
		{"shape mismatch", "", wrongShape, `key "fc.bias": expected shape [10], found [7]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromStateDict(tc.sd, tc.arch, "file.pth", "")
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

// TestInferConfig: every architecture is recognized from its keys and
// shapes alone, and a grouped conv stored dense (merged with a LoRA) is
// recognized as such.
func TestInferConfig(t *testing.T) {
	shapes := func(c Config) *checkpoint.StateDict {
		sd := checkpoint.NewStateDict()
		for _, p := range c.Params() {
			sd.Set(p.Name, &checkpoint.Tensor{DType: checkpoint.F32, Shape: p.Shape})
		}
		return sd
	}
	for _, arch := range Archs() {
		cfg, _ := ConfigFor(arch)
		got, err := InferConfig(shapes(cfg))
		if err != nil || got.Arch != arch || len(got.Dense) != 0 {
			t.Errorf("%s: inferred %+v, %v", arch, got, err)
		}
	}
	cfg, _ := ConfigFor("resnext50_32x4d")
	cfg.Dense = []string{"layer1.0.conv2", "layer3.2.conv2"}
	got, err := InferConfig(shapes(cfg))
	if err != nil || got.Arch != "resnext50_32x4d" || !slices.Equal(got.Dense, cfg.Dense) {
		t.Errorf("merged resnext: inferred %+v, %v", got, err)
	}
}
