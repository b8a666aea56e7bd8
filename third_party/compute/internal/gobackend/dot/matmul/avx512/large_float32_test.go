// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx512

import (
	"fmt"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul/matmultest"
)

// TestAVX512LargeFloat32Exact checks whole packed Float32 matmuls, on the backend's
// workers, against a triple loop: odd sizes, several strips of rows and of columns in a
// panel (the kernel walks column strips outside, row strips inside), partial strips,
// panels and contracting panels, both layouts, RHS panels packed per call and cached.
func TestAVX512LargeFloat32Exact(t *testing.T) {
	if !gobackend.IsAVX512Allowed {
		t.Skip("AVX512 is not supported on this machine")
	}
	matmultest.RunLargeFloat32Exact(t, avx512LargeFloat32, [][3]int{{37, 1153, 2050}, {50, 577, 64}, {130, 2304, 256}, {7, 300, 33}, {64, 300, 40}, {32, 70, 1000}})
}

// TestAVX512LargeSlice runs one matrix slice at fixed block sizes, odd ones included,
// over row ranges that start and end mid-panel; rows outside the range must be left alone.
func TestAVX512LargeSlice(t *testing.T) {
	if !gobackend.IsAVX512Allowed {
		t.Skip("AVX512 is not supported on this machine")
	}
	for _, blocks := range []struct{ kc, mc, nc int }{{16, 16, 64}, {17, 24, 96}, {192, 32, 512}} {
		params := AVX512ParamsFloat32
		params.PanelContractingSize, params.LHSPanelCrossSize, params.RHSPanelCrossSize = blocks.kc, blocks.mc, blocks.nc
		for _, layout := range []dot.Layout{dot.LayoutNonTransposed, dot.LayoutTransposed} {
			for _, m := range []int{1, 8, 13, 50} {
				for _, n := range []int{32, 33, 70, 128} {
					for _, k := range []int{1, 3, 16, 17, 40} {
						for _, rows := range [][2]int{{0, m}, {m / 3, m - m/5}} {
							name := fmt.Sprintf("Kc%d/Mc%d/Nc%d/%s/%dx%dx%d/rows%d-%d", blocks.kc, blocks.mc, blocks.nc, layout, m, n, k, rows[0], rows[1])
							matmultest.CheckLargeSliceFloat32(t, name, avx512LargeMatrixSliceFloat32, params, layout, m, n, k, rows[0], rows[1])
						}
					}
				}
			}
		}
	}
}
