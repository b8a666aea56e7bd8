// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

// The body of the AVX-512 8×32 float32 GEMM microkernels, from the column
// strip loop on, included by large_amd64_float32.s (LHS packed in 8-row
// strips) and large_direct_amd64_float32.s (LHS read in place). Each defines
// how the LHS is read before including it:
//
//	LHS_ROWS_CMP       compares AX (the row) with the rows to compute
//	LHS_STRIP_SETUP    points the LHS registers at the strip of row AX
//	LHS_BCASTn(z)      broadcasts row n's value at the current k into z
//	LHS_NEXT           moves the LHS registers to the next k
//	LOAD_EPI(r)        loads the epilogue pointer argument into r
//	TEST_ACCUMULATE    sets the flags from the accumulate argument (ZF: overwrite)
//
// Registers: R9 packed RHS, R10 output, R11 output stride in bytes, R12 K,
// R14 next strip prefetch, AX row, BX column, CX, DI, Z0..Z27; SI for the
// epilogue pointer when storing. The rest are the includer's, who also
// defines COLS_CMP (compares BX with the columns to compute).

// EPILOGUE_ADD_ROWS adds the 8×32 tile at p (row stride R11 bytes) to the
// accumulators Z0..Z15, advancing p by 7 rows.
#define EPILOGUE_ADD_ROWS(p) \
	VADDPS (p), Z0, Z0; \
	VADDPS 64(p), Z1, Z1; \
	ADDQ R11, p; \
	VADDPS (p), Z2, Z2; \
	VADDPS 64(p), Z3, Z3; \
	ADDQ R11, p; \
	VADDPS (p), Z4, Z4; \
	VADDPS 64(p), Z5, Z5; \
	ADDQ R11, p; \
	VADDPS (p), Z6, Z6; \
	VADDPS 64(p), Z7, Z7; \
	ADDQ R11, p; \
	VADDPS (p), Z8, Z8; \
	VADDPS 64(p), Z9, Z9; \
	ADDQ R11, p; \
	VADDPS (p), Z10, Z10; \
	VADDPS 64(p), Z11, Z11; \
	ADDQ R11, p; \
	VADDPS (p), Z12, Z12; \
	VADDPS 64(p), Z13, Z13; \
	ADDQ R11, p; \
	VADDPS (p), Z14, Z14; \
	VADDPS 64(p), Z15, Z15

loop_rhs:
	COLS_CMP
	JGE done

	XORQ AX, AX                          // AX = lhsRowIdx = 0

	// R14 = the next strip, R9 + (BX+32)·K·4: the row tiles of this strip
	// prefetch it into L2, a line every k pair, so that a strip read once
	// (few rows) streams from memory while the FMAs run instead of in a
	// burst at its first tile. A strip is K·128 bytes: 4 tiles of K/2
	// pairs cover it.
	MOVQ BX, R14
	ADDQ $32, R14
	IMULQ R12, R14
	SHLQ $2, R14
	ADDQ R9, R14

loop_lhs:
	LHS_ROWS_CMP
	JGE next_rhs

	// 1. Zero all 16 accumulators (Z0..Z15)
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	VXORPS Z4, Z4, Z4
	VXORPS Z5, Z5, Z5
	VXORPS Z6, Z6, Z6
	VXORPS Z7, Z7, Z7
	VXORPS Z8, Z8, Z8
	VXORPS Z9, Z9, Z9
	VXORPS Z10, Z10, Z10
	VXORPS Z11, Z11, Z11
	VXORPS Z12, Z12, Z12
	VXORPS Z13, Z13, Z13
	VXORPS Z14, Z14, Z14
	VXORPS Z15, Z15, Z15

	// 2. Compute lhsPtr and rhsPtr
	LHS_STRIP_SETUP

	// For 32-col RHS strip: strip has 32 floats = 128 bytes per step.
	// DI = R9 + (rhsColIdx * contractingLen * 4)
	MOVQ BX, DI
	IMULQ R12, DI
	SHLQ $2, DI
	ADDQ R9, DI

	// 3. K-loop with 2-stage ping-pong pipeline (unroll by 2)
	MOVQ R12, CX                         // CX = contractingLen
	TESTQ CX, CX
	JLE store_output

	SHRQ $1, CX                          // CX = pairs = contractingLen / 2
	JZ k_odd

	// Prime Buffer A for Step 0 outside the loop
	VMOVDQU32 (DI), Z16                  // RHS col 0..15
	VMOVDQU32 64(DI), Z17                // RHS col 16..31
	LHS_BCAST0(Z18)               // LHS row 0
	LHS_BCAST1(Z19)              // LHS row 1
	LHS_BCAST2(Z20)              // LHS row 2
	LHS_BCAST3(Z21)             // LHS row 3
	LHS_BCAST4(Z22)             // LHS row 4
	LHS_BCAST5(Z23)             // LHS row 5
	LHS_BCAST6(Z24)             // LHS row 6
	LHS_BCAST7(Z25)             // LHS row 7

	LHS_NEXT
	ADDQ $128, DI

	DECQ CX
	JZ k_last_pair

	PCALIGN $64
