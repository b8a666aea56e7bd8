package ops_test

import (
	"math"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// TestPadZeroGaps checks a zero Pad with positive Start/End only, which writes
// zeros only where the operand is not, on an output buffer recycled from the
// pool full of NaNs: every padded value must be +0 and every other one the
// operand's, on conv-like and other paddings.
func TestPadZeroGaps(t *testing.T) {
	for _, tc := range []struct {
		dims []int
		pads []compute.PadAxis
	}{
		{[]int{2, 5, 5, 8}, []compute.PadAxis{{}, {Start: 1, End: 1}, {Start: 1, End: 1}, {}}}, // a conv's input
		{[]int{3, 4}, []compute.PadAxis{{Start: 2}, {End: 3}}},
		{[]int{7}, []compute.PadAxis{{Start: 1, End: 2}}},
		{[]int{2, 3, 4}, []compute.PadAxis{{Start: 1, End: 1}, {}, {Start: 0, End: 2}}},
		{[]int{2, 3, 4}, []compute.PadAxis{{}, {}, {}}},          // no padding at all
		{[]int{0, 3}, []compute.PadAxis{{Start: 1, End: 1}, {}}}, // nothing but padding
	} {
		shape := shapes.Make(dtypes.Float32, tc.dims...)
		in := make([]float32, shape.Size())
		for i := range in {
			in[i] = float32(i + 1)
		}
		outDims := make([]int, len(tc.dims))
		for a, d := range tc.dims {
			outDims[a] = d + tc.pads[a].Start + tc.pads[a].End
		}
		outShape := shapes.Make(dtypes.Float32, outDims...)
		exec := compileOnX(t, "PadZeroGaps", shape, func(f *gobackend.Function, x compute.Value) (compute.Value, error) {
			zero, err := f.Constant([]float32{0})
			if err != nil {
				return nil, err
			}
			return f.Pad(x, zero, tc.pads...)
		})
		for range 3 {
			// Leave a buffer of the output's size full of NaNs in the pool.
			dirty, err := backend.GetBuffer(outShape)
			if err != nil {
				t.Fatal(err)
			}
			for i := range dirty.Flat.([]float32) {
				dirty.Flat.([]float32)[i] = float32(math.NaN())
			}
			backend.PutBuffer(dirty)
			got := runOnX[float32](t, exec, shape, in)
			idx := make([]int, len(outDims))
			for i, v := range got {
				src, inside := 0, true
				for a := range outDims {
					p := idx[a] - tc.pads[a].Start
					if p < 0 || p >= tc.dims[a] {
						inside = false
					}
					src = src*tc.dims[a] + p
				}
				want := float32(0)
				if inside {
					want = in[src]
				}
				if math.Float32bits(v) != math.Float32bits(want) {
					t.Fatalf("%v padded by %v: output %d (index %v) is %g, want %g", tc.dims, tc.pads, i, idx, v, want)
				}
				for a := len(outDims) - 1; a >= 0; a-- {
					if idx[a]++; idx[a] < outDims[a] {
						break
					}
					idx[a] = 0
				}
			}
		}
	}
}
