//go:build goexperiment.simd && amd64

package train

import "simd/archsimd"

var avx512 = archsimd.X86.AVX512()

// lanes updates t's leading elements 16 at a time with AVX-512 and returns
// how many it did (0 without AVX-512). The operations and their order are
// scalar's, each rounded on its own (no fused multiply-add, which Go does
// not emit on amd64 either), and a float32 square root equals the float64
// one rounded to float32: the result is bit-identical. The scalar loop's
// square root and two divisions were 7% of a case-2 training step.
func (a adam) lanes(t task) int {
	if !avx512 {
		return 0
	}
	w, m, v := t.w, t.slots[0], t.slots[1]
	end := len(w) &^ 15
	b := archsimd.BroadcastFloat32x16
	b1, nb1, b2, nb2 := b(beta1), b(1-beta1), b(beta2), b(1-beta2)
	n, l2, c1, c2, eps, lr, wd := b(a.n), b(a.l2), b(a.c1), b(a.c2), b(adamEps), b(a.lr), b(a.wd)
	for i := 0; i < end; i += 16 {
		g := archsimd.LoadFloat32x16(t.grads[0][i:])
		for _, p := range t.grads[1:] {
			g = g.Add(archsimd.LoadFloat32x16(p[i:]))
		}
		wi := archsimd.LoadFloat32x16(w[i:])
		g = g.Div(n).Add(l2.Mul(wi))
		mi := flush16(b1.Mul(archsimd.LoadFloat32x16(m[i:])).Add(nb1.Mul(g)))
		vi := flush16(b2.Mul(archsimd.LoadFloat32x16(v[i:])).Add(nb2.Mul(g).Mul(g)))
		mi.Store(m[i:])
		vi.Store(v[i:])
		upd := mi.Div(c1).Div(vi.Div(c2).Sqrt().Add(eps)).Mul(lr)
		if a.adamw {
			upd = upd.Add(wd.Mul(wi).Mul(lr))
		}
		wi.Sub(upd).Store(w[i:])
	}
	return end
}

// flush16 is flush on 16 lanes.
func flush16(x archsimd.Float32x16) archsimd.Float32x16 {
	sub := x.ToBits().And(archsimd.BroadcastUint32x16(0x7f800000)).Equal(archsimd.BroadcastUint32x16(0))
	return archsimd.BroadcastFloat32x16(0).IfElse(sub, x)
}
