// Patch (lorafit): a product whose lhs contracting axis leads moves only the lhs,
// or is taken the other way round where that moves fewer values.

package dot_test

import (
	"fmt"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/shapes"
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

// TestDotGeneralSwappedOperands checks products whose cheaper way is the
// other way round, (rhs·lhs)ᵀ (dot.SwapOperands): a wide operand contracted
// on its leading axis with a narrow one (LoRA B's weight gradient dYᵀ·h),
// with a batch axis, and with two lhs cross axes, against sums written out.
// The product's transpose back puts each value where the lhs·rhs order
// says; a wrong permutation moves values.
func TestDotGeneralSwappedOperands(t *testing.T) {
	const b, k, m, n = 3, 37, 70, 5
	val := func(i, j, l int) float32 { return float32((i*7+j*3+l*5)%11) - 5 }
	// xᵀ·y for x [K, M] and y [K, N].
	x2 := make([][]float32, k)
	y2 := make([][]float32, k)
	for i := range k {
		x2[i], y2[i] = make([]float32, m), make([]float32, n)
		for j := range m {
			x2[i][j] = val(i, j, 0)
		}
		for j := range n {
			y2[i][j] = val(i, 0, j) + 1
		}
	}
	// The same with a batch axis: x [B, K, M], y [B, K, N].
	x3, y3 := make([][][]float32, b), make([][][]float32, b)
	for a := range b {
		x3[a], y3[a] = make([][]float32, k), make([][]float32, k)
		for i := range k {
			x3[a][i], y3[a][i] = make([]float32, m), make([]float32, n)
			for j := range m {
				x3[a][i][j] = val(i+a, j, a)
			}
			for j := range n {
				y3[a][i][j] = val(i, a, j) - 1
			}
		}
	}
	// Two lhs cross axes: x [K, 7, 10] (M = 70), y [K, N].
	xm := make([][][]float32, k)
	for i := range k {
		xm[i] = make([][]float32, 7)
		for p := range 7 {
			xm[i][p] = make([]float32, 10)
			for q := range 10 {
				xm[i][p][q] = x2[i][p*10+q]
			}
		}
	}

	// Two rhs cross axes around the contracting one: x [10, 10], y [2, 10, 3]
	// contracted on their axes 0 and 1. Both must move, y in either order.
	xs, ys := make([][]float32, 10), make([][][]float32, 2)
	for i := range 10 {
		xs[i] = make([]float32, 10)
		for j := range 10 {
			xs[i][j] = val(i, j, 1)
		}
	}
	for p := range 2 {
		ys[p] = make([][]float32, 10)
		for i := range 10 {
			ys[p][i] = make([]float32, 3)
			for q := range 3 {
				ys[p][i][q] = val(p, i, q) + 2
			}
		}
	}

	for _, tc := range []struct {
		name           string
		x, y           any
		xc, xb, yc, yb []int
		xs, ys         shapes.Shape
		check          func(out any) error
	}{
		{"xT.y", x2, y2, []int{0}, nil, []int{0}, nil,
			shapes.Make(dtypes.Float32, k, m), shapes.Make(dtypes.Float32, k, n),
			func(out any) error {
				o := out.([][]float32)
				for p := range m {
					for q := range n {
						var want float32
						for i := range k {
							want += x2[i][p] * y2[i][q]
						}
						if o[p][q] != want {
							return fmt.Errorf("out[%d][%d] = %g, want %g", p, q, o[p][q], want)
						}
					}
				}
				return nil
			}},
		{"batched", x3, y3, []int{1}, []int{0}, []int{1}, []int{0},
			shapes.Make(dtypes.Float32, b, k, m), shapes.Make(dtypes.Float32, b, k, n),
			func(out any) error {
				o := out.([][][]float32)
				for a := range b {
					for p := range m {
						for q := range n {
							var want float32
							for i := range k {
								want += x3[a][i][p] * y3[a][i][q]
							}
							if o[a][p][q] != want {
								return fmt.Errorf("out[%d][%d][%d] = %g, want %g", a, p, q, o[a][p][q], want)
							}
						}
					}
				}
				return nil
			}},
		{"two lhs cross axes", xm, y2, []int{0}, nil, []int{0}, nil,
			shapes.Make(dtypes.Float32, k, 7, 10), shapes.Make(dtypes.Float32, k, n),
			func(out any) error {
				o := out.([][][]float32)
				for p := range 7 {
					for r := range 10 {
						for q := range n {
							var want float32
							for i := range k {
								want += xm[i][p][r] * y2[i][q]
							}
							if o[p][r][q] != want {
								return fmt.Errorf("out[%d][%d][%d] = %g, want %g", p, r, q, o[p][r][q], want)
							}
						}
					}
				}
				return nil
			}},
		{"two rhs cross axes", xs, ys, []int{0}, nil, []int{1}, nil,
			shapes.Make(dtypes.Float32, 10, 10), shapes.Make(dtypes.Float32, 2, 10, 3),
			func(out any) error {
				o := out.([][][]float32)
				for p := range 10 {
					for r := range 2 {
						for q := range 3 {
							var want float32
							for i := range 10 {
								want += xs[i][p] * ys[r][i][q]
							}
							if o[p][r][q] != want {
								return fmt.Errorf("out[%d][%d][%d] = %g, want %g", p, r, q, o[p][r][q], want)
							}
						}
					}
				}
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !dot.SwapOperands(tc.xs, tc.xc, tc.xb, tc.ys, tc.yc, tc.yb) {
				t.Fatalf("SwapOperands is false: the product would be taken as written")
			}
			if dot.SwapOperands(tc.ys, tc.yc, tc.yb, tc.xs, tc.xc, tc.xb) {
				t.Fatalf("SwapOperands is true the other way round too: the swap would swap back")
			}
			got, err := testutil.Exec1(backend, []any{tc.x, tc.y}, func(f compute.Function, params []compute.Value) (compute.Value, error) {
				return f.DotGeneral(params[0], tc.xc, tc.xb, params[1], tc.yc, tc.yb, compute.DotGeneralConfig{})
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(got); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Products the kernels take as they are, or where moving the wide
	// operand is cheaper, are not swapped.
	if dot.SwapOperands(shapes.Make(dtypes.Float32, m, k), []int{1}, nil, shapes.Make(dtypes.Float32, k, n), []int{0}, nil) {
		t.Error("SwapOperands swaps a plain x·y")
	}
	if dot.SwapOperands(shapes.Make(dtypes.Float32, k, n), []int{0}, nil, shapes.Make(dtypes.Float32, k, m), []int{0}, nil) {
		t.Error("SwapOperands swaps xᵀ·y for a narrow x")
	}
	if dot.SwapOperands(shapes.Make(dtypes.Float32, 4, m), []int{0}, nil, shapes.Make(dtypes.Float32, 4, k), []int{0}, nil) {
		t.Error("SwapOperands swaps xᵀ·y where transposing the product copies more than x")
	}
}

// TestDotGeneralWeightReadInPlace checks x·wᵀ for 32 rows x and a larger w
// that is not a constant (a trainable fc's forward pass), taken as (w·xᵀ)ᵀ
// so the kernels read w in place (dot.ReadWeightInPlace), against sums
// written out; and that constants, wide x, small w and the swapped product
// itself are left as they are.
func TestDotGeneralWeightReadInPlace(t *testing.T) {
	const m, k, n = 32, 100, 256
	x, w := make([][]float32, m), make([][]float32, n)
	for i := range m {
		x[i] = make([]float32, k)
		for j := range k {
			x[i][j] = float32((i*7+j*3)%11) - 5
		}
	}
	for i := range n {
		w[i] = make([]float32, k)
		for j := range k {
			w[i][j] = float32((i*5+j)%13) - 6
		}
	}
	xs, ws := shapes.Make(dtypes.Float32, m, k), shapes.Make(dtypes.Float32, n, k)
	if !dot.ReadWeightInPlace(xs, []int{1}, nil, ws, []int{1}, nil, false) {
		t.Fatal("ReadWeightInPlace is false for 32 rows and a 256-row weight")
	}
	for _, c := range []struct {
		what     string
		xs, ws   shapes.Shape
		constant bool
	}{
		{"a constant weight (packed once)", xs, ws, true},
		{"48 rows (not whole strips of the swapped rhs)", shapes.Make(dtypes.Float32, 48, k), ws, false},
		{"a weight under 4× the rows", xs, shapes.Make(dtypes.Float32, 120, k), false},
		{"the swapped product w·xᵀ", ws, xs, false},
	} {
		if dot.ReadWeightInPlace(c.xs, []int{1}, nil, c.ws, []int{1}, nil, c.constant) {
			t.Errorf("ReadWeightInPlace is true for %s", c.what)
		}
	}
	got, err := testutil.Exec1(backend, []any{x, w}, func(f compute.Function, params []compute.Value) (compute.Value, error) {
		return f.DotGeneral(params[0], []int{1}, nil, params[1], []int{1}, nil, compute.DotGeneralConfig{})
	})
	if err != nil {
		t.Fatal(err)
	}
	out := got.([][]float32)
	for a := range m {
		for b := range n {
			var want float32
			for i := range k {
				want += x[a][i] * w[b][i]
			}
			if out[a][b] != want {
				t.Fatalf("out[%d][%d] = %g, want %g", a, b, out[a][b], want)
			}
		}
	}
}
