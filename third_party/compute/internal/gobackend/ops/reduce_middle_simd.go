//go:build goexperiment.simd

package ops

import (
	"math"
	"simd"

	"github.com/gomlx/compute/dtypes"
)

// isMiddleMaxFloat32 tells whether a float32 ReduceMax over middle axes
// ([A, B, C] → [A, C]: max pooling's windows laid out by im2col) runs
// simdReduceMiddleMaxFloat32.
func isMiddleMaxFloat32(cfg ReduceConfig, dtype dtypes.DType) bool {
	return cfg.Pattern == ReduceMiddle && dtype == dtypes.Float32 && cfg.B > 1 && cfg.C > 0
}

// simdReduceMiddleMaxFloat32 is out[a, c] = max over b of in[a, b, c] with Go's
// max, as execReduceMaxGeneric computes it (same order, same results, NaN and
// signed zeros included), C elements at a time in vector registers.
func simdReduceMiddleMaxFloat32(in, out []float32, A, B, C int) {
	if B == 0 {
		for i := range out {
			out[i] = float32(math.Inf(-1))
		}
		return
	}
	vLen := simd.BroadcastFloat32s(0).Len()
	for a := range A {
		row, o := in[a*B*C:(a+1)*B*C], out[a*C:(a+1)*C]
		i := 0
		for ; i+vLen <= C; i += vLen {
			acc := simd.LoadFloat32s(row[i:])
			for b := 1; b < B; b++ {
				acc = maxFloat32s(acc, simd.LoadFloat32s(row[b*C+i:]))
			}
			acc.Store(o[i:])
		}
		if i < C {
			acc, _ := simd.LoadFloat32sPart(row[i:C])
			for b := 1; b < B; b++ {
				v, _ := simd.LoadFloat32sPart(row[b*C+i : (b+1)*C])
				acc = maxFloat32s(acc, v)
			}
			acc.StorePart(o[i:])
		}
	}
}

// maxFloat32s is Go's max(x, y) lane by lane: NaN if x or y is NaN, +0 for
// a +0 and a -0, else the larger. The vector Max (VMAXPS) returns y for a NaN
// x and for equal zeros.
func maxFloat32s(x, y simd.Float32s) simd.Float32s {
	r := x.IfElse(x.Greater(y), y)                                       // y if y is NaN
	r = x.ToBits().And(y.ToBits()).BitsToFloat32().IfElse(x.Equal(y), r) // +0 from ±0; else x = y
	return x.IfElse(x.NotEqual(x), r)                                    // x is NaN
}
