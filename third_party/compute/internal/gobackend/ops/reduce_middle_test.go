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
		shape := shapes.Make(dtypes.Float32, a, b, c)
		exec := compileOnX(t, "ReduceMaxMiddle", shape, func(f *gobackend.Function, x compute.Value) (compute.Value, error) {
			return f.ReduceMax(x, 1)
		})
		got := runOnX[float32](t, exec, shape, in)
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
