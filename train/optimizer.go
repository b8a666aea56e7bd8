package train

import (
	"math"
	"runtime"
	"sync"
)

// optimizer updates weights in place from their gradients, as torch.optim's
// Adam, AdamW and SGD+momentum do, in float32. It runs on the host, one
// fused pass over each tensor split across the cores: as graph ops, Adam's
// dozen elementwise steps each wrote a new buffer the size of the weights,
// which for full fine-tuning of ResNet-50 (25M parameters) cost a fifth of
// the step.
type optimizer struct {
	cfg Config
}

// task is one contiguous range of one tensor to update: the weight, its
// slots (SGD: the momentum buffer; Adam: m and v), the gradient sums of
// the batch's parts, and whether weight decay applies.
type task struct {
	w     []float32
	slots [][]float32
	grads [][]float32
	decay bool
}

// step applies the update to every task: lr is the learning rate, step the
// 1-based step number (Adam's bias correction), n the batch size (the
// gradients are sums over the batch).
func (o optimizer) step(tasks []task, lr float64, step int, n int) {
	work := make(chan task)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for t := range work {
				o.update(t, float32(lr), step, float32(n))
			}
		})
	}
	const chunk = 1 << 16 // elements per piece: enough for the cores to share a large tensor
	for _, t := range tasks {
		for lo := 0; lo < len(t.w); lo += chunk {
			hi := min(lo+chunk, len(t.w))
			piece := task{w: t.w[lo:hi], decay: t.decay}
			for _, s := range t.slots {
				piece.slots = append(piece.slots, s[lo:hi])
			}
			for _, g := range t.grads {
				piece.grads = append(piece.grads, g[lo:hi])
			}
			work <- piece
		}
	}
	close(work)
	wg.Wait()
}

// Adam's defaults in PyTorch: β=(0.9, 0.999), ε=1e-8.
const (
	beta1, beta2 = 0.9, 0.999
	adamEps      = 1e-8
)

func (o optimizer) update(t task, lr float32, step int, n float32) {
	c := o.cfg
	wd := float32(0)
	if t.decay {
		wd = float32(c.WeightDecay)
	}
	adamw := c.Optimizer == "adamw"
	l2 := wd // torch's weight_decay: L2 added to the gradient
	if adamw {
		l2 = 0
	}
	grad := func(i int) float32 {
		g := t.grads[0][i]
		for _, p := range t.grads[1:] {
			g += p[i]
		}
		return g/n + l2*t.w[i]
	}
	if c.Optimizer == "sgd" { // buf = μ·buf + g; w -= lr·buf
		mu, buf := float32(c.Momentum), t.slots[0]
		for i := range t.w {
			buf[i] = flush(mu*buf[i] + grad(i))
			t.w[i] -= lr * buf[i]
		}
		return
	}
	a := adam{lr: lr, wd: wd, l2: l2, adamw: adamw, n: n,
		c1: 1 - float32(math.Pow(beta1, float64(step))),
		c2: 1 - float32(math.Pow(beta2, float64(step)))}
	a.scalar(t, a.lanes(t))
}

// adam is one Adam(W) step's constants: the learning rate, the decoupled
// (AdamW) or L2 weight decay, the batch size the gradients are summed over,
// and the bias corrections 1-β₁ᵗ and 1-β₂ᵗ.
type adam struct {
	lr, wd, l2, n, c1, c2 float32
	adamw                 bool
}

// scalar updates t's elements from from on, one at a time, as torch.optim.Adam
// does in float32. lanes (adam_simd.go) does the same operations in the same
// order 8 elements at a time: the two are bit-identical.
func (a adam) scalar(t task, from int) {
	m, v := t.slots[0], t.slots[1]
	for i := from; i < len(t.w); i++ {
		g := t.grads[0][i]
		for _, p := range t.grads[1:] {
			g += p[i]
		}
		g = g/a.n + a.l2*t.w[i]
		m[i] = flush(beta1*m[i] + (1-beta1)*g)
		v[i] = flush(beta2*v[i] + (1-beta2)*g*g)
		upd := (m[i] / a.c1) / (float32(math.Sqrt(float64(v[i]/a.c2))) + adamEps) * a.lr
		if a.adamw { // decoupled: w -= lr·wd·w
			upd += a.wd * t.w[i] * a.lr
		}
		t.w[i] -= upd
	}
}

// flush makes a subnormal float zero, as PyTorch's set_flush_denormal and
// every GPU do. A weight whose gradient stays zero (behind a dead ReLU)
// has moments that decay geometrically into subnormals, where x86
// arithmetic is ~100× slower: without this, case 1's later epochs ran at
// half the speed of its first. Subnormals are below 1.2e-38; Adam's ε is
// 1e-8, so the update does not change.
func flush(x float32) float32 {
	if math.Float32bits(x)&0x7f800000 == 0 {
		return 0
	}
	return x
}
