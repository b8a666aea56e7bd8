package resnet

import (
	"math"
	"slices"
	"testing"
)

// TestRandomStateDict: a seed gives the same tensors every time, another
// seed others, and the values follow torchvision's init: kaiming-normal
// fan_out convs, nn.Linear's U(±1/√in) fc, unit batch norm weights.
func TestRandomStateDict(t *testing.T) {
	cfg, err := ConfigFor("resnet18")
	if err != nil {
		t.Fatal(err)
	}
	a, b, other := RandomStateDict(cfg, 7), RandomStateDict(cfg, 7), RandomStateDict(cfg, 8)
	for _, name := range a.Names {
		x, err := a.Get(name).Float32s()
		if err != nil {
			continue // num_batches_tracked
		}
		y, _ := b.Get(name).Float32s()
		if !slices.Equal(x, y) {
			t.Fatalf("%s: seed 7 gave other values on a second call", name)
		}
	}
	conv, _ := a.Get("layer2.0.conv2.weight").Float32s() // [128, 128, 3, 3]
	conv8, _ := other.Get("layer2.0.conv2.weight").Float32s()
	if slices.Equal(conv, conv8) {
		t.Fatal("seeds 7 and 8 gave the same conv weight")
	}
	var sum, sq float64
	for _, v := range conv {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(len(conv))
	std, want := math.Sqrt(sq/n-(sum/n)*(sum/n)), math.Sqrt(2/float64(128*3*3))
	if math.Abs(std/want-1) > 0.02 || math.Abs(sum/n) > 0.05*want {
		t.Errorf("layer2.0.conv2.weight: mean %.4g, std %.4g, want 0 and %.4g (kaiming normal, fan_out)", sum/n, std, want)
	}
	fc, _ := a.Get("fc.weight").Float32s()
	bound := 1 / math.Sqrt(512)
	lo, hi := slices.Min(fc), slices.Max(fc)
	if lo < -float32(bound) || hi > float32(bound) || hi < 0.9*float32(bound) || lo > -0.9*float32(bound) {
		t.Errorf("fc.weight in [%g, %g], want U(±%g)", lo, hi, bound)
	}
	bn, _ := a.Get("bn1.weight").Float32s()
	if slices.Min(bn) != 1 || slices.Max(bn) != 1 {
		t.Errorf("bn1.weight not all ones")
	}
}
