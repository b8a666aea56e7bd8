// Patch (lorafit): a product whose lhs contracting axis leads moves only the lhs.

package dot_test

import (
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/support/testutil"
)

// TestDotGeneralLeadingContraction checks xᵀ·y for x [K,M] and y [K,N]
// contracted on their first axes (a weight gradient), the layout where only
// the lhs is transposed, against sums written out.
func TestDotGeneralLeadingContraction(t *testing.T) {
	const k, m, n = 37, 5, 70 // n spans more than one kernel strip
	x, y := make([][]float32, k), make([][]float32, k)
	for i := range k {
		x[i], y[i] = make([]float32, m), make([]float32, n)
		for j := range m {
			x[i][j] = float32((i*7+j*3)%11) - 5
		}
		for j := range n {
			y[i][j] = float32((i*5+j)%13) - 6
		}
	}
	got, err := testutil.Exec1(backend, []any{x, y}, func(f compute.Function, params []compute.Value) (compute.Value, error) {
		return f.DotGeneral(params[0], []int{0}, nil, params[1], []int{0}, nil, compute.DotGeneralConfig{})
	})
	if err != nil {
		t.Fatal(err)
	}
	out := got.([][]float32)
	for a := range m {
		for b := range n {
			var want float32
			for i := range k {
				want += x[i][a] * y[i][b]
			}
			if out[a][b] != want {
				t.Fatalf("out[%d][%d] = %g, want %g", a, b, out[a][b], want)
			}
		}
	}
}
