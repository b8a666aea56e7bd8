package lora

import (
	"math"
	"math/rand/v2"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive

	"github.com/lorafit/lorafit/nn"
)

// ConvDelta is scaling·B(A(x)) for a Conv2d target: A is a conv with the
// base conv's kernel, stride and padding (in→r), B a 1×1 conv (r→out).
// x is [N,H,W,C]; a is [K,K,C,r] and b is [r,O] (matmul layout).
func ConvDelta(x, a, b *Node, stride, padding int, scaling float64) *Node {
	h := nn.Conv2D(x, a, stride, padding)
	d := h.Shape().Dimensions
	y := MatMul(Reshape(h, d[0]*d[1]*d[2], d[3]), b)
	return MulScalar(Reshape(y, d[0], d[1], d[2], b.Shape().Dimensions[1]), scaling)
}

// LinearDelta is scaling·B(A(x)) for a Linear target: x [N,in], a [in,r],
// b [r,out].
func LinearDelta(x, a, b *Node, scaling float64) *Node {
	return MulScalar(MatMul(MatMul(x, a), b), scaling)
}

// Shapes gives lora_A and lora_B shapes in PEFT's (PyTorch) layout.
func (t Target) Shapes() (a, b []int) {
	m := t.Module
	if m.Type == nn.Linear {
		return []int{t.R, m.In}, []int{m.Out, t.R}
	}
	return []int{t.R, m.In, m.Kernel, m.Kernel}, []int{m.Out, t.R, 1, 1}
}

// InitWeights returns lora_A and lora_B in PyTorch layout, initialized as
// PEFT's init_lora_weights says (see Init).
func (t Target) InitWeights(init Init, rng *rand.Rand) (a, b []float32) {
	as, bs := t.Shapes()
	a, b = make([]float32, prod(as)), make([]float32, prod(bs))
	fanInA := prod(as[1:])
	switch init {
	case InitGaussian:
		std := 1 / float64(t.R)
		for i := range a {
			a[i] = float32(rng.NormFloat64() * std)
		}
	default:
		// torch's default Conv2d/Linear init, kaiming_uniform_(a=√5):
		// U(-1/√fan_in, 1/√fan_in).
		uniform(a, 1/math.Sqrt(float64(fanInA)), rng)
		if init == InitRandom {
			uniform(b, 1/math.Sqrt(float64(prod(bs[1:]))), rng)
		}
	}
	return a, b
}

func uniform(v []float32, bound float64, rng *rand.Rand) {
	for i := range v {
		v[i] = float32((2*rng.Float64() - 1) * bound)
	}
}

// DeltaWeight is scaling·B·A in the base weight's PyTorch layout ([O,C,K,K]
// or [out,in]): what merging adds to the base weight. a and b are in
// PyTorch layout too.
func (t Target) DeltaWeight(a, b []float32) []float32 {
	as, bs := t.Shapes()
	r, cols, out := as[0], prod(as[1:]), bs[0]
	d := make([]float32, out*cols)
	for o := 0; o < out; o++ {
		for k := 0; k < r; k++ {
			s := float64(b[o*r+k]) * t.Scaling
			row := a[k*cols : (k+1)*cols]
			dst := d[o*cols : (o+1)*cols]
			for j, v := range row {
				dst[j] += float32(s * float64(v))
			}
		}
	}
	return d
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}
