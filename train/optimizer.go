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
	grad := func(i int) float32 {
		g := t.grads[0][i]
		for _, p := range t.grads[1:] {
			g += p[i]
		}
		g /= n
		if c.Optimizer != "adamw" {
			g += wd * t.w[i] // L2, as torch's weight_decay
		}
		return g
	}
	if c.Optimizer == "sgd" { // buf = μ·buf + g; w -= lr·buf
		mu, buf := float32(c.Momentum), t.slots[0]
		for i := range t.w {
			buf[i] = mu*buf[i] + grad(i)
			t.w[i] -= lr * buf[i]
		}
		return
	}
	c1 := 1 - float32(math.Pow(beta1, float64(step)))
	c2 := 1 - float32(math.Pow(beta2, float64(step)))
	m, v := t.slots[0], t.slots[1]
	for i := range t.w {
		g := grad(i)
		m[i] = beta1*m[i] + (1-beta1)*g
		v[i] = beta2*v[i] + (1-beta2)*g*g
		upd := (m[i] / c1) / (float32(math.Sqrt(float64(v[i]/c2))) + adamEps) * lr
		if c.Optimizer == "adamw" { // decoupled: w -= lr·wd·w
			upd += wd * t.w[i] * lr
		}
		t.w[i] -= upd
	}
}
