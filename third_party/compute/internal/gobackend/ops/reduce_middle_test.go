package ops_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// TestReduceMaxMiddle checks a float32 ReduceMax over a middle axis ([A, B,
// C] → [A, C], max pooling's windows laid out by im2col) against Go's max
// applied in order, bit for bit: NaNs propagate from any position, +0 wins
// over -0 either way round, infinities and the vector tails (C not a
// multiple of the vector length) included.
func TestReduceMaxMiddle(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	specials := []float32{float32(math.NaN()), 0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1))}
	for _, tc := range []struct {
		dims         [3]int
		specialsOnly bool // so that ±0 pairs decide the max
	}{{dims: [3]int{1, 2, 16}}, {dims: [3]int{7, 9, 64}}, {dims: [3]int{5, 9, 37}}, {dims: [3]int{3, 4, 5}},
		{dims: [3]int{2, 3, 129}}, {dims: [3]int{33, 2, 8}}, {dims: [3]int{9, 9, 40}, specialsOnly: true}} {
		dims := tc.dims
		a, b, c := dims[0], dims[1], dims[2]
		in := make([]float32, a*b*c)
		for i := range in {
			if tc.specialsOnly || rng.IntN(6) == 0 {
				in[i] = specials[rng.IntN(len(specials))]
			} else {
				in[i] = float32(rng.NormFloat64())
			}
		}
		want := make([]float32, a*c)
		for ai := range a {
			for ci := range c {
				m := in[ai*b*c+ci]
				for bi := 1; bi < b; bi++ {
					m = max(m, in[(ai*b+bi)*c+ci])
				}
				want[ai*c+ci] = m
			}
		}
		builder := backend.Builder("ReduceMaxMiddle").(*gobackend.Builder)
		f := builder.Main().(*gobackend.Function)
		shape := shapes.Make(dtypes.Float32, a, b, c)
		x, err := f.Parameter("x", shape, nil)
		if err != nil {
			t.Fatal(err)
		}
		y, err := f.ReduceMax(x, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Return([]compute.Value{y}, nil); err != nil {
			t.Fatal(err)
		}
		exec, err := builder.Compile()
		if err != nil {
			t.Fatalf("%+v", err)
		}
		xb, err := backend.BufferFromFlatData(0, in, shape)
		if err != nil {
			t.Fatal(err)
		}
		outs, err := exec.Execute([]compute.Buffer{xb}, nil, 0)
		if err != nil {
			t.Fatalf("%+v", err)
		}
		got := outs[0].(*gobackend.Buffer).Flat.([]float32)
		for i := range want {
			g, w := got[i], want[i]
			if g != g && w != w {
				continue
			}
			if math.Float32bits(g) != math.Float32bits(w) {
				t.Fatalf("%v, element %d: got %g (%#x), Go's max gives %g (%#x)", dims, i, g, math.Float32bits(g), w, math.Float32bits(w))
			}
		}
	}
}
