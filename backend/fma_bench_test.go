//go:build amd64 && goexperiment.simd

package backend

import (
	"simd/archsimd"
	"testing"
)

// BenchmarkFMAPeak measures one core's float32 fused multiply-add peak, the
// ceiling of every matmul kernel: 12 independent chains of 16-lane FMAs
// (each waits on its own last result, so the pipes, not the latency, are
// the limit), in GFLOP/s. AVX-512 only; compare with BenchmarkMatMul and
// the kernel's own BenchmarkMicrokernels in third_party/compute.
//
//	go test -run '^$' -bench FMAPeak ./backend
func BenchmarkFMAPeak(b *testing.B) {
	if !archsimd.X86.AVX512() {
		b.Skip("no AVX-512")
	}
	const steps = 1 << 20
	for b.Loop() {
		fmaSink += fmaChains(steps)
	}
	b.ReportMetric(float64(b.N)*steps*12*16*2/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// fmaSink keeps the chains' results alive.
var fmaSink float32

// fmaChains runs 12 chains of steps FMAs and returns one lane of their sum.
// The chains are written out: kept in an array they live in memory, not in
// registers, and run at a sixth of the speed.
func fmaChains(steps int) float32 {
	x := archsimd.BroadcastFloat32x16(0.9999999)
	y := archsimd.BroadcastFloat32x16(1e-7)
	a0 := archsimd.BroadcastFloat32x16(1)
	a1 := archsimd.BroadcastFloat32x16(2)
	a2 := archsimd.BroadcastFloat32x16(3)
	a3 := archsimd.BroadcastFloat32x16(4)
	a4 := archsimd.BroadcastFloat32x16(5)
	a5 := archsimd.BroadcastFloat32x16(6)
	a6 := archsimd.BroadcastFloat32x16(7)
	a7 := archsimd.BroadcastFloat32x16(8)
	a8 := archsimd.BroadcastFloat32x16(9)
	a9 := archsimd.BroadcastFloat32x16(10)
	a10 := archsimd.BroadcastFloat32x16(11)
	a11 := archsimd.BroadcastFloat32x16(12)
	for range steps {
		a0 = a0.MulAdd(x, y)
		a1 = a1.MulAdd(x, y)
		a2 = a2.MulAdd(x, y)
		a3 = a3.MulAdd(x, y)
		a4 = a4.MulAdd(x, y)
		a5 = a5.MulAdd(x, y)
		a6 = a6.MulAdd(x, y)
		a7 = a7.MulAdd(x, y)
		a8 = a8.MulAdd(x, y)
		a9 = a9.MulAdd(x, y)
		a10 = a10.MulAdd(x, y)
		a11 = a11.MulAdd(x, y)
	}
	var out [16]float32
	a0.Add(a1).Add(a2).Add(a3).Add(a4).Add(a5).Add(a6).Add(a7).Add(a8).Add(a9).Add(a10).Add(a11).Store(out[:])
	return out[0]
}
