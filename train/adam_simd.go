//go:build goexperiment.simd && amd64

package train

import "simd/archsimd"

// avx2 says whether lanes runs: AVX2 is what laptops and AMD servers have
// (AVX-512 machines have it too), and on 8 lanes the update is no longer
// bound by the square root and divisions.
var avx2 = archsimd.X86.AVX2()

// lanes updates t's leading elements 8 at a time with AVX2 and returns how
// many it did (0 without AVX2). The operations and their order are
// scalar's, each rounded on its own (no fused multiply-add, which Go does
// not emit on amd64 either), and a float32 square root equals the float64
// one rounded to float32: the result is bit-identical. The scalar loop was
// 6-7% of a case-2 training step.
func (a adam) lanes(t task) int {
	if !avx2 {
		return 0
	}
	w, m, v := t.w, t.slots[0], t.slots[1]
	end := len(w) &^ 7
	b := archsimd.BroadcastFloat32x8
	b1, nb1, b2, nb2 := b(beta1), b(1-beta1), b(beta2), b(1-beta2)
	n, l2, c1, c2, eps, lr, wd := b(a.n), b(a.l2), b(a.c1), b(a.c2), b(adamEps), b(a.lr), b(a.wd)
	exp, none := archsimd.BroadcastUint32x8(0x7f800000), archsimd.BroadcastUint32x8(0)
	for i := 0; i < end; i += 8 {
		g := archsimd.LoadFloat32x8(t.grads[0][i:])
		for _, p := range t.grads[1:] {
			g = g.Add(archsimd.LoadFloat32x8(p[i:]))
		}
		wi := archsimd.LoadFloat32x8(w[i:])
		g = g.Div(n).Add(l2.Mul(wi))
		mi := flush8(b1.Mul(archsimd.LoadFloat32x8(m[i:])).Add(nb1.Mul(g)), exp, none)
		vi := flush8(b2.Mul(archsimd.LoadFloat32x8(v[i:])).Add(nb2.Mul(g).Mul(g)), exp, none)
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

// flush8 is flush on 8 lanes: the bits of x, cleared where its exponent
// bits (exp) are all zero (none). The constants come from the caller, so
// they stay in registers across the loop.
func flush8(x archsimd.Float32x8, exp, none archsimd.Uint32x8) archsimd.Float32x8 {
	bits := x.ToBits()
	sub := bits.And(exp).Equal(none).ToInt32x8().ToBits()
	return bits.AndNot(sub).BitsToFloat32()
}
