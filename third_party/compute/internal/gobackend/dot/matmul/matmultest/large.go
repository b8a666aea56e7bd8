// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package matmultest

import (
	"fmt"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul"
)

// ExactFloat32Problem is an m×k LHS, a k×n RHS ([n, k] when transposed) and their
// product. The values are small integers, so every summation order gives the same,
// exact sums: a packed matmul must match want bit for bit.
func ExactFloat32Problem(layout dot.Layout, m, k, n int) (lhs, rhs, want []float32) {
	lhs = make([]float32, m*k)
	for i := range lhs {
		lhs[i] = float32(i%13 - 6)
	}
	rhs = make([]float32, k*n)
	for i := range rhs {
		rhs[i] = float32(i%17 - 8)
	}
	want = make([]float32, m*n)
	for r := range m {
		for c := range n {
			var sum float32
			for i := range k {
				if layout == dot.LayoutTransposed {
					sum += lhs[r*k+i] * rhs[c*k+i]
				} else {
					sum += lhs[r*k+i] * rhs[i*n+c]
				}
			}
			want[r*n+c] = sum
		}
	}
	return lhs, rhs, want
}

// CompareExact fails t at the first element of the m×n output got that differs from want.
func CompareExact(t *testing.T, name string, got, want []float32, n int) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: output[%d, %d] = %v, want %v", name, i/n, i%n, got[i], want[i])
		}
	}
}

// LargeFloat32Fn is the signature of a SIMD package's whole Float32 packed matmul.
type LargeFloat32Fn func(backend *gobackend.Backend, layout dot.Layout, lhs, rhs []float32,
	batchSize, lhsCrossSize, rhsCrossSize, contractingSize int, output []float32, nodeData *dot.NodeData)

// RunLargeFloat32Exact runs large on the backend's workers for each m×k by k×n shape,
// both layouts, with the RHS packed per call and cached (run twice: the second time from
// the cache), and checks every output bit for bit against ExactFloat32Problem.
func RunLargeFloat32Exact(t *testing.T, large LargeFloat32Fn, shapes [][3]int) {
	t.Helper()
	be, err := gobackend.New("")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	for _, layout := range []dot.Layout{dot.LayoutNonTransposed, dot.LayoutTransposed} {
		for _, sz := range shapes {
			m, k, n := sz[0], sz[1], sz[2]
			for _, cached := range []bool{false, true} {
				name := fmt.Sprintf("%s/%dx%dx%d/cachedRHS=%v", layout, m, k, n, cached)
				var nodeData *dot.NodeData
				if cached {
					nodeData = &dot.NodeData{PackedRHSCache: &dot.PackedMatrixCache{}}
				}
				lhs, rhs, want := ExactFloat32Problem(layout, m, k, n)
				for range 2 {
					got := make([]float32, m*n)
					large(backend, layout, lhs, rhs, 1, m, n, k, got, nodeData)
					CompareExact(t, name, got, want, n)
				}
			}
		}
	}
}

// LargeSliceFloat32Fn is the signature of a SIMD package's Float32 matrix-slice function.
type LargeSliceFloat32Fn func(layout dot.Layout, lhs, rhs, output []float32, lhsCrossSize, rhsCrossSize, contractingSize,
	rowStart, rowEnd, colStart, colEnd int, params matmul.CacheParams,
	packedLHS, packedRHS, packedOutput, accumBuffer []float32, cachedLHSPanels, cachedRHSPanels [][]float32)

// CheckLargeSliceFloat32 runs slice on rows [rowStart, rowEnd) of an exact m×k by k×n
// problem with the given block sizes: those rows must be exact, the others left alone.
func CheckLargeSliceFloat32(t *testing.T, name string, slice LargeSliceFloat32Fn, params matmul.CacheParams,
	layout dot.Layout, m, n, k, rowStart, rowEnd int) {
	t.Helper()
	lhs, rhs, want := ExactFloat32Problem(layout, m, k, n)
	const untouched = 1e9
	for r := range m {
		if r < rowStart || r >= rowEnd {
			for c := range n {
				want[r*n+c] = untouched
			}
		}
	}
	got := make([]float32, m*n)
	for i := range got {
		got[i] = untouched
	}
	packedLHS := make([]float32, params.LHSPanelCrossSize*params.PanelContractingSize)
	packedRHS := make([]float32, params.PanelContractingSize*params.RHSPanelCrossSize)
	packedOutput := make([]float32, params.LHSPanelCrossSize*params.RHSPanelCrossSize)
	accum := make([]float32, 16*params.LHSPanelCrossSize*params.RHSPanelCrossSize)
	slice(layout, lhs, rhs, got, m, n, k, rowStart, rowEnd, 0, n, params, packedLHS, packedRHS, packedOutput, accum, nil, nil)
	CompareExact(t, name, got, want, n)
}
