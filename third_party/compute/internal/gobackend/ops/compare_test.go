package ops_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// TestLessOrEqualScalar checks float32 x ≤ c against Go's comparison, with
// c a scalar on either side (the vector path takes x ≤ c), NaNs, signed
// zeros and infinities, and lengths with and without a vector tail.
func TestLessOrEqualScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	specials := []float32{float32(math.NaN()), 0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1))}
	for _, n := range []int{1, 15, 16, 17, 100, 4099} {
		for _, c := range []float32{0, -0.5, float32(math.NaN())} {
			for _, scalarLeft := range []bool{false, true} {
				x := make([]float32, n)
				for i := range x {
					if rng.IntN(5) == 0 {
						x[i] = specials[rng.IntN(len(specials))]
					} else {
						x[i] = float32(rng.NormFloat64())
					}
				}
				shape := shapes.Make(dtypes.Float32, n)
				exec := compileOnX(t, "LessOrEqual", shape, func(f *gobackend.Function, xn compute.Value) (compute.Value, error) {
					cn, err := f.Constant([]float32{c})
					if err != nil {
						return nil, err
					}
					if scalarLeft {
						return f.LessOrEqual(cn, xn)
					}
					return f.LessOrEqual(xn, cn)
				})
				got := runOnX[bool](t, exec, shape, x)
				for i, v := range x {
					want := v <= c
					if scalarLeft {
						want = c <= v
					}
					if got[i] != want || *(*uint8)(unsafe.Pointer(&got[i])) > 1 {
						t.Fatalf("n=%d c=%g scalar left %v: element %d (%g): got %v, want %v", n, c, scalarLeft, i, v, got[i], want)
					}
				}
			}
		}
	}
}
