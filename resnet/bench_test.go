package resnet

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
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
			base, err := backbone.Load(New(cfg), RandomStateDict(cfg, 1), "random", "")
			if err != nil {
				b.Fatal(err)
			}
			p := classifier.NewPredictor(testutil.Backend(), base, nil)
			rng := rand.New(rand.NewPCG(1, 1))
			x := make([]float32, batch*3*size*size)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			input := tensors.FromFlatDataAndDimensions(x, batch, 3, size, size)
			if _, err := p.Logits(input); err != nil { // compile outside the timing
				b.Fatal(err)
			}
			b.ResetTimer()
			m := testutil.StartMeter()
			for range b.N {
				out, err := p.Logits(input)
				if err != nil {
					b.Fatal(err)
				}
				out.FinalizeAll()
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "img/s")
			m.Report(b)
		})
	}
}
