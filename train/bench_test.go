package train

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
)

// BenchmarkTrainStep measures the founding study's training steps on the
// full-size ResNet-50 at 28×28, batch 64 (random weights: speed does not
// depend on them). scripts/bench.sh runs the same steps in PyTorch.
//
//	go test -run '^$' -bench TrainStep ./train
func BenchmarkTrainStep(b *testing.B) {
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("case%d/28x28/batch64", n), func(b *testing.B) {
			cfg, _ := resnet.ConfigFor("resnet50")
			base, err := backbone.Load(resnet.New(cfg), resnet.RandomStateDict(cfg, 1), "random", "")
			if err != nil {
				b.Fatal(err)
			}
			spec, _ := adapter.Case(n)
			a, err := adapter.New(base.Net, spec)
			if err != nil {
				b.Fatal(err)
			}
			if err := a.Init(base, 1); err != nil {
				b.Fatal(err)
			}
			const batch = 64
			d := &randomData{n: batch * (b.N + 1)}
			c := DefaultConfig()
			c.Batch, c.Seed = batch, 1
			tr, err := New(goBackend(), base, a, c)
			if err != nil {
				b.Fatal(err)
			}
			tr.cfg.LimitSteps = 1
			if _, err := tr.Fit(context.Background(), d); err != nil { // compile outside the timing
				b.Fatal(err)
			}
			tr.cfg.LimitSteps = b.N + 1
			b.ResetTimer()
			m := testutil.StartMeter()
			if _, err := tr.Fit(context.Background(), d); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "img/s")
			m.Report(b)
		})
	}
}

// randomData is noise with random labels: enough to time a step.
type randomData struct{ n int }

func (r *randomData) Len() int        { return r.n }
func (r *randomData) NumClasses() int { return 10 }
func (r *randomData) Fill(idx []int, _ preprocess.Preprocess, _ *rand.Rand, dst []float32, labels []int32) {
	rng := rand.New(rand.NewPCG(uint64(idx[0]), 1))
	for i := range dst {
		dst[i] = float32(rng.NormFloat64())
	}
	for i := range labels {
		labels[i] = int32(rng.IntN(10))
	}
}

func (r *randomData) Label(i int) int { return int(rand.New(rand.NewPCG(uint64(i), 2)).IntN(10)) }
