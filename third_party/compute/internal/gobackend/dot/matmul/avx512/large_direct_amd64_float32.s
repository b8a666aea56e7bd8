// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64

#include "textflag.h"

// The LHS read in place: row r of the call's block at R8 + r·R13 bytes (R15 =
// 3·R13); SI points at row 0 of the strip, DX at its row 3.
#define COLS_CMP CMPQ BX, rhsActiveCols+88(FP)
#define LHS_ROWS_CMP CMPQ AX, lhsActiveRows+80(FP)
#define LHS_STRIP_SETUP \
	MOVQ AX, SI; \
	IMULQ R13, SI; \
	ADDQ R8, SI; \
	LEAQ (SI)(R15*1), DX
#define LHS_BCAST0(z) VBROADCASTSS (SI), z
#define LHS_BCAST1(z) VBROADCASTSS (SI)(R13*1), z
#define LHS_BCAST2(z) VBROADCASTSS (SI)(R13*2), z
#define LHS_BCAST3(z) VBROADCASTSS (DX), z
#define LHS_BCAST4(z) VBROADCASTSS (SI)(R13*4), z
#define LHS_BCAST5(z) VBROADCASTSS (DX)(R13*2), z
#define LHS_BCAST6(z) VBROADCASTSS (SI)(R15*2), z
#define LHS_BCAST7(z) VBROADCASTSS (DX)(R13*4), z
#define LHS_NEXT ADDQ $4, SI; ADDQ $4, DX
#define LOAD_EPI(r) MOVQ epi+104(FP), r
#define TEST_ACCUMULATE CMPB accumulate+96(FP), $0

// func avx512LargeKernelDirectLHSFloat32Asm(
//     lhs unsafe.Pointer, lhsStride int,
//     packedRHS, packedOutput []float32,
//     rhsPanelCols int,
//     contractingLen int,
//     lhsActiveRows, rhsActiveCols int,
//     accumulate bool,
//     epi *kernelEpilogue)
TEXT ·avx512LargeKernelDirectLHSFloat32Asm(SB), NOSPLIT, $0-112
	MOVQ lhs+0(FP), R8                   // R8 = the LHS block's first value
	MOVQ lhsStride+8(FP), R13            // R13 = LHS row stride in bytes
	LEAQ (R13)(R13*2), R15               // R15 = 3 rows
	MOVQ packedRHS_base+16(FP), R9       // R9 = rhsBasePtr
	MOVQ packedOutput_base+40(FP), R10   // R10 = outBasePtr
	MOVQ rhsPanelCols+64(FP), R11        // R11 = outputStride (cols)
	MOVQ contractingLen+72(FP), R12      // R12 = contractingLen (K)

	SHLQ $2, R11                         // R11 = outputStride in bytes

	// Column strips outside, row strips inside, as the packed kernel: the
	// block's rows are read from where they lie, 8 streams a strip.
	XORQ BX, BX                          // BX = rhsColIdx = 0

#include "large_kernel_float32.h"
