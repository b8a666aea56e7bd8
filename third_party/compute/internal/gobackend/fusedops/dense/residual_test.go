package dense_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul"
	"github.com/gomlx/compute/shapes"
)

// residualForm is one way a graph can write relu(conv(x) + r).
type residualForm struct {
	name       string
	rLeft      bool    // Add(r, y) instead of Add(y, r)
	image      bool    // the product reshaped to [n, ho, wo, o] before the Add
	zeroLeft   bool    // Max(0, sum) instead of Max(sum, 0)
	floor      float32 // Max(sum, floor): not a ReLU unless 0
	keepSum    bool    // the Add is also an output: a second use
	keepImage  bool    // with image, the reshaped product is also an output
	noBias     bool    // the product has no bias
	wantFusion bool
}

var residualForms = []residualForm{
	{name: "y+r", wantFusion: true},
	{name: "r+y", rLeft: true, wantFusion: true},
	{name: "reshaped to an image", image: true, wantFusion: true},
	{name: "max(0, sum)", zeroLeft: true, wantFusion: true},
	{name: "no bias", noBias: true, wantFusion: true},
	{name: "max(sum, 0.5) is no ReLU", floor: 0.5},
	{name: "sum with a second use", keepSum: true},
	{name: "image with a second use", image: true, keepImage: true},
}

// buildResidual compiles max(conv(x) + r, floor) for the residual r (a
// parameter), the conv's product a FusedDense without activation (FusedDense)
// or a DotGeneral and an Add of the bias (DotGeneral). It returns the
// executable and the output's node.
func (tc convCase) buildResidual(t *testing.T, backend compute.Backend, op compute.OpType, form residualForm, w, bias []float32) (compute.Executable, *gobackend.Node) {
	t.Helper()
	must := must(t)
	builder, f, patches, _ := tc.patches(t, backend)
	m, kk := patches.(*gobackend.Node).Shape.Dimensions[0], tc.k*tc.k*tc.cg()
	ho, wo := tc.out()
	wc := must(f.Constant(w, kk, tc.o))
	var bc compute.Value
	if !form.noBias {
		bc = must(f.Constant(bias, tc.o))
	}
	var y compute.Value
	switch {
	case op == compute.OpTypeFusedDense:
		y = must(f.FusedDense(patches, wc, bc, compute.DenseConfig{WeightLayout: compute.DenseLayoutInputOutputs}))
	case form.noBias:
		y = must(f.DotGeneral(patches, []int{1}, nil, wc, []int{0}, nil, compute.DotGeneralConfig{}))
	default:
		product := must(f.DotGeneral(patches, []int{1}, nil, wc, []int{0}, nil, compute.DotGeneralConfig{}))
		y = must(f.Add(product, must(f.BroadcastInDim(bc, shapes.Make(dtypes.Float32, m, tc.o), []int{1}))))
	}
	dims := []int{m, tc.o}
	if form.image {
		dims = []int{tc.n, ho, wo, tc.o}
		y = must(f.Reshape(y, dims...))
	}
	r := must(f.Parameter("r", shapes.Make(dtypes.Float32, dims...), nil))
	// Only the nodes of the form: an unused node still counts as a use.
	terms := []compute.Value{y, r}
	if form.rLeft {
		terms = []compute.Value{r, y}
	}
	sum := must(f.Add(terms[0], terms[1]))
	floor := must(f.BroadcastInDim(must(f.Constant([]float32{form.floor})), shapes.Make(dtypes.Float32, dims...), nil))
	operands := []compute.Value{sum, floor}
	if form.zeroLeft {
		operands = []compute.Value{floor, sum}
	}
	out := must(f.Max(operands[0], operands[1]))
	outs := []compute.Value{out}
	if form.keepSum {
		outs = append(outs, sum)
	}
	if form.keepImage {
		outs = append(outs, y)
	}
	return compile(t, builder, f, outs...), out.(*gobackend.Node)
}

// TestResidualEpilogue checks that relu(FusedDense(x, w, b) + r), how a
// ResNet block ends, becomes one FusedDense adding r in its epilogue — block
// by block inside the AVX-512 matmul, or over the whole output after another
// implementation — and gives bit for bit what the product as a DotGeneral and
// the Adds and Max apart give, on every block shape of convCases (their
// gathered inputs read in place); that nothing else is fused; and values
// against the convolution computed directly.
func TestResidualEpilogue(t *testing.T) {
	for _, v := range []struct {
		name   string
		before func()
	}{{name: "default"}, {name: "nosimd", before: matmul.RegisterNoSIMDForTests}} {
		t.Run(v.name, func(t *testing.T) {
			defer dot.ResetTestRegistrations()
			if v.before != nil {
				v.before()
			}
			backend := newTestBackend(t)
			defer backend.Finalize()
			for _, form := range residualForms {
				for _, tc := range convCases {
					if tc.startPad > 0 || tc.padChannels > 0 { // no direct reference
						continue
					}
					t.Run(form.name+"/"+tc.name, func(t *testing.T) {
						rng := rand.New(rand.NewPCG(4, uint64(tc.k*1000+tc.w)))
						randoms := func(n int) []float32 {
							v := make([]float32, n)
							for i := range v {
								v[i] = float32(rng.NormFloat64())
							}
							return v
						}
						ho, wo := tc.out()
						x := randoms(tc.n * tc.h * tc.w * tc.c)
						w := randoms(tc.k * tc.k * tc.cg() * tc.o)
						bias := randoms(tc.o)
						if form.noBias {
							bias = make([]float32, tc.o)
						}
						r := randoms(tc.n * ho * wo * tc.o)

						fusedExec, fused := tc.buildResidual(t, backend, compute.OpTypeFusedDense, form, w, bias)
						if got := fused.OpType == compute.OpTypeFusedDense; got != form.wantFusion {
							t.Fatalf("output is a %s, want it fused: %v", fused.OpType, form.wantFusion)
						}
						opsExec, _ := tc.buildResidual(t, backend, compute.OpTypeDotGeneral, form, w, bias)
						got := tc.runResidual(t, backend, fusedExec, x, r, form)
						want := tc.runResidual(t, backend, opsExec, x, r, form)
						for i := range want {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("element %d of %d: fused %g, ops apart %g", i, len(want), got[i], want[i])
							}
						}
						if form.floor != 0 {
							return
						}
						for i, ref := range tc.referenceResidual(x, w, bias, r) {
							if math.Abs(float64(got[i])-ref) > 1e-4*(1+math.Abs(ref)) {
								t.Fatalf("element %d: %g, direct convolution %g", i, got[i], ref)
							}
						}
					})
				}
			}
		})
	}
}

// runResidual runs an executable of buildResidual on x and r.
func (tc convCase) runResidual(t *testing.T, backend compute.Backend, exec compute.Executable, x, r []float32, form residualForm) []float32 {
	t.Helper()
	ho, wo := tc.out()
	rDims := []int{tc.n * ho * wo, tc.o}
	if form.image {
		rDims = []int{tc.n, ho, wo, tc.o}
	}
	var inputs []compute.Buffer
	for _, in := range []struct {
		flat []float32
		dims []int
	}{{x, []int{tc.n, tc.h, tc.w, tc.c}}, {r, rDims}} {
		b, err := backend.BufferFromFlatData(0, in.flat, shapes.Make(dtypes.Float32, in.dims...))
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b)
	}
	outs, err := exec.Execute(inputs, nil, 0)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	return outs[0].(*gobackend.Buffer).Flat.([]float32)
}
