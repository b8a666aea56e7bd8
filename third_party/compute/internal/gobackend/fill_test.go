// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend_test

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// TestBuffers_FillLengths checks Fill's doubling copies and Zeros' clear at
// every length around the powers of two, and that a fill value keeps its
// bits (-0.0 is not zeroed).
func TestBuffers_FillLengths(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	for n := 1; n <= 70; n++ {
		buf, err := backend.(*gobackend.Backend).GetBuffer(shapes.Make(dtypes.Float32, n))
		if err != nil {
			t.Fatal(err)
		}
		flat := buf.Flat.([]float32)
		for _, v := range []float32{2.5, negZero} {
			if err := buf.Fill(v); err != nil {
				t.Fatal(err)
			}
			for i, got := range flat {
				if math.Float32bits(got) != math.Float32bits(v) {
					t.Fatalf("Fill(%v) of %d elements: element %d is %v", v, n, i, got)
				}
			}
		}
		buf.Zeros()
		for i, got := range flat {
			if math.Float32bits(got) != 0 {
				t.Fatalf("Zeros of %d elements: element %d is %v", n, i, got)
			}
		}
	}
}
