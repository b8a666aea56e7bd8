//go:build amd64 && goexperiment.simd

package avx512

import (
	"unsafe"

	"github.com/gomlx/compute/internal/gobackend/dot"
)

// avx512PackLHSRows8PtrsFloat32Asm packs contractingCols float32s from each
// of the 8 rows: for every k, the rows' k-th values side by side at dst +
// k*dstStride bytes (dstStride 32: one 8-row strip, [contractingCols][8]).
// Defined in pack_amd64_float32.s.
//
//go:noescape
func avx512PackLHSRows8PtrsFloat32Asm(rows *[8]unsafe.Pointer, dst unsafe.Pointer, dstStride, contractingCols int)

// avx512PackGatheredLHSFloat32 packs rows [rowStart, rowStart+copyRows) and
// contracting columns [colStart, colStart+cols) of the LHS g lays over src,
// as avx512PackLHSKernelRows4 packs a plain LHS with 8-row strips: each strip
// [cols][8], the rows past copyRows zero. Each row's run segment is read where
// it lies in src: a strip's 8 rows need no common stride (a convolution's
// output rows end inside strips when their width is no multiple of 8).
func avx512PackGatheredLHSFloat32(src []float32, g *dot.GatheredLHS, panel []float32, rowStart, colStart, copyRows, cols int) {
	var rows [8]unsafe.Pointer
	for s := 0; s < copyRows; s += 8 {
		valid := min(8, copyRows-s)
		strip := panel[(s/8)*cols*8 : (s/8+1)*cols*8]
		first := (rowStart + s) * g.Runs
		for k := colStart; k < colStart+cols; {
			t, o := k/g.RunLen, k%g.RunLen
			n := min(g.RunLen-o, colStart+cols-k)
			dst := strip[(k-colStart)*8 : (k-colStart+n)*8]
			if valid == 8 && AVX512UseAsm {
				for j := range rows {
					rows[j] = unsafe.Pointer(&g.Float32Run(src, first+j*g.Runs+t, o, n)[0])
				}
				avx512PackLHSRows8PtrsFloat32Asm(&rows, unsafe.Pointer(&dst[0]), 8*4, n)
				k += n
				continue
			}
			for j := range 8 {
				if j >= valid {
					for i := range n {
						dst[i*8+j] = 0
					}
					continue
				}
				for i, v := range g.Float32Run(src, first+j*g.Runs+t, o, n) {
					dst[i*8+j] = v
				}
			}
			k += n
		}
	}
}

// avx512PackTransposedRHSFloat32 packs rows [rowStart, rowStart+copyRows) and
// columns [colStart, colStart+cols) of a row-major matrix with lhsCols
// columns into strips of 32 rows ([cols][32] each, the rows past copyRows
// zero), as unsafePackLHS does with 32 kernel rows: the panels of a
// transposed RHS ([N, K], as a Linear weight is kept) for the 8×32 kernel.
// Full strips go 8 rows at a time through the assembly packer.
func avx512PackTransposedRHSFloat32(m, panel []float32, rowStart, colStart, lhsCols, copyRows, cols int) {
	full := copyRows &^ 31
	if AVX512UseAsm && cols > 0 {
		var rows [8]unsafe.Pointer
		for s := 0; s < full; s += 32 {
			strip := panel[s*cols : (s+32)*cols]
			for g := 0; g < 32; g += 8 {
				for j := range rows {
					off := (rowStart+s+g+j)*lhsCols + colStart
					rows[j] = unsafe.Pointer(&m[off : off+cols][0])
				}
				avx512PackLHSRows8PtrsFloat32Asm(&rows, unsafe.Pointer(&strip[g]), 32*4, cols)
			}
		}
	} else {
		full = 0
	}
	unsafePackLHS(m, panel[full*cols:], rowStart+full, colStart, lhsCols, copyRows-full, cols, 32)
}
