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

// convCase is a k×k convolution of x [n,h,w,c] with o filters, lowered as
// im2col: Pad, one Gather of contiguous runs (a kernel row of every output
// pixel), Reshape to [pixels, k·k·c], FusedDense with bias and ReLU.
type convCase struct {
	name                       string
	n, h, w, c, k, stride, pad int
	o                          int
	constant                   []float32 // x as a constant instead of a parameter
	startPad                   int       // the padding the gather's indices assume (>= pad: starts past the end, clamped)
	fill                       float32   // the padding's value
	padChannels                int       // channels of fill appended to x's (gathered, weighted)
}

// cg is the number of channels gathered: x's and the padding's.
func (tc convCase) cg() int { return tc.c + tc.padChannels }

var convCases = []convCase{
	{name: "3x3 width 7: strips cross output rows", n: 8, h: 7, w: 7, c: 32, k: 3, stride: 1, pad: 1, o: 64},
	{name: "3x3 width 16", n: 4, h: 16, w: 16, c: 16, k: 3, stride: 1, pad: 1, o: 48},
	{name: "3x3, runs of 240 across contracting panels", n: 4, h: 8, w: 8, c: 80, k: 3, stride: 1, pad: 1, o: 40},
	{name: "3x3, 512 filters", n: 2, h: 8, w: 8, c: 80, k: 3, stride: 1, pad: 1, o: 512},
	{name: "7x7 stride 2, three channels (runs of 21)", n: 10, h: 20, w: 20, c: 3, k: 7, stride: 2, pad: 3, o: 32},
	{name: "1x1 stride 2", n: 12, h: 14, w: 14, c: 64, k: 1, stride: 2, pad: 0, o: 128},
	{name: "16384 rows, 40 filters: output blocks through the packed output", n: 64, h: 16, w: 16, c: 8, k: 3, stride: 1, pad: 1, o: 40},
	{name: "245 rows: a last strip of 5", n: 5, h: 7, w: 7, c: 32, k: 3, stride: 1, pad: 1, o: 64},
	{name: "small product (small kernel)", n: 1, h: 3, w: 3, c: 2, k: 3, stride: 1, pad: 1, o: 4},
	{name: "3x3 stride 2 on an odd map", n: 3, h: 9, w: 9, c: 64, k: 3, stride: 2, pad: 1, o: 32},
	{name: "5x5, padding 2", n: 2, h: 6, w: 5, c: 48, k: 5, stride: 1, pad: 2, o: 32},
	{name: "padded with 0.5", n: 2, h: 5, w: 5, c: 32, k: 3, stride: 1, pad: 1, o: 32, fill: 0.5},
	{name: "channels padded too", n: 2, h: 5, w: 5, c: 32, k: 3, stride: 1, pad: 1, o: 32, padChannels: 2},
	{name: "padded with -0", n: 2, h: 5, w: 5, c: 32, k: 3, stride: 1, pad: 1, o: 32, fill: float32(math.Copysign(0, -1))},
	{name: "starts past the end are clamped", n: 16, h: 8, w: 8, c: 16, k: 3, stride: 1, pad: 0, o: 32, startPad: 1},
}

func (tc convCase) out() (ho, wo int) {
	p := max(tc.pad, tc.startPad)
	return (tc.h+2*p-tc.k)/tc.stride + 1, (tc.w+2*p-tc.k)/tc.stride + 1
}

// must fails t on an error building a graph.
func must(t *testing.T) func(compute.Value, error) compute.Value {
	return func(v compute.Value, err error) compute.Value {
		t.Helper()
		if err != nil {
			t.Fatalf("%+v", err)
		}
		return v
	}
}

