package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/weights"
)

func runPredict(fs *flag.FlagSet, args []string, out io.Writer) error {
	var bf baseFlags
	bf.register(fs, "resnet50/IMAGENET1K_V2")
	var af adapterFlags
	af.register(fs)
	var size int
	registerImageSize(fs, &size, 0, "network input side N; N×N images are used as is, others are resized and center-cropped (default: the adapter's training size, else the weights' crop size, else 224)")
	top := fs.Int("top", 5, "how many classes to print per image")
	asJSON := fs.Bool("json", false, "print one JSON object per image, with the raw logits (before softmax)")
	batch := fs.Int("batch", 16, "images per forward pass (memory grows with it, not with the number of images)")
	images, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(images) == 0 {
		return usageErrorf("no IMAGE given")
	}
	if *top < 1 || *batch < 1 || *batch > 4096 {
		return usageErrorf("--top must be positive and --batch 1 to 4096")
	}
	if setFlags(fs)["image-size"] {
		if err := checkImageSize(size); err != nil {
			return err
		}
	}
	ctx, stop := signalContext()
	defer stop()
	b, err := bf.newBackend()
	if err != nil {
		return err
	}
	base, a, src, err := bf.load(ctx)
	if err != nil {
		return err
	}
	pre := src.Preprocess()
	if af.dir != "" {
		if a != nil {
			return fmt.Errorf("%s already has a head (a merged model?): apply adapters to plain base weights", src.Spec)
		}
		if a, err = af.load(base); err != nil {
			return err
		}
		// The adapter's own training input: MNIST adapters see 28×28 digits.
		pre = a.Info.Preprocess
	}
	if size > 0 {
		pre = pre.WithCrop(size)
	}
	p := classifier.NewPredictor(b, base, a)
	enc := json.NewEncoder(out)
	return p.ClassifyFiles(images, pre, *batch, *top, labelsFor(p, a), func(pr classifier.Prediction) error {
		if *asJSON {
			return enc.Encode(pr)
		}
		fmt.Fprintf(out, "%s\n", pr.Image)
		for r, c := range pr.Top {
			fmt.Fprintf(out, "  %d. %6.2f%%  %4d  %s\n", r+1, 100*c.Prob, c.Index, c.Label)
		}
		return nil
	})
}

// labelsFor names the classes: the adapter's, ImageNet's for a 1000-way
// base, else none ("class N").
func labelsFor(p *classifier.Predictor, a *adapter.Adapter) []string {
	if a != nil && len(a.Info.ClassNames) == p.NumClasses() {
		return a.Info.ClassNames
	}
	if p.NumClasses() == 1000 {
		if w, err := weights.Lookup("resnet50/DEFAULT"); err == nil && len(w.Categories) == 1000 {
			return w.Categories
		}
	}
	return nil
}
