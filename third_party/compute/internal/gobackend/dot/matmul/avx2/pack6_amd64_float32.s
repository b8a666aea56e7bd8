// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64

#include "textflag.h"

// func avx2PackLHSKernelRows6Float32Asm(
//     lhs, panel []float32,
//     lhsRowStart, lhsColStart, lhsCols,
//     copyRows, contractingCols int)
//
// Packs full strips of 6 rows into panel as [k][6] (the 6x16 kernel's LHS layout). Rows 0-3
// of 8 columns are transposed as in the 4-row packer; rows 4-5 are interleaved in pairs;
// each column then takes a 16-byte and an 8-byte store. A last partial strip is left to the
// caller.
TEXT ·avx2PackLHSKernelRows6Float32Asm(SB), NOSPLIT, $0-88
	MOVQ lhs_base+0(FP), R8              // R8 = lhsBasePtr
	MOVQ panel_base+24(FP), R9           // R9 = panelBasePtr
	MOVQ lhsRowStart+48(FP), R10         // R10 = lhsRowStart
	MOVQ lhsColStart+56(FP), R11         // R11 = lhsColStart
	MOVQ lhsCols+64(FP), R12             // R12 = lhsCols
	MOVQ copyRows+72(FP), R13            // R13 = copyRows
	MOVQ contractingCols+80(FP), R14     // R14 = contractingCols

	CMPQ R13, $6
	JL done
	TESTQ R14, R14
	JLE done

	SHLQ $2, R12                         // R12 = lhsStrideBytes
	SHLQ $2, R11                         // R11 = lhsColStartBytes

	MOVQ R14, R15
	ANDQ $~7, R15                        // R15 = contractingCols & ~7

	XORQ AX, AX                          // AX = stripRowIdx

loop_strip:
	LEAQ 6(AX), DX
	CMPQ DX, R13
	JG done

	// SI = row 0, DX = row 1, DI = row 2, CX = row 3; rows 4 and 5 are CX+stride, CX+2*stride.
	MOVQ R10, SI
	ADDQ AX, SI
	IMULQ R12, SI
	ADDQ R8, SI
	ADDQ R11, SI
	LEAQ (SI)(R12*1), DX
	LEAQ (DX)(R12*1), DI
	LEAQ (DI)(R12*1), CX

	XORQ BX, BX                          // BX = colIdx

	TESTQ R15, R15
	JZ check_tail_cols

	PCALIGN $32
loop_cols:
	CMPQ BX, R15
	JGE check_tail_cols

	VMOVUPS (SI), Y0
	VMOVUPS (DX), Y1
	VMOVUPS (DI), Y2
	VMOVUPS (CX), Y3
	VMOVUPS (CX)(R12*1), Y4
	VMOVUPS (CX)(R12*2), Y5

	// Rows 0-3: 4x8 transpose into [col c rows 0-3 | col c+1 rows 0-3] pairs.
	VUNPCKLPS Y1, Y0, Y6
	VUNPCKHPS Y1, Y0, Y7
	VUNPCKLPS Y3, Y2, Y8
	VUNPCKHPS Y3, Y2, Y9
	VUNPCKLPD Y8, Y6, Y10                // [c0 | c4]
	VUNPCKHPD Y8, Y6, Y11                // [c1 | c5]
	VUNPCKLPD Y9, Y7, Y12                // [c2 | c6]
	VUNPCKHPD Y9, Y7, Y13                // [c3 | c7]

	// Rows 4-5: Y14 = [c0 c1 | c4 c5] pairs, Y15 = [c2 c3 | c6 c7] pairs.
	VUNPCKLPS Y5, Y4, Y14
	VUNPCKHPS Y5, Y4, Y15

	// Column c goes to 24*c bytes: rows 0-3 (16 bytes), then rows 4-5 (8 bytes).
	VMOVUPS X10, 0(R9)
	VMOVLPS X14, 16(R9)
	VMOVUPS X11, 24(R9)
	VMOVHPS X14, 40(R9)
	VMOVUPS X12, 48(R9)
	VMOVLPS X15, 64(R9)
	VMOVUPS X13, 72(R9)
	VMOVHPS X15, 88(R9)
	VEXTRACTF128 $1, Y10, 96(R9)
	VEXTRACTF128 $1, Y14, X0
	VMOVLPS X0, 112(R9)
	VEXTRACTF128 $1, Y11, 120(R9)
	VMOVHPS X0, 136(R9)
	VEXTRACTF128 $1, Y12, 144(R9)
	VEXTRACTF128 $1, Y15, X1
	VMOVLPS X1, 160(R9)
	VEXTRACTF128 $1, Y13, 168(R9)
	VMOVHPS X1, 184(R9)

	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	ADDQ $32, CX
	ADDQ $192, R9                        // 8 columns x 6 rows x 4 bytes
	ADDQ $8, BX
	JMP loop_cols

check_tail_cols:
	CMPQ BX, R14
	JGE next_strip

loop_tail_cols:
	VMOVSS (SI), X0
	VMOVSS X0, (R9)
	VMOVSS (DX), X0
	VMOVSS X0, 4(R9)
	VMOVSS (DI), X0
	VMOVSS X0, 8(R9)
	VMOVSS (CX), X0
	VMOVSS X0, 12(R9)
	VMOVSS (CX)(R12*1), X0
	VMOVSS X0, 16(R9)
	VMOVSS (CX)(R12*2), X0
	VMOVSS X0, 20(R9)

	ADDQ $4, SI
	ADDQ $4, DX
	ADDQ $4, DI
	ADDQ $4, CX
	ADDQ $24, R9
	INCQ BX
	CMPQ BX, R14
	JL loop_tail_cols

next_strip:
	ADDQ $6, AX
	JMP loop_strip

done:
	VZEROUPPER
	RET
