package backend

import (
	"fmt"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

// BenchmarkMatMul times one core's matmuls (the tuned "go" backend runs one
// execution per core) at the shapes that take most of a case-2 training
// step at 28×28 with 32 images a part: the conv products of layer1–layer4,
// forward (x·w) and backward (dy·wᵀ), and fc's weight gradient (dyᵀ·x,
// contracting the 32 images). The conv weights are graph constants, as the
// frozen ones are in training (the backend packs a constant once); fc's
// gradient multiplies two activations. GEMM is 55–65% of a step's CPU
// time; this is its rate alone, in GFLOP/s.
//
//	go test -run '^$' -bench MatMul ./backend
func BenchmarkMatMul(b *testing.B) {
	be, err := New("go")
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []struct {
		m, k, n int
		wT      bool // w is [n,k] (a backward product, dy·wᵀ)
		param   bool // w is an input, not a constant
	}{
		{1568, 576, 64, false, false},                                 // layer1 3×3 conv: 32 images × 7×7 pixels
		{512, 1152, 128, false, false}, {512, 128, 1152, true, false}, // layer2 3×3 conv, 4×4 maps
		{128, 2304, 256, false, false}, {128, 256, 2304, true, false}, // layer3 3×3 conv, 2×2 maps
		{32, 512, 2048, false, false}, {32, 2048, 512, true, false}, // layer4 1×1 convs, 1×1 maps
		{1000, 32, 2048, false, true}, // fc's weight gradient
	} {
		name := fmt.Sprintf("%dx%dx%d", s.m, s.k, s.n)
		if s.wT {
			name += "/wT"
		}
		b.Run(name, func(b *testing.B) {
			rhsAxis := 0
			wd := []int{s.k, s.n}
			if s.wT {
				rhsAxis, wd = 1, []int{s.n, s.k}
			}
			x := make([]float32, s.m*s.k)
			w := make([]float32, s.k*s.n)
			for i := range x {
				x[i] = float32(i%7) * 0.1
			}
			for i := range w {
				w[i] = float32(i%5) * 0.1
			}
			xt := tensors.FromFlatDataAndDimensions(x, s.m, s.k)
			wt := tensors.FromFlatDataAndDimensions(w, wd...)
			exec := MustNewExec(be, func(inputs []*Node) *Node {
				w := Const(inputs[0].Graph(), wt)
				if s.param {
					w = inputs[1]
				}
				return DotGeneral(inputs[0], []int{1}, nil, w, []int{rhsAxis}, nil)
			})
			args := []any{xt}
			if s.param {
				args = append(args, wt)
			}
			exec.MustExec(args...)[0].FinalizeAll() // compile outside the timing
			b.ResetTimer()
			for range b.N {
				exec.MustExec(args...)[0].FinalizeAll()
			}
			b.ReportMetric(float64(2*s.m*s.k*s.n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkMatMulStreaming times layer4's 1×1 conv product (x [m,512] times
// a constant w [512,2048]) over 64 distinct weights, 256 MiB in all: as in a
// training step, where each frozen weight comes back from memory, not from
// a cache, and with few rows (32 images a part on 1×1 maps) the kernel
// waits on it unless the next RHS strip is fetched while it computes.
// BenchmarkMatMul reuses one weight that stays in cache.
func BenchmarkMatMulStreaming(b *testing.B) {
	be, err := New("go")
	if err != nil {
		b.Fatal(err)
	}
	const k, n, weights = 512, 2048, 64
	ws := make([]*tensors.Tensor, weights)
	for j := range ws {
		w := make([]float32, k*n)
		for i := range w {
			w[i] = float32(i%7)*0.1 + float32(j)*0.001 // distinct, or the graph shares equal constants
		}
		ws[j] = tensors.FromFlatDataAndDimensions(w, k, n)
	}
	for _, m := range []int{32, 128} {
		b.Run(fmt.Sprintf("%dx%dx%d", m, k, n), func(b *testing.B) {
			x := make([]float32, m*k)
			for i := range x {
				x[i] = float32(i%7) * 0.1
			}
			xt := tensors.FromFlatDataAndDimensions(x, m, k)
			exec := MustNewExec(be, func(x *Node) []*Node {
				outs := make([]*Node, weights)
				for j, wt := range ws {
					outs[j] = DotGeneral(x, []int{1}, nil, Const(x.Graph(), wt), []int{0}, nil)
				}
				return outs
			})
			run := func() {
				for _, o := range exec.MustExec(xt) {
					o.FinalizeAll()
				}
			}
			run() // compile and pack the weights outside the timing
			b.ResetTimer()
			for range b.N {
				run()
			}
			b.ReportMetric(float64(2*m*k*n*weights)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
