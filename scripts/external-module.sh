#!/usr/bin/env bash
# An outside Go program uses lorafit as a library: a fresh module that
# requires github.com/lorafit/lorafit (replaced by this checkout) loads a base
# and an adapter, classifies an image, trains an adapter and merges it — the
# packages' Examples as a user would write them. It must build, pass go vet
# and run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module example.com/classify

go 1.27.3

require github.com/lorafit/lorafit v0.0.0

replace github.com/lorafit/lorafit => $repo
MOD
cat > main.go <<'GO'
// Command classify is an outside program using lorafit as a library.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/study"
	"github.com/lorafit/lorafit/train"
	"github.com/lorafit/lorafit/weights"
)

func main() {
	repo := os.Args[1]
	ctx := context.Background()
	base, _, src, err := weights.Load(ctx, filepath.Join(repo, "resnet/testdata/resnet50_w4.pth"), weights.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	b, err := backend.New("go")
	if err != nil {
		log.Fatal(err)
	}
	// Predict with a saved adapter.
	a, _, err := adapter.Load(filepath.Join(repo, "lora/testdata/case4_like"), base, false)
	if err != nil {
		log.Fatal(err)
	}
	images := []string{filepath.Join(repo, "cmd/lorafit/testdata/mnist_test0_label7.png")}
	err = classifier.NewPredictor(b, base, a).ClassifyFiles(images, a.Info.Preprocess, 8, 1, a.Info.ClassNames,
		func(p classifier.Prediction) error {
			fmt.Printf("%s: %q (%.2f)\n", filepath.Base(p.Image), p.Top[0].Label, p.Top[0].Prob)
			return nil
		})
	if err != nil {
		log.Fatal(err)
	}
	// Train a new adapter and save it.
	trainSet, testSet, err := data.MNIST()
	if err != nil {
		log.Fatal(err)
	}
	spec, _ := adapter.Case(4)
	fresh, err := adapter.New(base.Net, spec)
	if err != nil {
		log.Fatal(err)
	}
	if err := fresh.Init(base, 0); err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "classify")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	job := &study.Job{Backend: b, Base: base, Adapter: fresh, Config: train.DefaultConfig(), Dir: dir,
		Train: trainSet.Subset(128), Test: testSet.Subset(64),
		BaseInfo: adapter.BaseInfo{Arch: base.Net.Arch(), Weights: src.Spec, SHA256: src.SHA256}}
	res, err := job.Run(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Merge it into the base.
	trained, _, err := adapter.Load(filepath.Join(dir, "adapter"), base, false)
	if err != nil {
		log.Fatal(err)
	}
	merged, err := classifier.Merge(base, trained)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("trained %d parameters, test accuracy %.2f; merged model: %d tensors\n", res.Trainable, res.Accuracy, merged.Len())
}
GO
go mod tidy >/dev/null
go vet ./...
go run . "$repo"