// patches starts the convolution's graph in a new builder: x (a parameter,
// or tc.constant), padded, gathered and reshaped to [pixels, k·k·c].
func (tc convCase) patches(t *testing.T, backend compute.Backend) (builder *gobackend.Builder, f *gobackend.Function, patches, gather compute.Value) {
	t.Helper()
	must := must(t)
	ho, wo := tc.out()
	builder = backend.Builder(tc.name).(*gobackend.Builder)
	f = builder.Main().(*gobackend.Function)
	var x compute.Value
	if tc.constant != nil {
		x = must(f.Constant(tc.constant, tc.n, tc.h, tc.w, tc.c))
	} else {
		x = must(f.Parameter("x", shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.c), nil))
	}
	if tc.pad > 0 {
		p := compute.PadAxis{Start: tc.pad, End: tc.pad}
		x = must(f.Pad(x, must(f.Constant([]float32{tc.fill})), compute.PadAxis{}, p, p, compute.PadAxis{End: tc.padChannels}))
	}
	var idx []int32
	for b := range tc.n {
		for y := range ho {
			for xx := range wo {
				for i := range tc.k {
					idx = append(idx, int32(b), int32(y*tc.stride+i), int32(xx*tc.stride))
				}
			}
		}
	}
	start := must(f.Constant(idx, len(idx)/3, 3))
	gather = must(f.Gather(x, start, 1, []int{1, 2, 3, 4}, nil, []int{0, 1, 2}, []int{1, 1, tc.k, tc.cg()}, true))
	return builder, f, must(f.Reshape(gather, tc.n*ho*wo, tc.k*tc.k*tc.cg())), gather
}

// compile returns outs from f and compiles the builder.
func compile(t *testing.T, builder *gobackend.Builder, f *gobackend.Function, outs ...compute.Value) compute.Executable {
	t.Helper()
	if err := f.Return(outs, nil); err != nil {
		t.Fatal(err)
	}
	exec, err := builder.Compile()
	if err != nil {
		t.Fatalf("%+v", err)
	}
	return exec
}

// build compiles the convolution, its product a FusedDense or a DotGeneral
// (op); with keepGather the Gather is also an output, so it has a second use
// and must not be fused. It returns the executable and the product's node.
func (tc convCase) build(t *testing.T, backend compute.Backend, op compute.OpType, keepGather bool, w, bias []float32) (compute.Executable, *gobackend.Node) {
	t.Helper()
	must := must(t)
	builder, f, patches, gather := tc.patches(t, backend)
	m, kk := patches.(*gobackend.Node).Shape.Dimensions[0], tc.k*tc.k*tc.cg()
	wc := must(f.Constant(w, kk, tc.o))
	bc := must(f.Constant(bias, tc.o))
	var y, product compute.Value
	if op == compute.OpTypeFusedDense {
		y = must(f.FusedDense(patches, wc, bc, compute.DenseConfig{
			WeightLayout: compute.DenseLayoutInputOutputs,
			Activation:   compute.ActivationConfig{Type: compute.ActivationRelu},
		}))
		product = y
	} else {
		product = must(f.DotGeneral(patches, []int{1}, nil, wc, []int{0}, nil, compute.DotGeneralConfig{}))
		bb := must(f.BroadcastInDim(bc, shapes.Make(dtypes.Float32, m, tc.o), []int{1}))
		sum := must(f.Add(product, bb))
		y = must(f.Max(sum, must(f.BroadcastInDim(must(f.Constant([]float32{0})), shapes.Make(dtypes.Float32, m, tc.o), nil))))
	}
	outs := []compute.Value{y}
	if keepGather {
		outs = append(outs, gather)
	}
	return compile(t, builder, f, outs...), product.(*gobackend.Node)
}

// reference is the convolution in float64, straight from its definition.
func (tc convCase) reference(x, w, bias []float32) []float64 {
	return tc.referenceResidual(x, w, bias, nil)
}

