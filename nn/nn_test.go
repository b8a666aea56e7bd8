package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/backend"
)

func randTensor(rng *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, dims...)
}

// TestConv2DMatchesNativeConvolution checks the im2col path (and its skipping
// of taps that only read padding), and Conv2DNarrow, against the backend's
// own convolution, on map sizes where ResNet's late layers run at 28×28 input.
func TestConv2DMatchesNativeConvolution(t *testing.T) {
	b, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name              string
		h, w, k, s, p, ci int
		g                 int // groups (0: 1)
	}{
		{"3x3 s1 p1 on 5x5", 5, 5, 3, 1, 1, 3, 0},
		{"3x3 s2 p1 on 4x4", 4, 4, 3, 2, 1, 3, 0},
		{"3x3 s1 p1 on 1x1 (centre tap only)", 1, 1, 3, 1, 1, 4, 0},
		{"3x3 s2 p1 on 2x2", 2, 2, 3, 2, 1, 4, 0},
		{"7x7 s2 p3 on 9x7", 9, 7, 7, 2, 3, 3, 0},
		{"1x1 s2 p0 on 6x6", 6, 6, 1, 2, 0, 5, 0},
		{"1x1 s1 p0 on 3x3", 3, 3, 1, 1, 0, 5, 0},
		// Runs of many channels (the gather copies len(cols)·C floats at once).
		{"gather: 3x3 s1 p1 on 5x5", 5, 5, 3, 1, 1, 16, 0},
		{"gather: 3x3 s2 p1 on 5x4", 5, 4, 3, 2, 1, 16, 0},
		{"gather: 3x3 s1 p1 on 1x1 (centre tap only)", 1, 1, 3, 1, 1, 16, 0},
		{"gather: 3x3 s1 p1 on 2x2 (fewer pixels than taps)", 2, 2, 3, 1, 1, 16, 0},
		{"gather: 3x3 s2 p1 on 3x2", 3, 2, 3, 2, 1, 16, 0},
		{"gather: 1x1 s2 p0 on 6x6", 6, 6, 1, 2, 0, 16, 0},
		{"gather: 1x1 s1 p0 on 3x3 (no copy)", 3, 3, 1, 1, 0, 16, 0},
		// ResNeXt's grouped 3×3 convs.
		{"4 groups: 3x3 s1 p1 on 5x5", 5, 5, 3, 1, 1, 16, 4},
		{"2 groups: 3x3 s2 p1 on 5x4", 5, 4, 3, 2, 1, 16, 2},
		{"3 groups: 3x3 s1 p1 on 1x1 (centre tap only)", 1, 1, 3, 1, 1, 6, 3},
		{"2 groups: 3x3 s2 p1 on 4x4, 2 channels a group", 4, 4, 3, 2, 1, 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := max(tc.g, 1)
			x := randTensor(rng, 2, tc.h, tc.w, tc.ci)
			w := randTensor(rng, tc.k*tc.k*tc.ci/g, 12) // matmul layout [K·K·C/g, O]
			nativeConv := func(x, w *Node) *Node {
				pad := [][2]int{{tc.p, tc.p}, {tc.p, tc.p}}
				return Convolve(x, Reshape(w, tc.k, tc.k, tc.ci/g, 12)).StridePerAxis(tc.s, tc.s).PaddingPerDim(pad).FeatureGroupCount(g).Done()
			}
			im2col := MustExecOnce(b, func(x, w *Node) *Node { return Conv2D(x, w, tc.k, tc.s, tc.p, g) }, x, w)
			native := MustExecOnce(b, nativeConv, x, w)
			if !im2col.Shape().Equal(native.Shape()) {
				t.Fatalf("shape %s, native %s", im2col.Shape(), native.Shape())
			}
			assertNear(t, "output", im2col, native)
			// Gradients w.r.t. input and weight (the im2col's backward is
			// what training runs): against the native convolution's.
			r := randTensor(rng, native.Shape().Dimensions...)
			grads := func(conv func(x, w *Node) *Node) []*tensors.Tensor {
				return MustExecOnceN(b, func(x, w, r *Node) []*Node {
					return Gradient(ReduceAllSum(Mul(conv(x, w), r)), x, w)
				}, x, w, r)
			}
			mine := grads(func(x, w *Node) *Node { return Conv2D(x, w, tc.k, tc.s, tc.p, g) })
			ref := grads(nativeConv)
			assertNear(t, "d/dx", mine[0], ref[0])
			assertNear(t, "d/dw", mine[1], ref[1])
			// A weight baked in as a constant (a frozen base conv): on maps
			// with fewer pixels than live taps, one dense product.
			baked := func(x *Node) *Node {
				c := ConstTensor(x.Graph(), w)
				SetConst(c, w)
				return Conv2D(x, c, tc.k, tc.s, tc.p, g)
			}
			assertNear(t, "baked output", MustExecOnce(b, baked, x), native)
			bakedDx := MustExecOnce(b, func(x, r *Node) *Node { return Gradient(ReduceAllSum(Mul(baked(x), r)), x)[0] }, x, r)
			assertNear(t, "baked d/dx", bakedDx, ref[0])
			if g == 1 { // Conv2DNarrow, LoRA A's conv, is the same map with the product turned around
				narrow := func(x, w *Node) *Node { return Conv2DNarrow(x, w, tc.k, tc.s, tc.p) }
				assertNear(t, "narrow output", MustExecOnce(b, narrow, x, w), native)
				ng := grads(narrow)
				assertNear(t, "narrow d/dx", ng[0], ref[0])
				assertNear(t, "narrow d/dw", ng[1], ref[1])
			}
		})
	}
}

