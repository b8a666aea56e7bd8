package features_test

import (
	"context"
	"testing"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/features"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
)

// BenchmarkBuild measures the study's frozen-feature pass: a random
// ResNet-50 over 640 MNIST digits at 28×28, batch 64, keeping the input of
// layer1.2 (cases 2 and 3) and of fc (cases 1 and 4) in one pass, or fc's
// alone. Compare its img/s with BenchmarkForward's (./resnet): the same
// work, less the caching.
//
//	go test -run '^$' -bench Build ./features
func BenchmarkBuild(b *testing.B) {
	cfg, _ := resnet.ConfigFor("resnet50")
	base, err := backbone.Load(resnet.New(cfg), resnet.RandomStateDict(cfg, 1), "random", "")
	if err != nil {
		b.Fatal(err)
	}
	train, _, err := data.MNIST()
	if err != nil {
		b.Fatal(err)
	}
	d := train.Subset(640)
	pre := preprocess.Native(28)
	for _, c := range []struct {
		name   string
		stages []int
	}{
		{"layer1.2+fc", []int{base.Net.StageOf("layer1.2"), base.Net.StageOf("fc")}},
		{"fc", []int{base.Net.StageOf("fc")}},
	} {
		b.Run(c.name, func(b *testing.B) {
			p, err := features.NewPrefixes(testutil.Backend(), base, d, pre, c.stages, 64)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			m := testutil.StartMeter()
			for range b.N {
				if _, err := p.Build(context.Background(), d, features.Options{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(d.Len()*b.N)/b.Elapsed().Seconds(), "img/s")
			m.Report(b)
		})
	}
}
