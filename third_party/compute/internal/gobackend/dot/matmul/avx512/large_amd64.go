// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64

package avx512

import (
	"unsafe"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
	"github.com/gomlx/compute/internal/gobackend/dot"
)

// avx512LargeKernelFloat32Asm is the assembly implementation of the 8 rows x 32 cols GEMM microkernel for Float32.
// With epi (nil for none), the sums are final: it applies epi to each tile
// in registers before storing it.
// Defined in avx512_large_amd64_float32.s.
//
//go:noescape
func avx512LargeKernelFloat32Asm(
	packedLHS, packedRHS, packedOutput []float32,
	lhsPanelRows, rhsPanelCols int,
	contractingLen int,
	lhsActiveRows, rhsActiveCols int,
	accumulate bool,
	epi *kernelEpilogue,
)

// avx512LargeKernelDirectLHSFloat32Asm is avx512LargeKernelFloat32Asm
// reading the LHS where it lies instead of packed: row r of the block at
// lhs + r·lhsStride bytes, K contiguous values each; lhsActiveRows a
// multiple of 8. It saves packing an LHS that is read from memory anyway,
// its loads overlapping the FMAs. Defined in large_direct_amd64_float32.s.
//
//go:noescape
func avx512LargeKernelDirectLHSFloat32Asm(
	lhs unsafe.Pointer, lhsStride int,
	packedRHS, packedOutput []float32,
	rhsPanelCols int,
	contractingLen int,
	lhsActiveRows, rhsActiveCols int,
	accumulate bool,
	epi *kernelEpilogue,
)

// avx512LargeKernelDirectLHSFloat32 runs avx512LargeKernelDirectLHSFloat32Asm
// on the rows of lhs from lhs[offset] on, stride values apart.
func avx512LargeKernelDirectLHSFloat32(lhs []float32, offset, stride int, packedRHS, out []float32, outStride, contractingLen, rows, cols int,
	accumulate bool, epi *kernelEpilogue) {
	_ = lhs[offset+(rows-1)*stride+contractingLen-1] // the kernel reads no further
	avx512LargeKernelDirectLHSFloat32Asm(unsafe.Pointer(&lhs[offset]), stride*4, packedRHS, out, outStride, contractingLen, rows, cols, accumulate, epi)
}

// kernelEpilogue is dot.EpilogueValues for one call of
// avx512LargeKernelFloat32Asm: pointers at the call's first output column
// (bias) and first output element (residual, laid out as the output), nil
// where absent, and relu non-zero for the ReLU.
type kernelEpilogue struct {
	bias, residual unsafe.Pointer
	relu           uintptr
}

// newKernelEpilogue points ev at the output block whose first element is
// out[offset], in column col.
func newKernelEpilogue(ev *dot.EpilogueValues, offset, col int) kernelEpilogue {
	var k kernelEpilogue
	if len(ev.Bias) > 0 {
		k.bias = unsafe.Pointer(&ev.Bias[col])
	}
	if len(ev.Residual) > 0 {
		k.residual = unsafe.Pointer(&ev.Residual[offset])
	}
	if ev.ReLU {
		k.relu = 1
	}
	return k
}

// avx512PackLHSKernelRows4Float32Asm packs 4 rows of float32 LHS matrix in strips of 4 into panel.
// Only full 4-row strips are packed; any remaining partial strip is handled by the caller.
// Defined in avx512_pack_amd64_float32.s.
//
//go:noescape
func avx512PackLHSKernelRows4Float32Asm(
	lhs, panel []float32,
	lhsRowStart, lhsColStart, lhsCols,
	copyRows, contractingCols int,
)

// avx512PackLHSKernelRows8Float32Asm packs 8 rows of float32 LHS matrix in strips of 8 into panel.
// Only full 8-row strips are packed; any remaining partial strip is handled by the caller.
// Defined in pack_amd64_float32.s.
//
//go:noescape
func avx512PackLHSKernelRows8Float32Asm(
	lhs, panel []float32,
	lhsRowStart, lhsColStart, lhsCols,
	copyRows, contractingCols int,
)

// avx512LargeKernelFloat16Asm is the assembly implementation of the 8 rows x 32 cols GEMM microkernel for Float16.
// Defined in avx512_large_amd64_float16.s.
//
//go:noescape
func avx512LargeKernelFloat16Asm(
	packedLHS, packedRHS []float16.Float16,
	packedOutput []float32,
	lhsPanelRows, rhsPanelCols int,
	contractingLen int,
	lhsActiveRows, rhsActiveCols int,
	accumulate bool,
)

// avx512LargeKernelBFloat16Asm is the assembly implementation of the 8 rows x 32 cols GEMM microkernel for BFloat16.
// Defined in avx512_large_amd64_bfloat16.s.
//
//go:noescape
func avx512LargeKernelBFloat16Asm(
	packedLHS, packedRHS []bfloat16.BFloat16,
	packedOutput []float32,
	lhsPanelRows, rhsPanelCols int,
	contractingLen int,
	lhsActiveRows, rhsActiveCols int,
	accumulate bool,
)

// avx512LargeKernelFloat64Asm is the assembly implementation of the 8 rows x 16 cols GEMM microkernel for Float64.
// Defined in avx512_large_amd64_float64.s.
//
//go:noescape
func avx512LargeKernelFloat64Asm(
	packedLHS, packedRHS, packedOutput []float64,
	lhsPanelRows, rhsPanelCols int,
	contractingLen int,
	lhsActiveRows, rhsActiveCols int,
	accumulate bool,
)

// avx512PackLHSKernelRows4Float16Asm packs 4 rows of float16 LHS matrix in strips of 4 into panel.
// Only full 4-row strips are packed; any remaining partial strip is handled by the caller.
// Defined in avx512_pack_amd64_float16.s.
//
//go:noescape
func avx512PackLHSKernelRows4Float16Asm(
	lhs, panel []float16.Float16,
	lhsRowStart, lhsColStart, lhsCols,
	copyRows, contractingCols int,
)

// avx512PackLHSKernelRows4BFloat16Asm packs 4 rows of bfloat16 LHS matrix in strips of 4 into panel.
// Only full 4-row strips are packed; any remaining partial strip is handled by the caller.
// Defined in avx512_pack_amd64_float16.s.
//
//go:noescape
func avx512PackLHSKernelRows4BFloat16Asm(
	lhs, panel []bfloat16.BFloat16,
	lhsRowStart, lhsColStart, lhsCols,
	copyRows, contractingCols int,
)

// avx512PackLHSKernelRows4Float64Asm packs 4 rows of float64 LHS matrix in strips of 4 into panel.
// Only full 4-row strips are packed; any remaining partial strip is handled by the caller.
// Defined in avx512_pack_amd64_float64.s.
//
//go:noescape
func avx512PackLHSKernelRows4Float64Asm(
	lhs, panel []float64,
	lhsRowStart, lhsColStart, lhsCols,
	copyRows, contractingCols int,
)

// avx512PackRHSFullStripsAsm packs full strips of RHS matrix into panel using AVX-512.
// kernelColsBytes must be 256, 128, or 64.
// Defined in avx512_pack_rhs_amd64.s.
//
//go:noescape
func avx512PackRHSFullStripsAsm(
	rhsPtr, panelPtr unsafe.Pointer,
	rhsStrideBytes uintptr,
	contractingRows, numStrips, kernelColsBytes int,
)