k_pair_loop:
	// Step A: FMAs using Buffer A (Z16, Z17) while loading Buffer B (Z26, Z27, Z18..Z25)
	VFMADD231PS Z16, Z18, Z0
	VMOVDQU32 (DI), Z26
	VFMADD231PS Z17, Z18, Z1
	LHS_BCAST0(Z18)

	VFMADD231PS Z16, Z19, Z2
	VMOVDQU32 64(DI), Z27
	VFMADD231PS Z17, Z19, Z3
	LHS_BCAST1(Z19)

	VFMADD231PS Z16, Z20, Z4
	VFMADD231PS Z17, Z20, Z5
	LHS_BCAST2(Z20)

	VFMADD231PS Z16, Z21, Z6
	VFMADD231PS Z17, Z21, Z7
	LHS_BCAST3(Z21)

	VFMADD231PS Z16, Z22, Z8
	VFMADD231PS Z17, Z22, Z9
	LHS_BCAST4(Z22)

	VFMADD231PS Z16, Z23, Z10
	VFMADD231PS Z17, Z23, Z11
	LHS_BCAST5(Z23)

	VFMADD231PS Z16, Z24, Z12
	VFMADD231PS Z17, Z24, Z13
	LHS_BCAST6(Z24)

	VFMADD231PS Z16, Z25, Z14
	VFMADD231PS Z17, Z25, Z15
	LHS_BCAST7(Z25)

	LHS_NEXT
	ADDQ $128, DI
	PREFETCHT1 (R14)

	// Step B: FMAs using Buffer B (Z26, Z27) while loading next Buffer A (Z16, Z17, Z18..Z25)
	VFMADD231PS Z26, Z18, Z0
	VMOVDQU32 (DI), Z16
	VFMADD231PS Z27, Z18, Z1
	LHS_BCAST0(Z18)

	VFMADD231PS Z26, Z19, Z2
	VMOVDQU32 64(DI), Z17
	VFMADD231PS Z27, Z19, Z3
	LHS_BCAST1(Z19)

	VFMADD231PS Z26, Z20, Z4
	VFMADD231PS Z27, Z20, Z5
	LHS_BCAST2(Z20)

	VFMADD231PS Z26, Z21, Z6
	VFMADD231PS Z27, Z21, Z7
	LHS_BCAST3(Z21)

	VFMADD231PS Z26, Z22, Z8
	VFMADD231PS Z27, Z22, Z9
	LHS_BCAST4(Z22)

	VFMADD231PS Z26, Z23, Z10
	VFMADD231PS Z27, Z23, Z11
	LHS_BCAST5(Z23)

	VFMADD231PS Z26, Z24, Z12
	VFMADD231PS Z27, Z24, Z13
	LHS_BCAST6(Z24)

	VFMADD231PS Z26, Z25, Z14
	VFMADD231PS Z27, Z25, Z15
	LHS_BCAST7(Z25)

	LHS_NEXT
	ADDQ $128, DI
	ADDQ $64, R14

	DECQ CX
	JNZ k_pair_loop

k_last_pair:
	// Step A: FMAs using Buffer A (Z16, Z17) while loading Buffer B (Z26, Z27, Z18..Z25)
	VFMADD231PS Z16, Z18, Z0
	VMOVDQU32 (DI), Z26
	VFMADD231PS Z17, Z18, Z1
	LHS_BCAST0(Z18)

	VFMADD231PS Z16, Z19, Z2
	VMOVDQU32 64(DI), Z27
	VFMADD231PS Z17, Z19, Z3
	LHS_BCAST1(Z19)

	VFMADD231PS Z16, Z20, Z4
	VFMADD231PS Z17, Z20, Z5
	LHS_BCAST2(Z20)

	VFMADD231PS Z16, Z21, Z6
	VFMADD231PS Z17, Z21, Z7
	LHS_BCAST3(Z21)

	VFMADD231PS Z16, Z22, Z8
	VFMADD231PS Z17, Z22, Z9
	LHS_BCAST4(Z22)

	VFMADD231PS Z16, Z23, Z10
	VFMADD231PS Z17, Z23, Z11
	LHS_BCAST5(Z23)

	VFMADD231PS Z16, Z24, Z12
	VFMADD231PS Z17, Z24, Z13
	LHS_BCAST6(Z24)

	VFMADD231PS Z16, Z25, Z14
	VFMADD231PS Z17, Z25, Z15
	LHS_BCAST7(Z25)

	LHS_NEXT
	ADDQ $128, DI

	// Step B: Pure FMAs using Buffer B (Z26, Z27) - NO further memory loads!
	VFMADD231PS Z26, Z18, Z0
	VFMADD231PS Z27, Z18, Z1
	VFMADD231PS Z26, Z19, Z2
	VFMADD231PS Z27, Z19, Z3
	VFMADD231PS Z26, Z20, Z4
	VFMADD231PS Z27, Z20, Z5
	VFMADD231PS Z26, Z21, Z6
	VFMADD231PS Z27, Z21, Z7
	VFMADD231PS Z26, Z22, Z8
	VFMADD231PS Z27, Z22, Z9
	VFMADD231PS Z26, Z23, Z10
	VFMADD231PS Z27, Z23, Z11
	VFMADD231PS Z26, Z24, Z12
	VFMADD231PS Z27, Z24, Z13
	VFMADD231PS Z26, Z25, Z14
	VFMADD231PS Z27, Z25, Z15

