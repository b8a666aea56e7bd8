// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx2

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul/matmultest"
)

func TestFloat32KernelRows(t *testing.T) {
	params := AVX2ParamsFloat32
	params.LHSL1KernelRows = 6
	for _, tc := range []struct{ m, want int }{
		{1568, 6}, {196, 6}, {64, 6}, {96, 6}, {200, 6}, {384, 6}, // little or no padding
		{32, 4}, {16, 4}, {8, 4}, {7, 4}, // 6-row strips would pad 4/32, 2/16, 4/8, 5 of 7
	} {
		if got := float32KernelRows(params, tc.m); got != tc.want {
			t.Errorf("float32KernelRows(%d rows) = %d, want %d", tc.m, got, tc.want)
		}
	}
	params.LHSL1KernelRows = 4
	if got := float32KernelRows(params, 1568); got != 4 {
		t.Errorf("float32KernelRows with the 4x16 kernel chosen = %d, want 4", got)
	}
}

func TestFloat32PanelK(t *testing.T) {
	params := AVX2ParamsFloat32
	params.PanelContractingSize, params.RHSPanelCrossSize, params.RHSL1KernelCols = 128, 512, 16
	defer func(saved int) { float32RHSPanelBytes = saved }(float32RHSPanelBytes)
	for _, tc := range []struct{ budget, k, n, want int }{
		{256 << 10, 576, 64, 576},    // a 3x3 conv with 64 filters: one panel, one pass over the output
		{256 << 10, 1152, 128, 384},  // 512 fits; in 3 equal panels
		{256 << 10, 2304, 256, 256},  // 9 panels of 256
		{256 << 10, 4608, 2048, 128}, // the RHS panel is Nc=512 wide: the minimum
		{256 << 10, 100, 8, 100},     // a strip is 16 wide
		{256 << 10, 1153, 2050, 116}, // 10 panels, the last one shorter
		{256 << 10, 0, 64, 1},
		{0, 576, 64, 128}, // fixed
	} {
		float32RHSPanelBytes = tc.budget
		if got := float32PanelK(params, tc.k, tc.n); got != tc.want {
			t.Errorf("float32PanelK(k=%d, n=%d) with %d bytes = %d, want %d", tc.k, tc.n, tc.budget, got, tc.want)
		}
	}
}

// TestAVX2LargeFloat32Exact checks whole packed Float32 matmuls, on the backend's workers,
// against a triple loop: the contracting panels float32PanelK picks, the kernel
// float32KernelRows picks (6 rows; 4 for 32 and 7), odd sizes, partial strips and panels.
// Values are small integers, so every summation order is exact.
func TestAVX2LargeFloat32Exact(t *testing.T) {
	matmultest.RunLargeFloat32Exact(t, avx2LargeFloat32, [][3]int{{37, 1153, 2050}, {50, 577, 64}, {130, 2304, 256}, {7, 300, 33}, {64, 300, 40}, {32, 70, 16}})
}

// TestAVX2LargeSlice runs one matrix slice with the 4x16 and the 6x16 kernels at fixed block
// sizes, odd ones included, over row ranges that start and end mid-panel; rows outside the
// range must be left alone.
func TestAVX2LargeSlice(t *testing.T) {
	rows := []int{4}
	if AVX2UseAsm {
		rows = append(rows, 6)
	}
	for _, mr := range rows {
		for _, blocks := range []struct{ kc, mc, nc int }{{16, 12, 32}, {17, 24, 48}, {128, 48, 512}} {
			params := AVX2ParamsFloat32
			params.LHSL1KernelRows = mr
			params.PanelContractingSize, params.LHSPanelCrossSize, params.RHSPanelCrossSize = blocks.kc, blocks.mc, blocks.nc
			for _, layout := range []dot.Layout{dot.LayoutNonTransposed, dot.LayoutTransposed} {
				for _, m := range []int{1, 4, 7, 13, 50} {
					for _, n := range []int{16, 17, 40, 64} {
						for _, k := range []int{1, 3, 16, 17, 40} {
							for _, rows := range [][2]int{{0, m}, {m / 3, m - m/5}} {
								name := fmt.Sprintf("Mr%d/Kc%d/%s/%dx%dx%d/rows%d-%d", mr, blocks.kc, layout, m, n, k, rows[0], rows[1])
								matmultest.CheckLargeSliceFloat32(t, name, avx2LargeMatrixSliceFloat32, params, layout, m, n, k, rows[0], rows[1])
							}
						}
					}
				}
			}
		}
	}
}

// BenchmarkFloat32Variants times whole Float32 matmuls on the backend's workers as they were
// (Kc fixed at 128, the 4x16 kernel), with the per-product Kc, and with the 6x16 kernel too
// (the default), at conv shapes of ResNet-50. Each iteration picks a variant at random, so
// the machine's drift falls on all of them alike; each variant has its own cached RHS
// panels (their layout depends on Kc). GFLOP/s per variant, the metrics named so that they
// sort in the variants' order:
//
//	go test -run '^$' -bench Float32Variants -benchtime 200x ./internal/gobackend/dot/matmul/avx2/
func BenchmarkFloat32Variants(b *testing.B) {
	if !AVX2UseAsm {
		b.Skip("the 6x16 kernel is assembly only")
	}
	be, err := gobackend.New("")
	if err != nil {
		b.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	variants := []struct {
		name       string
		panelBytes int // float32RHSPanelBytes: 0 keeps Kc at 128
		rows       int
	}{{"a_fixedKc_4x16", 0, 4}, {"b_perProductKc_4x16", 256 << 10, 4}, {"c_perProductKc_6x16", 256 << 10, 6}}
	defer func(bytes, rows int) {
		float32RHSPanelBytes, AVX2ParamsFloat32.LHSL1KernelRows = bytes, rows
	}(float32RHSPanelBytes, AVX2ParamsFloat32.LHSL1KernelRows)
	for _, sz := range []struct{ m, k, n int }{{25088, 576, 64}, {6272, 576, 64}, {1568, 576, 64}, {128, 2304, 256}} {
		lhs := make([]float32, sz.m*sz.k)
		rhs := make([]float32, sz.k*sz.n)
		out := make([]float32, sz.m*sz.n)
		for i := range lhs {
			lhs[i] = float32(i%7) * 0.01
		}
		for i := range rhs {
			rhs[i] = float32(i%5) * 0.01
		}
		b.Run(fmt.Sprintf("%dx%dx%d", sz.m, sz.k, sz.n), func(b *testing.B) {
			nodeData := make([]*dot.NodeData, len(variants))
			for i := range nodeData {
				nodeData[i] = &dot.NodeData{PackedRHSCache: &dot.PackedMatrixCache{}}
			}
			seconds := make([]float64, len(variants))
			calls := make([]int, len(variants))
			for i := 0; i < b.N; i++ {
				v := rand.IntN(len(variants))
				float32RHSPanelBytes, AVX2ParamsFloat32.LHSL1KernelRows = variants[v].panelBytes, variants[v].rows
				start := time.Now()
				avx2LargeFloat32(backend, dot.LayoutNonTransposed, lhs, rhs, 1, sz.m, sz.n, sz.k, out, nodeData[v])
				seconds[v] += time.Since(start).Seconds()
				calls[v]++
			}
			flops := float64(2 * sz.m * sz.k * sz.n)
			for v, variant := range variants {
				if calls[v] > 0 {
					b.ReportMetric(flops*float64(calls[v])/seconds[v]/1e9, variant.name+"_GFLOP/s")
				}
			}
		})
	}
}
