package train

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/pth"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/resnet"
)

// TestManyAdaptersOneBase: in one process on one base, two adapters with
// different heads (10 and 4 classes) give, call after call, the logits each
// gives when loaded alone on its own copy of the base; training one of them
// leaves every base tensor as it was.
func TestManyAdaptersOneBase(t *testing.T) {
	loadFresh := func() *backbone.Base {
		sd, err := pth.Load(testutil.ResNet50W4)
		if err != nil {
			t.Fatal(err)
		}
		b, err := resnet.FromStateDict(sd, "", "fixture", "fixture-sha")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := loadFresh()
	digest := base.Digest()

	ten := lora.Default()
	ten.TargetModules, ten.R, ten.LoraAlpha, ten.ModulesToSave, ten.InitLoraWeights = lora.Targets{Regex: `.*\.2\.conv3`}, 4, 8, []string{"fc", "head"}, lora.InitRandom
	a10, err := adapter.New(base.Net, adapter.Spec{LoRA: ten, Head: adapter.Head{16, 8}, NumClasses: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := a10.Init(base, 1); err != nil {
		t.Fatal(err)
	}
	four := lora.Default()
	four.TargetModules, four.R, four.LoraAlpha, four.ModulesToSave = lora.Targets{List: []string{"layer4.2.conv3"}}, 2, 2, []string{"fc"}
	a4, err := adapter.New(base.Net, adapter.Spec{LoRA: four, ReplaceFC: true, NumClasses: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := a4.Init(base, 2); err != nil {
		t.Fatal(err)
	}
	cfg := recipe
	cfg.Epochs = 1
	tr, err := New(goBackend(), base, a4, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Fit(context.Background(), newSynth(32, 3)); err != nil {
		t.Fatal(err)
	}
	if base.Digest() != digest {
		t.Fatal("training an adapter changed the base's tensors")
	}
	dirs := map[int]string{}
	for n, a := range map[int]*adapter.Adapter{10: a10, 4: tr.Adapter()} {
		a.Info.Base.SHA256, a.Info.Preprocess = "fixture-sha", recipe.Preprocess
		dirs[n] = filepath.Join(t.TempDir(), "adapter")
		if err := a.Save(dirs[n], checkpoint.F32); err != nil {
			t.Fatal(err)
		}
	}
	logits := func(p *classifier.Predictor, x *tensors.Tensor) []float32 {
		out, err := p.Logits(x)
		if err != nil {
			t.Fatal(err)
		}
		return tensors.MustCopyFlatData[float32](out)
	}
	alone, shared := map[int][]float32{}, map[int]*classifier.Predictor{}
	x := newSynth(2, 9)
	batch := make([]float32, 0, 2*3*28*28)
	for _, img := range x.x {
		batch = append(batch, img...)
	}
	input := tensors.FromFlatDataAndDimensions(batch, 2, 3, 28, 28)
	for n, dir := range dirs {
		own := loadFresh()
		a, _, err := adapter.Load(dir, own, false)
		if err != nil {
			t.Fatal(err)
		}
		alone[n] = logits(classifier.NewPredictor(goBackend(), own, a), input)
		if a, _, err = adapter.Load(dir, base, false); err != nil {
			t.Fatal(err)
		}
		shared[n] = classifier.NewPredictor(goBackend(), base, a)
	}
	for _, n := range []int{10, 4, 10, 4, 4, 10} {
		got := logits(shared[n], input)
		if len(got) != 2*n {
			t.Fatalf("%d-class adapter: %d logits", n, len(got))
		}
		if d := testutil.MaxRelDiff(got, alone[n]); d > 1e-6 {
			t.Errorf("%d-class adapter on the shared base: logits differ from alone by %.2g", n, d)
		}
	}
	if base.Digest() != digest {
		t.Error("serving adapters changed the base's tensors")
	}
}