k_odd:
	TESTQ $1, R12
	JZ store_output

	VMOVDQU32 (DI), Z16
	VMOVDQU32 64(DI), Z17
	LHS_BCAST0(Z18)
	LHS_BCAST1(Z19)
	LHS_BCAST2(Z20)
	LHS_BCAST3(Z21)
	LHS_BCAST4(Z22)
	LHS_BCAST5(Z23)
	LHS_BCAST6(Z24)
	LHS_BCAST7(Z25)

	VFMADD231PS Z16, Z18, Z0
	VFMADD231PS Z17, Z18, Z1
	VFMADD231PS Z16, Z19, Z2
	VFMADD231PS Z17, Z19, Z3
	VFMADD231PS Z16, Z20, Z4
	VFMADD231PS Z17, Z20, Z5
	VFMADD231PS Z16, Z21, Z6
	VFMADD231PS Z17, Z21, Z7
	VFMADD231PS Z16, Z22, Z8
	VFMADD231PS Z17, Z22, Z9
	VFMADD231PS Z16, Z23, Z10
	VFMADD231PS Z17, Z23, Z11
	VFMADD231PS Z16, Z24, Z12
	VFMADD231PS Z17, Z24, Z13
	VFMADD231PS Z16, Z25, Z14
	VFMADD231PS Z17, Z25, Z15

store_output:
	MOVQ AX, DX
	IMULQ R11, DX
	MOVQ BX, CX
	SHLQ $2, CX
	ADDQ CX, DX
	LOAD_EPI(SI)
	TESTQ SI, SI
	JNZ store_output_epilogue
	LEAQ (R10)(DX*1), DX

	TEST_ACCUMULATE
	JNZ store_output_accum

	// Row 0
	VMOVDQU32 Z0, (DX)
	VMOVDQU32 Z1, 64(DX)
	// Row 1
	ADDQ R11, DX
	VMOVDQU32 Z2, (DX)
	VMOVDQU32 Z3, 64(DX)
	// Row 2
	ADDQ R11, DX
	VMOVDQU32 Z4, (DX)
	VMOVDQU32 Z5, 64(DX)
	// Row 3
	ADDQ R11, DX
	VMOVDQU32 Z6, (DX)
	VMOVDQU32 Z7, 64(DX)
	// Row 4
	ADDQ R11, DX
	VMOVDQU32 Z8, (DX)
	VMOVDQU32 Z9, 64(DX)
	// Row 5
	ADDQ R11, DX
	VMOVDQU32 Z10, (DX)
	VMOVDQU32 Z11, 64(DX)
	// Row 6
	ADDQ R11, DX
	VMOVDQU32 Z12, (DX)
	VMOVDQU32 Z13, 64(DX)
	// Row 7
	ADDQ R11, DX
	VMOVDQU32 Z14, (DX)
	VMOVDQU32 Z15, 64(DX)

	ADDQ $8, AX                          // lhsRowIdx += 8
	JMP loop_lhs

