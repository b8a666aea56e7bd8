// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx512

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
	actavx512 "github.com/gomlx/compute/internal/gobackend/activations/avx512"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul"
)

// TestKernelEpilogue checks the epilogue the 8×32 kernel applies in
// registers to the tiles it stores last (bias, residual, ReLU, each alone
// and together) bit for bit against the product without an epilogue and the
// Go epilogue applied to it afterwards: whole tiles and tails, one and
// several contracting panels, NaNs, infinities and -0 in bias and residual.
func TestKernelEpilogue(t *testing.T) {
	if !gobackend.IsAVX512Allowed || !AVX512UseAsm {
		t.Skip("AVX512 is not supported on this machine")
	}
	be, err := gobackend.New("")
	if err != nil {
		t.Fatal(err)
	}
	backend := be.(*gobackend.Backend)
	saved := AVX512ParamsFloat32
	defer func() { AVX512ParamsFloat32, matmul.ForceLargeVariant = saved, false }()
	matmul.ForceLargeVariant = true
	special := []float32{float32(math.NaN()), float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), 0}
	for _, kc := range []int{saved.PanelContractingSize, 48} {
		AVX512ParamsFloat32.PanelContractingSize = kc
		for _, size := range [][3]int{{64, 300, 256}, {50, 577, 70}, {16, 17, 32}, {130, 200, 96}, {8, 5, 33}} {
			m, k, n := size[0], size[1], size[2]
			rng := rand.New(rand.NewPCG(uint64(m), uint64(n)))
			fill := func(v []float32) []float32 {
				for i := range v {
					v[i] = float32(rng.NormFloat64())
					if rng.IntN(7) == 0 {
						v[i] = special[rng.IntN(len(special))]
					}
				}
				return v
			}
			lhs, rhs := make([]float32, m*k), make([]float32, k*n)
			for i := range lhs {
				lhs[i] = float32(rng.NormFloat64())
			}
			for i := range rhs {
				rhs[i] = float32(rng.NormFloat64())
			}
			bias, residual := fill(make([]float32, n)), fill(make([]float32, m*n))
			for _, parts := range []struct {
				bias, residual, relu bool
			}{{true, false, false}, {false, true, false}, {false, false, true}, {true, false, true}, {true, true, true}} {
				e := matmul.Epilogue[float32]{Elementwise: true}
				if parts.bias {
					e.Bias = bias
				}
				if parts.residual {
					e.Residual = residual
				}
				if parts.relu {
					e.Activation, e.ReLU = actavx512.ReluAVX512, true
				}
				name := fmt.Sprintf("Kc%d/%dx%dx%d/bias=%v/residual=%v/relu=%v", kc, m, k, n, parts.bias, parts.residual, parts.relu)
				want := make([]float32, m*n)
				if err := matmul.ExecuteWithEpilogue(backend, dot.LayoutNonTransposed, lhs, rhs, 1, m, n, k, want, matmul.Epilogue[float32]{}, &dot.NodeData{}); err != nil {
					t.Fatal(err)
				}
				matmul.ApplyEpilogue(nil, want, 1, m, n, e)
				got := make([]float32, m*n)
				if err := matmul.ExecuteWithEpilogue(backend, dot.LayoutNonTransposed, lhs, rhs, 1, m, n, k, got, e, &dot.NodeData{}); err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: output [%d, %d] = %v (%#x), want %v (%#x)", name, i/n, i%n, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
					}
				}
			}
		}
	}
}