// referenceResidual is reference with residual (nil: none, else one value
// per output) added before the ReLU.
func (tc convCase) referenceResidual(x, w, bias, residual []float32) []float64 {
	ho, wo := tc.out()
	out := make([]float64, 0, tc.n*ho*wo*tc.o)
	for b := range tc.n {
		for y := range ho {
			for xx := range wo {
				for o := range tc.o {
					sum := float64(bias[o])
					for i := range tc.k {
						for j := range tc.k {
							r, c := y*tc.stride+i-tc.pad, xx*tc.stride+j-tc.pad
							padding := r < 0 || c < 0 || r >= tc.h || c >= tc.w
							for ch := range tc.c {
								v := float64(tc.fill)
								if !padding {
									v = float64(x[((b*tc.h+r)*tc.w+c)*tc.c+ch])
								}
								sum += v * float64(w[((i*tc.k+j)*tc.c+ch)*tc.o+o])
							}
						}
					}
					if residual != nil {
						sum += float64(residual[len(out)])
					}
					out = append(out, max(sum, 0))
				}
			}
		}
	}
	return out
}

func (tc convCase) run(t *testing.T, backend compute.Backend, exec compute.Executable, x []float32) []float32 {
	t.Helper()
	var inputs []compute.Buffer
	if tc.constant == nil {
		xb, err := backend.BufferFromFlatData(0, x, shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.c))
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, xb)
	}
	outs, err := exec.Execute(inputs, nil, 0)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	return outs[0].(*gobackend.Buffer).Flat.([]float32)
}

// TestGatheredLHS checks that a FusedDense or DotGeneral reading its lhs from
// a Gather of contiguous runs is rewritten to read the runs in place (the
// Gather not executed) where its matmul implementation reads them (AVX-512),
// and then gives bit for bit what it gives on the gathered matrix: the
// packed panels hold the same values. An implementation that does not (plain
// Go, AVX2) keeps the Gather, or, chosen only after compiling (FusedDense picks its
// implementation when it runs), is given the matrix laid out. Where the starts
// are in range, also against the convolution computed directly. A +0
// padding of runs of 32 or more is not executed: the runs in it are zeros.
func TestGatheredLHS(t *testing.T) {
	type variant struct {
		name          string
		before, after func() // registers a matmul implementation before compiling, after compiling
		rewritten     bool
		ops           []compute.OpType
	}
	both := []compute.OpType{compute.OpTypeFusedDense, compute.OpTypeDotGeneral}
	variants := []variant{
		{name: "default", rewritten: true, ops: both},
		{name: "nosimd", before: matmul.RegisterNoSIMDForTests, ops: both},
		{name: "nosimd after compiling (materialized)", after: matmul.RegisterNoSIMDForTests, rewritten: true,
			ops: []compute.OpType{compute.OpTypeFusedDense}},
	}
	for _, v := range variants {
		for _, op := range v.ops {
			t.Run(v.name+"/"+op.String(), func(t *testing.T) {
				defer dot.ResetTestRegistrations()
				if v.before != nil {
					v.before()
				}
				backend := newTestBackend(t)
				defer backend.Finalize()
				for _, tc := range convCases {
					t.Run(tc.name, func(t *testing.T) {
						rng := rand.New(rand.NewPCG(1, uint64(tc.k*1000+tc.w)))
						randoms := func(n int) []float32 {
							v := make([]float32, n)
							for i := range v {
								v[i] = float32(rng.NormFloat64())
							}
							return v
						}
						x := randoms(tc.n * tc.h * tc.w * tc.c)
						w := randoms(tc.k * tc.k * tc.cg() * tc.o)
						bias := randoms(tc.o)

						fusedExec, fused := tc.build(t, backend, op, false, w, bias)
						if rewritten := fused.Inputs[0].OpType != compute.OpTypeReshape; rewritten != v.rewritten {
							t.Fatalf("product reading %s, want it rewritten: %v", fused.Inputs[0].OpType, v.rewritten)
						}
						// Runs of 32 channels or more are read from the map unpadded where it is padded with +0.
						wantUnpadded := tc.c >= 32 && math.Float32bits(tc.fill) == 0 && tc.padChannels == 0
						if unpadded := fused.Inputs[0].OpType == compute.OpTypeParameter; v.rewritten && tc.pad > 0 && unpadded != wantUnpadded {
							t.Fatalf("product reading %s, want the unpadded map: %v", fused.Inputs[0].OpType, wantUnpadded)
						}
						plainExec, plain := tc.build(t, backend, op, true, w, bias)
						if g := plain.Inputs[0]; g.OpType != compute.OpTypeReshape {
							t.Fatalf("a Gather with a second use was fused (input %s)", g.OpType)
						}
						if v.after != nil {
							v.after()
							defer dot.ResetTestRegistrations()
						}
						got := tc.run(t, backend, fusedExec, x)
						want := tc.run(t, backend, plainExec, x)
						for i := range want {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("element %d of %d: gathered in place %g, from the gathered matrix %g", i, len(want), got[i], want[i])
							}
						}
						if tc.startPad > 0 || tc.padChannels > 0 {
							return
						}
						for i, r := range tc.reference(x, w, bias) {
							if math.Abs(float64(got[i])-r) > 1e-4*(1+math.Abs(r)) {
								t.Fatalf("element %d: %g, direct convolution %g", i, got[i], r)
							}
						}
					})
				}
			})
		}
	}
}