store_output_accum:
	// Row 0
	VADDPS (DX), Z0, Z0
	VMOVDQU32 Z0, (DX)
	VADDPS 64(DX), Z1, Z1
	VMOVDQU32 Z1, 64(DX)
	// Row 1
	ADDQ R11, DX
	VADDPS (DX), Z2, Z2
	VMOVDQU32 Z2, (DX)
	VADDPS 64(DX), Z3, Z3
	VMOVDQU32 Z3, 64(DX)
	// Row 2
	ADDQ R11, DX
	VADDPS (DX), Z4, Z4
	VMOVDQU32 Z4, (DX)
	VADDPS 64(DX), Z5, Z5
	VMOVDQU32 Z5, 64(DX)
	// Row 3
	ADDQ R11, DX
	VADDPS (DX), Z6, Z6
	VMOVDQU32 Z6, (DX)
	VADDPS 64(DX), Z7, Z7
	VMOVDQU32 Z7, 64(DX)
	// Row 4
	ADDQ R11, DX
	VADDPS (DX), Z8, Z8
	VMOVDQU32 Z8, (DX)
	VADDPS 64(DX), Z9, Z9
	VMOVDQU32 Z9, 64(DX)
	// Row 5
	ADDQ R11, DX
	VADDPS (DX), Z10, Z10
	VMOVDQU32 Z10, (DX)
	VADDPS 64(DX), Z11, Z11
	VMOVDQU32 Z11, 64(DX)
	// Row 6
	ADDQ R11, DX
	VADDPS (DX), Z12, Z12
	VMOVDQU32 Z12, (DX)
	VADDPS 64(DX), Z13, Z13
	VMOVDQU32 Z13, 64(DX)
	// Row 7
	ADDQ R11, DX
	VADDPS (DX), Z14, Z14
	VMOVDQU32 Z14, (DX)
	VADDPS 64(DX), Z15, Z15
	VMOVDQU32 Z15, 64(DX)

	ADDQ $8, AX                          // lhsRowIdx += 8
	JMP loop_lhs

store_output_epilogue:
	// The sums are final: max(out + bias + residual, 0), each part as epi
	// says, in registers, in the order the Go epilogue adds them, then stored.
	// The ReLU is VMAXPS with 0 first, as archsimd's Max in the AVX-512 ReLU:
	// NaN and -0 pass through.
	// DX = the tile's byte offset in the output (and in the residual).
	TEST_ACCUMULATE
	JZ epilogue_bias
	LEAQ (R10)(DX*1), DI
	EPILOGUE_ADD_ROWS(DI)

epilogue_bias:
	MOVQ 0(SI), DI                       // bias at the call's first column, or nil
	TESTQ DI, DI
	JZ epilogue_residual
	VMOVUPS (DI)(BX*4), Z16
	VMOVUPS 64(DI)(BX*4), Z17
	VADDPS Z16, Z0, Z0
	VADDPS Z17, Z1, Z1
	VADDPS Z16, Z2, Z2
	VADDPS Z17, Z3, Z3
	VADDPS Z16, Z4, Z4
	VADDPS Z17, Z5, Z5
	VADDPS Z16, Z6, Z6
	VADDPS Z17, Z7, Z7
	VADDPS Z16, Z8, Z8
	VADDPS Z17, Z9, Z9
	VADDPS Z16, Z10, Z10
	VADDPS Z17, Z11, Z11
	VADDPS Z16, Z12, Z12
	VADDPS Z17, Z13, Z13
	VADDPS Z16, Z14, Z14
	VADDPS Z17, Z15, Z15

epilogue_residual:
	MOVQ 8(SI), DI                       // residual at the call's output origin, or nil
	TESTQ DI, DI
	JZ epilogue_relu
	ADDQ DX, DI
	EPILOGUE_ADD_ROWS(DI)

epilogue_relu:
	MOVQ 16(SI), DI
	TESTQ DI, DI
	JZ epilogue_store
	VXORPS Z16, Z16, Z16
	VMAXPS Z0, Z16, Z0
	VMAXPS Z1, Z16, Z1
	VMAXPS Z2, Z16, Z2
	VMAXPS Z3, Z16, Z3
	VMAXPS Z4, Z16, Z4
	VMAXPS Z5, Z16, Z5
	VMAXPS Z6, Z16, Z6
	VMAXPS Z7, Z16, Z7
	VMAXPS Z8, Z16, Z8
	VMAXPS Z9, Z16, Z9
	VMAXPS Z10, Z16, Z10
	VMAXPS Z11, Z16, Z11
	VMAXPS Z12, Z16, Z12
	VMAXPS Z13, Z16, Z13
	VMAXPS Z14, Z16, Z14
	VMAXPS Z15, Z16, Z15

epilogue_store:
	LEAQ (R10)(DX*1), DX
	VMOVDQU32 Z0, (DX)
	VMOVDQU32 Z1, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z2, (DX)
	VMOVDQU32 Z3, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z4, (DX)
	VMOVDQU32 Z5, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z6, (DX)
	VMOVDQU32 Z7, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z8, (DX)
	VMOVDQU32 Z9, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z10, (DX)
	VMOVDQU32 Z11, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z12, (DX)
	VMOVDQU32 Z13, 64(DX)
	ADDQ R11, DX
	VMOVDQU32 Z14, (DX)
	VMOVDQU32 Z15, 64(DX)

	ADDQ $8, AX                          // lhsRowIdx += 8
	JMP loop_lhs

next_rhs:
	ADDQ $32, BX                         // rhsColIdx += 32
	JMP loop_rhs

done:
	VZEROUPPER
	RET
