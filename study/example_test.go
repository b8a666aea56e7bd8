package study_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/study"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/weights"
)

// Train an adapter on a small MNIST sample and save it in PEFT's format:
// the founding study's case 4 (fc replaced by a 10-class Linear) on a small
// ResNet-50-shaped checkpoint saved by PyTorch.
func ExampleJob() {
	ctx := context.Background()
	base, _, src, err := weights.Load(ctx, "../resnet/testdata/resnet50_w4.pth", weights.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	trainSet, testSet, err := data.MNIST()
	if err != nil {
		log.Fatal(err)
	}
	spec, err := adapter.Case(4)
	if err != nil {
		log.Fatal(err)
	}
	a, err := adapter.New(base.Net, spec)
	if err != nil {
		log.Fatal(err)
	}
	if err := a.Init(base, 0); err != nil {
		log.Fatal(err)
	}
	b, err := backend.New("go")
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "job")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := train.DefaultConfig() // 28×28 inputs, Adam, one epoch
	cfg.Batch = 32
	job := &study.Job{Backend: b, Base: base, Adapter: a, Config: cfg, Dir: dir,
		Train: trainSet.Subset(256), Test: testSet.Subset(100),
		BaseInfo: study.BaseInfo(base, src)}
	res, err := job.Run(ctx)
	if err != nil {
		log.Fatal(err)
	}
	saved, _, err := adapter.Load(filepath.Join(dir, "adapter"), base, false)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("trained %d parameters; the adapter has %d classes: %v\n", res.Trainable, saved.NumClasses(), saved.Info.ClassNames[:3])
	// Output: trained 1290 parameters; the adapter has 10 classes: [0 1 2]
}
