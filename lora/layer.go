package lora

import (
	"math"
	"math/rand/v2"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive

	"github.com/lorafit/lorafit/nn"
)

// ConvDelta is scaling·B(A(x)) for a Conv2d target, as PEFT builds it: A is
// an ordinary conv with the base conv's kernel, stride and padding (in→r),
// B a 1×1 conv (r→out) with the base conv's groups. x is [N,H,W,C]; a is
// [k·k·C,r] and b is [r/groups,O] (matmul layout).
func ConvDelta(x, a, b *Node, k, stride, padding, groups int, scaling float64) *Node {
	h := nn.Conv2DNarrow(x, a, k, stride, padding)
	d := h.Shape().Dimensions
	m, r, o := d[0]*d[1]*d[2], d[3], b.Shape().Dimensions[1]
	var y *Node
	if groups = max(groups, 1); groups == 1 {
		y = MatMul(Reshape(h, m, r), b)
	} else {
		y = Einsum("mgk,kgo->mgo", Reshape(h, m, groups, r/groups), Reshape(b, r/groups, groups, o/groups))
	}
	return MulScalar(Reshape(y, d[0], d[1], d[2], o), scaling)
}

// LinearDelta is scaling·B(A(x)) for a Linear target: x [N,in], a [r,in],
// b [out,r] (PyTorch's layout, as nn.Dense reads it).
func LinearDelta(x, a, b *Node, scaling float64) *Node {
	return MulScalar(nn.Dense(nn.Dense(x, a, nil), b, nil), scaling)
}

// Shapes gives lora_A and lora_B shapes in PEFT's (PyTorch) layout: for a
// grouped conv, B is grouped too ([out, r/groups, 1, 1]).
func (t Target) Shapes() (a, b []int) {
	m := t.Module
	if m.Type == nn.Linear {
		return []int{t.R, m.In}, []int{m.Out, t.R}
	}
	return []int{t.R, m.In, m.Kernel, m.Kernel}, []int{m.Out, t.R / m.NumGroups(), 1, 1}
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

// DeltaWeight is scaling·B·A in the PyTorch layout of an ordinary
// ([O,C,K,K] or [out,in]) weight: what merging adds to the base weight. a
// and b are in PyTorch layout too. For a grouped conv the update mixes every
// input channel, so it is dense even though the base weight is grouped (see
// Densify).
func (t Target) DeltaWeight(a, b []float32) []float32 {
	as, bs := t.Shapes()
	cols, out := prod(as[1:]), bs[0]
	rg, og := bs[1], out/t.Module.NumGroups() // ranks per group, outputs per group
	d := make([]float32, out*cols)
	for o := 0; o < out; o++ {
		first := o / og * rg // group o's first rank
		dst := d[o*cols : (o+1)*cols]
		for j := 0; j < rg; j++ {
			s := float64(b[o*rg+j]) * t.Scaling
			for i, v := range a[(first+j)*cols : (first+j+1)*cols] {
				dst[i] += float32(s * float64(v))
			}
		}
	}
	return d
}

// Densify expands a grouped conv weight [O, C/groups, K, K] to the ordinary
// conv [O, C, K, K] that computes the same thing: zero outside each output's
// group. Merging a LoRA into a grouped conv needs it (PEFT refuses to).
func Densify(w []float32, out, in, k, groups int) []float32 {
	cg, og, kk := in/groups, out/groups, k*k
	d := make([]float32, out*in*kk)
	for o := 0; o < out; o++ {
		g := o / og
		copy(d[(o*in+g*cg)*kk:(o*in+(g+1)*cg)*kk], w[o*cg*kk:(o+1)*cg*kk])
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