// TestReLUDifferentiable checks the training ReLU against torch.relu (the
// expected values are what PyTorch 1.13 gives for this x and adjoint): NaN
// passes through, the gradient is zero where x ≤ 0 (x = 0 included) and
// the adjoint elsewhere (NaN included).
func TestReLUDifferentiable(t *testing.T) {
	b, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	nan := float32(math.NaN())
	x := tensors.FromValue([]float32{-2, -0.5, 0, 1e-30, 0.25, 3, nan})
	v := tensors.FromValue([]float32{1, 2, 3, 4, 5, 6, 7})
	out := MustExecOnceN(b, func(x, v *Node) []*Node {
		y := ReLUDifferentiable(x)
		return []*Node{y, Gradient(ReduceAllSum(Mul(y, v)), x)[0]}
	}, x, v)
	y, dx := tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1])
	wantY := []float32{0, 0, 0, 1e-30, 0.25, 3}
	wantDx := []float32{0, 0, 0, 4, 5, 6, 7}
	for i, w := range wantY {
		if y[i] != w {
			t.Errorf("relu(%g) = %g, want %g", tensors.MustCopyFlatData[float32](x)[i], y[i], w)
		}
	}
	if !math.IsNaN(float64(y[6])) {
		t.Errorf("relu(NaN) = %g, want NaN", y[6])
	}
	for i, w := range wantDx {
		if dx[i] != w {
			t.Errorf("d relu/dx at element %d = %g, want %g", i, dx[i], w)
		}
	}
}

// TestMaxPool2D checks the im2col max against GoMLX's own pooling
// (reduce-window), forward and backward.
func TestMaxPool2D(t *testing.T) {
	b, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []int{4, 16} {
		x := randTensor(rng, 2, 9, 8, c)
		ref := func(x *Node) *Node {
			return MaxPool(x).Window(3).Strides(2).PaddingPerDim([][2]int{{1, 1}, {1, 1}}).Done()
		}
		got := MustExecOnce(b, func(x *Node) *Node { return MaxPool2D(x, 3, 2, 1) }, x)
		want := MustExecOnce(b, ref, x)
		assertNear(t, "max pool", got, want)
		gradOf := func(pool func(x *Node) *Node) *tensors.Tensor {
			return MustExecOnce(b, func(x *Node) *Node { return Gradient(ReduceAllSum(Square(pool(x))), x)[0] }, x)
		}
		assertNear(t, "max pool d/dx", gradOf(func(x *Node) *Node { return MaxPool2D(x, 3, 2, 1) }), gradOf(ref))
	}
}

func assertNear(t *testing.T, what string, got, want *tensors.Tensor) {
	t.Helper()
	g, w := tensors.MustCopyFlatData[float32](got), tensors.MustCopyFlatData[float32](want)
	if len(g) != len(w) {
		t.Fatalf("%s: %d values, want %d", what, len(g), len(w))
	}
	for i := range w {
		if math.Abs(float64(g[i]-w[i])) > 1e-4*(1+math.Abs(float64(w[i]))) {
			t.Fatalf("%s: element %d: %g, native %g", what, i, g[i], w[i])
		}
	}
}

func TestLayoutRoundTrip(t *testing.T) {
	// Shapes of more than one 32×32 tile with ragged edges, a 1×1 conv and
	// a stem-like one.
	for _, d := range [][4]int{{4, 3, 2, 5}, {37, 5, 3, 3}, {70, 33, 1, 1}, {64, 3, 7, 7}} {
		o, c, kh, kw := d[0], d[1], d[2], d[3]
		src := make([]float32, o*c*kh*kw)
		for i := range src {
			src[i] = float32(i)
		}
		moved := ConvWeightFromTorch(src, o, c, kh, kw)
		// [O,C,KH,KW] element (oi,ci,i,j) lands at [i,j,ci,oi].
		for oi := range o {
			for ci := range c {
				for i := range kh {
					for j := range kw {
						if got, want := moved[((i*kw+j)*c+ci)*o+oi], src[((oi*c+ci)*kh+i)*kw+j]; got != want {
							t.Fatalf("%v: [%d,%d,%d,%d] holds %g, want %g", d, i, j, ci, oi, got, want)
						}
					}
				}
			}
		}
		back := ConvWeightToTorch(moved, o, c, kh, kw)
		for i := range src {
			if back[i] != src[i] {
				t.Fatalf("%v: conv layout round trip differs at %d", d, i)
			}
		}
	}
}

