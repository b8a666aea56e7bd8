package resnet

import (
	"fmt"
	"math/rand/v2"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"
)

// BenchmarkForward measures eval-mode ResNet-50 inference at batch 64, at
// MNIST's native 28×28 and ImageNet's 224×224. Compare with PyTorch on the
// same machine with scripts/bench.sh (it reports the ratio).
//
//	go test -run '^$' -bench Forward ./resnet
func BenchmarkForward(b *testing.B) {
	const batch = 64
	for _, size := range []int{28, 224} {
		b.Run(fmt.Sprintf("resnet50/%dx%d/batch%d", size, size, batch), func(b *testing.B) {
			cfg, _ := ConfigFor("resnet50")
			m := New(cfg)
			if err := m.Load(RandomStateDict(cfg, 1), "random"); err != nil {
				b.Fatal(err)
			}
			exec := model.MustNewExec(testBackend(b), m.Store, func(_ *model.Scope, x *Node) *Node { return m.Logits(x) })
			rng := rand.New(rand.NewPCG(1, 1))
			x := make([]float32, batch*3*size*size)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			input := tensors.FromFlatDataAndDimensions(x, batch, 3, size, size)
			exec.MustCall1(input) // compile outside the timing
			b.ResetTimer()
			for range b.N {
				out := exec.MustCall1(input)
				out.FinalizeAll()
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "img/s")
		})
	}
}
