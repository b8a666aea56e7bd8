//go:build goexperiment.simd

package ops

import "simd"

// maxInto sets acc[i] = max(acc[i], v[i]) with Go's max, in vector
// registers, the tail too (as simdReduceMiddleMaxFloat32: Go's scalar max
// gives other NaN bits).
func maxInto(acc, v []float32) {
	vLen := simd.BroadcastFloat32s(0).Len()
	i := 0
	for ; i+vLen <= len(acc); i += vLen {
		maxFloat32s(simd.LoadFloat32s(acc[i:]), simd.LoadFloat32s(v[i:])).Store(acc[i:])
	}
	if i < len(acc) {
		a, _ := simd.LoadFloat32sPart(acc[i:])
		b, _ := simd.LoadFloat32sPart(v[i:len(acc)])
		maxFloat32s(a, b).StorePart(acc[i:])
	}
}
