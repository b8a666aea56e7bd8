package dot_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// poolCase is a k×k max pooling of x [n,h,w,c] laid out as nn.MaxPool2D
// does: Pad with fill, one Gather of a kernel row's runs per output pixel,
// Reshape to [pixels, k·k, c], ReduceMax over the taps.
type poolCase struct {
	n, h, w, c, k, stride, pad int
	fill                       float32
	group                      int // the reduced rows' width, if not c: [pixels, k·k·c/group, group]
}

func (tc poolCase) groupSize() int {
	if tc.group > 0 {
		return tc.group
	}
	return tc.c
}

func (tc poolCase) out() (ho, wo int) {
	return (tc.h+2*tc.pad-tc.k)/tc.stride + 1, (tc.w+2*tc.pad-tc.k)/tc.stride + 1
}

// build compiles the pooling; with keepGather the Gather is also an output
// (a second use: not fused). It returns the ReduceMax node.
func (tc poolCase) build(t *testing.T, keepGather bool) (compute.Executable, *gobackend.Node) {
	t.Helper()
	ho, wo := tc.out()
	builder := backend.Builder(fmt.Sprint(tc)).(*gobackend.Builder)
	f := builder.Main().(*gobackend.Function)
	check := func(v compute.Value, err error) compute.Value {
		t.Helper()
		if err != nil {
			t.Fatalf("%+v", err)
		}
		return v
	}
	x := check(f.Parameter("x", shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.c), nil))
	p := compute.PadAxis{Start: tc.pad, End: tc.pad}
	x = check(f.Pad(x, check(f.Constant([]float32{tc.fill})), compute.PadAxis{}, p, p, compute.PadAxis{}))
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
	start := check(f.Constant(idx, len(idx)/3, 3))
	gather := check(f.Gather(x, start, 1, []int{1, 2, 3, 4}, nil, []int{0, 1, 2}, []int{1, 1, tc.k, tc.c}, true))
	g := tc.groupSize()
	windows := check(f.Reshape(check(f.Reshape(gather, tc.n*ho*wo, tc.k*tc.k*tc.c)), tc.n*ho*wo, tc.k*tc.k*tc.c/g, g))
	y := check(f.ReduceMax(windows, 1))
	outs := []compute.Value{y}
	if keepGather {
		outs = append(outs, gather)
	}
	if err := f.Return(outs, nil); err != nil {
		t.Fatal(err)
	}
	exec, err := builder.Compile()
	if err != nil {
		t.Fatalf("%+v", err)
	}
	return exec, y.(*gobackend.Node)
}

// reference is the pooling from its definition: each window's values (the
// padding's the fill) in tap order, Go's max folded over its groups.
func (tc poolCase) reference(x []float32) []float32 {
	ho, wo := tc.out()
	g := tc.groupSize()
	var out []float32
	for b := range tc.n {
		for y := range ho {
			for xx := range wo {
				var row []float32
				for i := range tc.k {
					for j := range tc.k {
						r, c := y*tc.stride+i-tc.pad, xx*tc.stride+j-tc.pad
						for ch := range tc.c {
							v := tc.fill
							if r >= 0 && c >= 0 && r < tc.h && c < tc.w {
								v = x[((b*tc.h+r)*tc.w+c)*tc.c+ch]
							}
							row = append(row, v)
						}
					}
				}
				acc := slices.Clone(row[:g])
				for at := g; at < len(row); at += g {
					for i := range acc {
						acc[i] = max(acc[i], row[at+i])
					}
				}
				out = append(out, acc...)
			}
		}
	}
	return out
}

// TestGatheredMax checks that a ReduceMax over max pooling's gathered
// windows reads the runs in place, and a −∞ padding under them unpadded,
// and that it gives bit for bit what the reduction of the gathered windows
// and the definition give (NaNs as NaNs): NaNs, infinities and zeros of
// both signs in x.
func TestGatheredMax(t *testing.T) {
	negInf := float32(math.Inf(-1))
	for _, tc := range []poolCase{
		{n: 2, h: 8, w: 8, c: 64, k: 3, stride: 2, pad: 1, fill: negInf},
		{n: 3, h: 7, w: 9, c: 48, k: 3, stride: 2, pad: 1, fill: negInf},
		{n: 2, h: 6, w: 6, c: 32, k: 3, stride: 1, pad: 1, fill: negInf},
		{n: 2, h: 5, w: 5, c: 35, k: 2, stride: 2, pad: 1, fill: negInf}, // vector tails; a window of padding and one value
		{n: 1, h: 5, w: 5, c: 32, k: 2, stride: 2, pad: 2, fill: negInf}, // windows of padding alone
		{n: 2, h: 6, w: 6, c: 16, k: 3, stride: 2, pad: 1, fill: negInf}, // runs too short to read unpadded
		{n: 2, h: 6, w: 6, c: 32, k: 3, stride: 2, pad: 1, fill: 0},      // not −∞: the padded map is read
		{n: 2, h: 6, w: 6, c: 32, k: 3, stride: 2, pad: 0, fill: negInf},
		{n: 2, h: 6, w: 6, c: 32, k: 3, stride: 2, pad: 1, fill: negInf, group: 48}, // groups across the runs: not fused
		{n: 2, h: 6, w: 6, c: 32, k: 3, stride: 2, pad: 1, fill: negInf, group: 16},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d/k%d/s%d/p%d/fill%g/group%d", tc.h, tc.w, tc.c, tc.k, tc.stride, tc.pad, tc.fill, tc.groupSize()), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.h), uint64(tc.c)))
			special := []float32{float32(math.NaN()), float32(math.Inf(1)), negInf, 0, float32(math.Copysign(0, -1))}
			x := make([]float32, tc.n*tc.h*tc.w*tc.c)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
				if rng.IntN(5) == 0 {
					x[i] = special[rng.IntN(len(special))]
				}
			}
			fused, node := tc.build(t, false)
			wantInput := compute.OpTypePad
			if tc.c%tc.groupSize() != 0 {
				wantInput = compute.OpTypeReshape
			} else if tc.pad == 0 {
				wantInput = compute.OpTypeParameter
			} else if tc.fill == negInf && tc.c >= 32 {
				wantInput = compute.OpTypeParameter // read unpadded
			}
			if got := node.Inputs[0].OpType; got != wantInput {
				t.Fatalf("ReduceMax reads %s, want %s", got, wantInput)
			}
			plain, plainNode := tc.build(t, true)
			if got := plainNode.Inputs[0].OpType; got != compute.OpTypeReshape {
				t.Fatalf("a Gather with a second use was fused: ReduceMax reads %s", got)
			}
			run := func(exec compute.Executable) []float32 {
				xb, err := backend.BufferFromFlatData(0, x, shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.c))
				if err != nil {
					t.Fatal(err)
				}
				outs, err := exec.Execute([]compute.Buffer{xb}, nil, 0)
				if err != nil {
					t.Fatalf("%+v", err)
				}
				return outs[0].(*gobackend.Buffer).Flat.([]float32)
			}
			got, want, def := run(fused), run(plain), tc.reference(x)
			for i := range want {
				isNaN := got[i] != got[i] && def[i] != def[i] // Go's max may give another NaN's bits
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) || (!isNaN && math.Float32bits(got[i]) != math.Float32bits(def[i])) {
					t.Fatalf("element %d: fused %g (%#x), reduction of the windows %g (%#x), definition %g", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]), def[i])
				}
			}
		})
	}
}
