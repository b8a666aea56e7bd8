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
				builder := backend.Builder("LessOrEqual").(*gobackend.Builder)
				f := builder.Main().(*gobackend.Function)
				shape := shapes.Make(dtypes.Float32, n)
				xn, err := f.Parameter("x", shape, nil)
				if err != nil {
					t.Fatal(err)
				}
				cn, err := f.Constant([]float32{c})
				if err != nil {
					t.Fatal(err)
				}
				operands := []compute.Value{xn, cn}
				if scalarLeft {
					operands = []compute.Value{cn, xn}
				}
				y, err := f.LessOrEqual(operands[0], operands[1])
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
				xb, err := backend.BufferFromFlatData(0, x, shape)
				if err != nil {
					t.Fatal(err)
				}
				outs, err := exec.Execute([]compute.Buffer{xb}, nil, 0)
				if err != nil {
					t.Fatalf("%+v", err)
				}
				got := outs[0].(*gobackend.Buffer).Flat.([]bool)
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
