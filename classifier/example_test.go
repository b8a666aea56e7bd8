package classifier_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backend"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/weights"
)

// Load a base network and an adapter trained on it, and classify an image.
// The base here is a small ResNet-50-shaped checkpoint saved by PyTorch; pass
// "resnet50/IMAGENET1K_V2" to download and use torchvision's real one.
func Example() {
	ctx := context.Background()
	base, _, _, err := weights.Load(ctx, "../resnet/testdata/resnet50_w4.pth", weights.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// An adapter in PEFT's directory format, bound to that base's sha256.
	a, _, err := adapter.Load("../lora/testdata/case4_like", base, false)
	if err != nil {
		log.Fatal(err)
	}
	b, err := backend.New("go")
	if err != nil {
		log.Fatal(err)
	}
	p := classifier.NewPredictor(b, base, a)
	images := []string{"../cmd/lorafit/testdata/mnist_test0_label7.png"}
	err = p.ClassifyFiles(images, a.Info.Preprocess, 16, 3, a.Info.ClassNames, func(pr classifier.Prediction) error {
		fmt.Printf("%s: %d classes, most likely %q\n", filepath.Base(pr.Image), len(pr.Logits), pr.Top[0].Label)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: mnist_test0_label7.png: 7 classes, most likely "six"
}

// Fold an adapter into its base: a plain network that runs at base speed
// and loads in PyTorch with load_state_dict.
func ExampleMerge() {
	base, _, _, err := weights.Load(context.Background(), "../resnet/testdata/resnet50_w4.pth", weights.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	a, _, err := adapter.Load("../lora/testdata/case2_like", base, false)
	if err != nil {
		log.Fatal(err)
	}
	sd, err := classifier.Merge(base, a)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "merged")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := safetensors.Save(filepath.Join(dir, "merged.safetensors"), sd, map[string]string{"format": "pt"}); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d LoRA modules merged into %d tensors\n", len(a.Targets), sd.Len())
	// Output: 4 LoRA modules merged into 326 tensors
}