// TestBlockEpilogue checks that FusedDense's bias and ReLU applied block by
// block inside the matmul (dot.AppliesEpilogue, the default implementation on
// AVX-512) give bit for bit what the same product as a DotGeneral followed by
// an Add and a Max gives, on every block shape the convolutions above make
// (direct, accumulated and packed output blocks, partial strips).
func TestBlockEpilogue(t *testing.T) {
	backend := newTestBackend(t)
	defer backend.Finalize()
	for _, tc := range convCases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, uint64(tc.k*1000+tc.w)))
			randoms := func(n int) []float32 {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(rng.NormFloat64())
				}
				return v
			}
			x := randoms(tc.n * tc.h * tc.w * tc.c)
			w := randoms(tc.k * tc.k * tc.cg() * tc.o)
			bias := randoms(tc.o)
			fusedExec, _ := tc.build(t, backend, compute.OpTypeFusedDense, false, w, bias)
			opsExec, _ := tc.build(t, backend, compute.OpTypeDotGeneral, true, w, bias)
			got := tc.run(t, backend, fusedExec, x)
			want := tc.run(t, backend, opsExec, x)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("element %d of %d: fused %g, ops apart %g", i, len(want), got[i], want[i])
				}
			}
		})
	}
}

// TestGatheredLHSConstant checks that a product whose gathered input is a
// constant is left alone: it is packed once into a cache from the matrix.
func TestGatheredLHSConstant(t *testing.T) {
	backend := newTestBackend(t)
	defer backend.Finalize()
	tc := convCases[1]
	rng := rand.New(rand.NewPCG(3, 3))
	randoms := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	x := randoms(tc.n * tc.h * tc.w * tc.c)
	w := randoms(tc.k * tc.k * tc.cg() * tc.o)
	bias := randoms(tc.o)
	tc.constant = x
	for _, op := range []compute.OpType{compute.OpTypeFusedDense, compute.OpTypeDotGeneral} {
		exec, product := tc.build(t, backend, op, false, w, bias)
		if g := product.Inputs[0]; g.OpType != compute.OpTypeReshape {
			t.Fatalf("%s on a constant: reads %s, want the gathered matrix", op, g.OpType)
		}
		got := tc.run(t, backend, exec, nil)
		for i, r := range tc.reference(x, w, bias) {
			if math.Abs(float64(got[i])-r) > 1e-4*(1+math.Abs(r)) {
				t.Fatalf("%s element %d: %g, direct convolution %g", op, i, got[i], r)
			}
		}
	}
}
