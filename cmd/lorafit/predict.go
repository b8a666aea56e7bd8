package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"io"
	"math"
	"sort"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/transforms"
	"github.com/lorafit/lorafit/weights"
)

func init() {
	verbs["predict"] = verb{
		summary: "classify PNG/JPEG images with a ResNet and print the top classes",
		usage:   "predict [--weights W] [--adapter DIR] [--model resnet50] [--image-size N] [--top K] [--json] IMAGE...",
		run:     runPredict,
	}
}

type prediction struct {
	Image  string      `json:"image"`
	Top    []classProb `json:"top"`
	Logits []float32   `json:"logits"`
}

type classProb struct {
	Index int     `json:"index"`
	Label string  `json:"label"`
	Prob  float64 `json:"prob"`
}

func runPredict(fs *flag.FlagSet, args []string, out io.Writer) error {
	var mf modelFlags
	mf.register(fs)
	size := fs.Int("image-size", 0, "network input side N; N×N images are used as is, others are resized and center-cropped (default: the adapter's training size, else the weights' crop size, else 224)")
	top := fs.Int("top", 5, "how many classes to print per image")
	asJSON := fs.Bool("json", false, "print one JSON object per image, with the raw logits (before softmax)")
	batch := fs.Int("batch", 16, "images per forward pass")
	images, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(images) == 0 {
		return usageErrorf("no IMAGE given")
	}
	if *top < 1 || *batch < 1 {
		return usageErrorf("--top and --batch must be positive")
	}
	// Decode everything first: a bad file fails the run before the model
	// is loaded and before any output.
	decoded := make([]image.Image, len(images))
	for i, path := range images {
		if decoded[i], err = transforms.Decode(path); err != nil {
			return err
		}
	}
	b, err := backend.New(backend.Resolve(mf.backend))
	if err != nil {
		return err
	}
	net, src, err := mf.load(context.Background())
	if err != nil {
		return err
	}
	preset := transforms.Preset{CropSize: 224, ResizeSize: 256, Mean: transforms.ImageNetMean, Std: transforms.ImageNetStd}
	if w := src.Registry; w != nil {
		preset = transforms.Preset{CropSize: w.Transforms.CropSize, ResizeSize: w.Transforms.ResizeSize, Mean: w.Transforms.Mean, Std: w.Transforms.Std}
	}
	if info := mf.info; info != nil && info.ImageSize > 0 {
		// The adapter's own training input: MNIST adapters see 28×28 digits.
		preset = transforms.Preset{CropSize: info.ImageSize, ResizeSize: info.ImageSize, Mean: info.Mean, Std: info.Std}
	}
	if *size > 0 {
		preset.ResizeSize = int(math.Round(float64(*size) * float64(preset.ResizeSize) / float64(preset.CropSize)))
		preset.CropSize = *size
	}
	classes := net.Base.Config.NumClasses
	if net.Spec.NumClasses > 0 {
		classes = net.Spec.NumClasses
	}
	labels := labelsFor(classes)
	if info := mf.info; info != nil && len(info.ClassNames) == classes {
		labels = info.ClassNames
	}

	inputs := make([][]float32, len(images))
	for i, img := range decoded {
		inputs[i] = preset.Apply(img)
	}
	exec, err := model.NewExec(b, net.Base.Store, func(_ *model.Scope, x *Node) *Node { return net.Logits(x) })
	if err != nil {
		return err
	}
	n := preset.CropSize
	enc := json.NewEncoder(out)
	for start := 0; start < len(images); start += *batch {
		end := min(start+*batch, len(images))
		flat := make([]float32, 0, (end-start)*3*n*n)
		for _, in := range inputs[start:end] {
			flat = append(flat, in...)
		}
		res, err := exec.Call(tensors.FromFlatDataAndDimensions(flat, end-start, 3, n, n))
		if err != nil {
			return err
		}
		logits := tensors.MustCopyFlatData[float32](res[0])
		k := classes
		for i := start; i < end; i++ {
			p := prediction{Image: images[i], Logits: logits[(i-start)*k : (i-start+1)*k]}
			p.Top = topK(p.Logits, *top, labels)
			if *asJSON {
				if err := enc.Encode(p); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(out, "%s\n", p.Image)
			for r, c := range p.Top {
				fmt.Fprintf(out, "  %d. %6.2f%%  %4d  %s\n", r+1, 100*c.Prob, c.Index, c.Label)
			}
		}
	}
	return nil
}

// labelsFor names classes: ImageNet's for a 1000-way head, else "class N".
func labelsFor(n int) []string {
	if n == 1000 {
		if w, err := weights.Lookup("resnet50/DEFAULT"); err == nil && len(w.Categories) == 1000 {
			return w.Categories
		}
	}
	labels := make([]string, n)
	for i := range labels {
		labels[i] = fmt.Sprintf("class %d", i)
	}
	return labels
}

// topK applies softmax and returns the k most probable classes.
func topK(logits []float32, k int, labels []string) []classProb {
	maxLogit := math.Inf(-1)
	for _, v := range logits {
		maxLogit = math.Max(maxLogit, float64(v))
	}
	var sum float64
	probs := make([]float64, len(logits))
	for i, v := range logits {
		probs[i] = math.Exp(float64(v) - maxLogit)
		sum += probs[i]
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return probs[idx[a]] > probs[idx[b]] })
	k = min(k, len(idx))
	out := make([]classProb, k)
	for r, i := range idx[:k] {
		out[r] = classProb{Index: i, Label: labels[i], Prob: probs[i] / sum}
	}
	return out
}