// TestBatchNormTrain checks train-mode batch norm against its definition
// (torch.nn.BatchNorm2d in train mode): batch statistics normalize, the
// running mean and the unbiased running variance move by momentum. The
// PyTorch parity of training with it is in package train.
func TestBatchNormTrain(t *testing.T) {
	b, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	x := randTensor(rng, 2, 3, 2, 4) // 12 values per channel
	gamma, beta := randTensor(rng, 4), randTensor(rng, 4)
	mean, variance := randTensor(rng, 4), tensors.FromFlatDataAndDimensions([]float32{1, 2, 0.5, 1.5}, 4)
	outs := MustExecOnceN(b, func(x, g, bt, m, v *Node) []*Node {
		y, nm, nv := BatchNormTrain(x, g, bt, m, v, 1e-5, 0.1)
		return []*Node{y, nm, nv}
	}, x, gamma, beta, mean, variance)
	xv := tensors.MustCopyFlatData[float32](x)
	gv, bv := tensors.MustCopyFlatData[float32](gamma), tensors.MustCopyFlatData[float32](beta)
	mv, vv := tensors.MustCopyFlatData[float32](mean), tensors.MustCopyFlatData[float32](variance)
	y, nm, nv := tensors.MustCopyFlatData[float32](outs[0]), tensors.MustCopyFlatData[float32](outs[1]), tensors.MustCopyFlatData[float32](outs[2])
	for c := range 4 {
		var sum, sq float64
		for i := c; i < len(xv); i += 4 {
			sum += float64(xv[i])
		}
		mu := sum / 12
		for i := c; i < len(xv); i += 4 {
			sq += (float64(xv[i]) - mu) * (float64(xv[i]) - mu)
		}
		biased := sq / 12
		for i := c; i < len(xv); i += 4 {
			want := (float64(xv[i])-mu)/math.Sqrt(biased+1e-5)*float64(gv[c]) + float64(bv[c])
			if math.Abs(float64(y[i])-want) > 1e-5 {
				t.Fatalf("channel %d: y %g, want %g", c, y[i], want)
			}
		}
		if want := 0.9*float64(mv[c]) + 0.1*mu; math.Abs(float64(nm[c])-want) > 1e-6 {
			t.Errorf("channel %d: running mean %g, want %g", c, nm[c], want)
		}
		if want := 0.9*float64(vv[c]) + 0.1*sq/11; math.Abs(float64(nv[c])-want) > 1e-6 {
			t.Errorf("channel %d: running var %g, want %g (unbiased)", c, nv[c], want)
		}
	}
}

// TestConv2DShiftIsTheOpsApart: the fused conv + shift (+ ReLU) gives the
// unfused ops' outputs bit for bit, on the convs ResNet folds (1×1, strided
// 1×1, 3×3, the 7×7 stem), grouped ones falling back to the ops apart.
func TestConv2DShiftIsTheOpsApart(t *testing.T) {
	b, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name                 string
		h, k, s, p, ci, o, g int
		relu                 bool
		baked                bool // w a constant, as a frozen base conv's
	}{
		{"1x1 with ReLU", 7, 1, 1, 0, 32, 48, 1, true, false},
		{"1x1 shift only (before a residual sum)", 7, 1, 1, 0, 32, 48, 1, false, false},
		{"1x1 s2 (downsample)", 8, 1, 2, 0, 16, 32, 1, false, false},
		{"3x3 s1 p1 with ReLU", 6, 3, 1, 1, 16, 24, 1, true, false},
		{"3x3 s1 p1 on 1x1 (centre tap only)", 1, 3, 1, 1, 16, 24, 1, true, false},
		{"7x7 s2 p3 stem", 14, 7, 2, 3, 3, 16, 1, true, false},
		{"2 groups: ops apart", 5, 3, 1, 1, 8, 8, 2, true, false},
		{"3x3 s1 p1 on 2x2, baked: one dense product", 2, 3, 1, 1, 16, 24, 1, true, true},
		{"3x3 s1 p1, baked", 6, 3, 1, 1, 16, 24, 1, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := randTensor(rng, 2, tc.h, tc.h, tc.ci)
			wt := randTensor(rng, tc.k*tc.k*tc.ci/tc.g, tc.o)
			shift := randTensor(rng, tc.o)
			run := func(fused bool) []float32 {
				exec := MustNewExec(b, func(x, w, shift *Node) *Node {
					if tc.baked {
						w = ConstTensor(x.Graph(), wt)
						SetConst(w, wt)
					}
					if fused {
						return Conv2DShift(x, w, shift, tc.k, tc.s, tc.p, tc.g, tc.relu)
					}
					y := Add(Conv2D(x, w, tc.k, tc.s, tc.p, tc.g), ExpandLeftToRank(shift, 4))
					if tc.relu {
						y = ReLU(y)
					}
					return y
				})
				return tensors.MustCopyFlatData[float32](exec.MustExec(x, wt, shift)[0])
			}
			want, got := run(false), run(true)
			negatives := 0
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("element %d: fused %v, ops apart %v", i, got[i], want[i])
				}
				if want[i] < 0 {
					negatives++
				}
			}
			if tc.relu != (negatives == 0) {
				t.Fatalf("relu %v but %d negative outputs", tc.relu, negatives)
			}
		})
	}
}
