package ops_test

import (
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// TestSliceRuns checks Slice, which copies contiguous runs where its
// innermost axes allow and element by element elsewhere, against the
// definition out[i] = in[start + i·stride] per axis, on slices with and
// without runs: a padded image cut back (Pad's VJP), partial and strided
// inner axes, whole tensors, short runs.
func TestSliceRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct {
		dims, starts, limits, strides []int
	}{
		{[]int{2, 9, 9, 16}, []int{0, 1, 1, 0}, []int{2, 8, 8, 16}, []int{1, 1, 1, 1}}, // un-padding: runs of a row
		{[]int{3, 6, 40}, []int{1, 0, 0}, []int{3, 6, 40}, []int{1, 1, 1}},             // whole inner axes: one run per outer index
		{[]int{4, 5, 33}, []int{0, 1, 3}, []int{4, 5, 30}, []int{1, 2, 1}},             // partial innermost, strided middle
		{[]int{4, 5, 33}, []int{0, 0, 1}, []int{4, 5, 33}, []int{1, 1, 2}},             // strided innermost: no runs
		{[]int{2, 3, 8}, []int{0, 1, 0}, []int{2, 3, 8}, []int{1, 1, 1}},               // runs of 16 across two rows
		{[]int{5, 7}, []int{1, 2}, []int{4, 5}, []int{1, 1}},                           // short runs
		{[]int{64}, []int{3}, []int{60}, []int{1}},
		{[]int{2, 3, 4, 5, 6}, []int{1, 0, 1, 0, 0}, []int{2, 3, 4, 5, 6}, []int{1, 2, 1, 1, 1}},
	} {
		size := 1
		for _, d := range tc.dims {
			size *= d
		}
		in := make([]float32, size)
		for i := range in {
			in[i] = rng.Float32()
		}
		shape := shapes.Make(dtypes.Float32, tc.dims...)
		exec := compileOnX(t, "Slice", shape, func(f *gobackend.Function, x compute.Value) (compute.Value, error) {
			return f.Slice(x, tc.starts, tc.limits, tc.strides)
		})
		got := runOnX[float32](t, exec, shape, in)

		rank := len(tc.dims)
		outDims := make([]int, rank)
		want := 1
		for a := range rank {
			outDims[a] = (tc.limits[a] - tc.starts[a] + tc.strides[a] - 1) / tc.strides[a]
			want *= outDims[a]
		}
		if len(got) != want {
			t.Fatalf("%v: %d values, want %d", tc, len(got), want)
		}
		idx := make([]int, rank)
		for i := range got {
			flat := 0
			for a := range rank {
				flat = flat*tc.dims[a] + tc.starts[a] + idx[a]*tc.strides[a]
			}
			if got[i] != in[flat] {
				t.Fatalf("%v: output %d (index %v) is %g, want input %d: %g", tc, i, idx, got[i], flat, in[flat])
			}
			for a := rank - 1; a >= 0; a-- {
				if idx[a]++; idx[a] < outDims[a] {
					break
				}
				idx[a] = 0
			}
		}
	}
}
