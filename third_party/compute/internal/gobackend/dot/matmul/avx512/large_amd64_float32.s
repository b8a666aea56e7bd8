// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64

#include "textflag.h"

// The packed LHS: 8-row strips [K][8] at R8, one after another; SI walks the strip.
#define COLS_CMP CMPQ BX, rhsActiveCols+104(FP)
#define LHS_ROWS_CMP CMPQ AX, R13
#define LHS_STRIP_SETUP \
	MOVQ AX, SI; \
	IMULQ R12, SI; \
	SHLQ $2, SI; \
	ADDQ R8, SI
#define LHS_BCAST0(z) VBROADCASTSS (SI), z
#define LHS_BCAST1(z) VBROADCASTSS 4(SI), z
#define LHS_BCAST2(z) VBROADCASTSS 8(SI), z
#define LHS_BCAST3(z) VBROADCASTSS 12(SI), z
#define LHS_BCAST4(z) VBROADCASTSS 16(SI), z
#define LHS_BCAST5(z) VBROADCASTSS 20(SI), z
#define LHS_BCAST6(z) VBROADCASTSS 24(SI), z
#define LHS_BCAST7(z) VBROADCASTSS 28(SI), z
#define LHS_NEXT ADDQ $32, SI
#define LOAD_EPI(r) MOVQ epi+120(FP), r
#define TEST_ACCUMULATE TESTB R15, R15

// func avx512LargeKernelFloat32Asm(
//     packedLHS, packedRHS, packedOutput []float32,
//     lhsPanelRows, rhsPanelCols int,
//     contractingLen int,
//     lhsActiveRows, rhsActiveCols int,
//     accumulate bool,
//     epi *kernelEpilogue)
TEXT ·avx512LargeKernelFloat32Asm(SB), NOSPLIT, $0-128
	MOVQ packedLHS_base+0(FP), R8        // R8 = lhsBasePtr
	MOVQ packedRHS_base+24(FP), R9       // R9 = rhsBasePtr
	MOVQ packedOutput_base+48(FP), R10   // R10 = outBasePtr
	MOVQ rhsPanelCols+80(FP), R11        // R11 = outputStride (cols)
	MOVQ contractingLen+88(FP), R12      // R12 = contractingLen (K)
	MOVQ lhsActiveRows+96(FP), R13       // R13 = lhsActiveRows (M)
	MOVB accumulate+112(FP), R15         // R15 = accumulate (0 = overwrite, 1 = add)

	SHLQ $2, R11                         // R11 = outputStride in bytes

	// Column strips outside, row strips inside: one RHS strip (K x 32) is read
	// from memory once and then from L1 for every row strip of the panel, as
	// BLIS orders its loops; the packed LHS panel is small enough to stay in L1.
	XORQ BX, BX                          // BX = rhsColIdx = 0

#include "large_kernel_float32.h"
