package serve

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
	"github.com/lorafit/lorafit/weights"
)

// BenchmarkEngine: batches of 64 on the full-size ResNet-50 at 28×28, with
// the founding study's case 2 (LoRA r=8 on four convs, own fc, MLP head):
// one hot adapter, 8 adapters mixed in every batch, and the hot adapter
// merged into plain weights.
//
//	go test -run NONE -bench Engine -benchtime 10x ./serve
func BenchmarkEngine(b *testing.B) {
	ctx := context.Background()
	base, _, _, err := weights.Load(ctx, "random", weights.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(testutil.Backend(), base, EngineOptions{MaxBatch: 64})
	defer e.Close()
	pre := preprocess.Native(28)
	var models []*Model
	var first *adapter.Adapter
	for i := range 8 {
		spec, _ := adapter.Case(2)
		spec.LoRA.InitLoraWeights = lora.InitRandom
		a, err := adapter.New(base.Net, spec)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Init(base, uint64(i)); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = a
		}
		m, err := e.Prepare(fmt.Sprint("a", i), a, pre, nil)
		if err != nil {
			b.Fatal(err)
		}
		models = append(models, m)
	}
	sd, err := classifier.Merge(base, first)
	if err != nil {
		b.Fatal(err)
	}
	rest, head, _ := classifier.SplitMerged(sd)
	mbase, err := resnet.FromStateDict(rest, "", "merged", "merged")
	if err != nil {
		b.Fatal(err)
	}
	ha, err := classifier.HeadAdapter(mbase.Net, head)
	if err != nil {
		b.Fatal(err)
	}
	me := NewEngine(testutil.Backend(), mbase, EngineOptions{MaxBatch: 64})
	defer me.Close()
	merged, err := me.Prepare("merged", ha, pre, nil)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	batch := func(pick func(i int) *Model) []Item {
		items := make([]Item, 64)
		for i := range items {
			items[i] = Item{Model: pick(i), X: randomImage(rng, 28)}
		}
		return items
	}
	for _, c := range []struct {
		name  string
		e     *Engine
		items []Item
	}{
		{"hot", e, batch(func(int) *Model { return models[0] })},
		{"mixed8", e, batch(func(i int) *Model { return models[i%8] })},
		{"merged", me, batch(func(int) *Model { return merged })},
	} {
		b.Run(c.name, func(b *testing.B) {
			if _, _, err := c.e.Run(c.items); err != nil { // compile
				b.Fatal(err)
			}
			var st Stats
			b.ResetTimer()
			for b.Loop() {
				_, s, err := c.e.Run(c.items)
				if err != nil {
					b.Fatal(err)
				}
				st.Trunk += s.Trunk
				st.Tails += s.Tails
			}
			b.ReportMetric(float64(64*b.N)/b.Elapsed().Seconds(), "img/s")
			b.ReportMetric(float64(st.Trunk.Milliseconds())/float64(b.N), "trunk-ms")
			b.ReportMetric(float64(st.Tails.Milliseconds())/float64(b.N), "tails-ms")
		})
	}
}
