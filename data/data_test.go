package data

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/preprocess"
)

// norm is the hand formula Fill must match: torchvision's ToTensor then
// Normalize.
func norm(v float64, mean, std float32) float32 {
	return float32((v/255 - float64(mean)) / float64(std))
}

func near(a, b float32) bool { return math.Abs(float64(a-b)) <= 1e-5*max(1, math.Abs(float64(b))) }

func TestFillNative(t *testing.T) {
	gray := &Dataset{Name: "gray", N: 2, H: 3, W: 3, C: 1, ClassNames: []string{"a", "b"}, Labels: []int32{0, 1},
		Images: []uint8{0, 10, 20, 30, 40, 50, 60, 70, 80 /* image 1: */, 255, 128, 1, 2, 3, 4, 5, 6, 7}}
	rgb := &Dataset{Name: "rgb", N: 1, H: 2, W: 2, C: 3, ClassNames: []string{"a"}, Labels: []int32{0},
		Images: []uint8{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}
	mean, std := preprocess.ImageNetMean, preprocess.ImageNetStd
	t.Run("gray to 3 channels", func(t *testing.T) {
		dst := make([]float32, 2*3*9)
		labels := make([]int32, 2)
		gray.Fill([]int{1, 0}, preprocess.Preprocess{Crop: 3, Mean: mean, Std: std}, nil, dst, labels)
		if !slices.Equal(labels, []int32{1, 0}) {
			t.Errorf("labels %v, want [1 0]", labels)
		}
		for k, i := range []int{1, 0} {
			for c := range 3 {
				for p := range 9 {
					v := gray.Images[i*9+p]
					if got, want := dst[(k*3+c)*9+p], norm(float64(v), mean[c], std[c]); !near(got, want) {
						t.Fatalf("image %d channel %d pixel %d (byte %d): %v, want %v", i, c, p, v, got, want)
					}
				}
			}
		}
		// A hand-computed value: 255 in channel 0 is (1-0.485)/0.229.
		if got := dst[0]; !near(got, 2.2489083) {
			t.Errorf("white, channel 0: %v, want 2.2489083", got)
		}
	})
	t.Run("rgb", func(t *testing.T) {
		dst := make([]float32, 3*4)
		labels := make([]int32, 1)
		rgb.Fill([]int{0}, preprocess.Preprocess{Crop: 2, Mean: mean, Std: std}, nil, dst, labels)
		for c := range 3 {
			for p := range 4 {
				v := rgb.Images[p*3+c]
				if got, want := dst[c*4+p], norm(float64(v), mean[c], std[c]); !near(got, want) {
					t.Errorf("channel %d pixel %d: %v, want %v", c, p, got, want)
				}
			}
		}
	})
}

func TestFillResize(t *testing.T) {
	unit := [3]float32{0, 0, 0}
	one := [3]float32{1, 1, 1}
	// Each row 0, 255 enlarged 2→4 on half-pixel centers samples at
	// x = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
	d := &Dataset{N: 1, H: 2, W: 2, C: 1, Images: []uint8{0, 255, 0, 255}, Labels: []int32{0}, ClassNames: []string{"a"}}
	dst := make([]float32, 3*16)
	d.Fill([]int{0}, preprocess.Preprocess{Crop: 4, Mean: unit, Std: one}, nil, dst, make([]int32, 1))
	want := []float32{0, 0.25, 0.75, 1}
	for c := range 3 {
		for y := range 4 {
			for x := range 4 {
				if got := dst[c*16+y*4+x]; !near(got, want[x]) {
					t.Fatalf("channel %d (%d,%d): %v, want %v", c, y, x, got, want[x])
				}
			}
		}
	}
	// Normalization after resizing, and shrinking a uniform image stays uniform.
	u := &Dataset{N: 1, H: 9, W: 7, C: 3, Images: slices.Repeat([]uint8{200, 100, 50}, 63), Labels: []int32{0}, ClassNames: []string{"a"}}
	dst = make([]float32, 3*4*4)
	u.Fill([]int{0}, preprocess.Native(4), nil, dst, make([]int32, 1))
	for c, v := range []float64{200, 100, 50} {
		for p := range 16 {
			if got, want := dst[c*16+p], norm(v, preprocess.ImageNetMean[c], preprocess.ImageNetStd[c]); !near(got, want) {
				t.Fatalf("channel %d pixel %d: %v, want %v", c, p, got, want)
			}
		}
	}
}

// A white 4×4 image shifted down by 2 (rows 0 and 1 black) and enlarged
// to 8×8: output row o samples source row (o+0.5)/2-0.5, so rows 0–2
// (≤ 0.75) are black, row 3 (1.25) is ¼ white, row 4 (1.75) ¾, rows 5+ white.
func TestShiftThenResize(t *testing.T) {
	img := slices.Repeat([]uint8{255}, 16)
	r := preprocess.NewResizer(4, 4, 8, 8)
	out, tmp := make([]float32, 64), make([]float32, r.ScratchLen())
	r.Channel(out, tmp, img, 1, 0, 2, 0)
	for y, want := range []float32{0, 0, 0, 0.25 * 255, 0.75 * 255, 255, 255, 255} {
		for x := range 8 {
			if got := out[y*8+x]; !near(got, want) {
				t.Fatalf("(%d,%d) = %v, want %v", y, x, got, want)
			}
		}
	}
}

func TestFillAugment(t *testing.T) {
	const h, w = 7, 7
	dot := make([]uint8, h*w) // one white pixel at the center
	dot[3*w+3] = 255
	white := slices.Repeat([]uint8{255}, h*w)
	d := &Dataset{N: 2, H: h, W: w, C: 1, Images: append(dot, white...), Labels: []int32{0, 1}, ClassNames: []string{"dot", "white"}}
	const n = 40
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i % 2
	}
	fill := func(seed uint64) []float32 {
		dst := make([]float32, n*3*h*w)
		d.Fill(idx, preprocess.Preprocess{Crop: h, Std: [3]float32{1, 1, 1}}, rand.New(rand.NewPCG(seed, 1)), dst, make([]int32, n))
		return dst
	}
	a, b, c := fill(7), fill(7), fill(8)
	if !slices.Equal(a, b) {
		t.Error("same seed, different batches")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds, same batch")
	}
	// Replay the documented draws: dy then dx per image.
	rng := rand.New(rand.NewPCG(7, 1))
	moved := 0
	for k := range n {
		dy, dx := rng.IntN(2*MaxShift+1)-MaxShift, rng.IntN(2*MaxShift+1)-MaxShift
		moved += b2i(dy != 0 || dx != 0)
		for ch := range 3 {
			plane := a[(k*3+ch)*h*w : (k*3+ch+1)*h*w]
			for y := range h {
				for x := range w {
					var want float32
					if idx[k] == 0 && y == 3+dy && x == 3+dx {
						want = 1
					}
					sy, sx := y-dy, x-dx // white image: white where the source is inside
					if idx[k] == 1 && sy >= 0 && sy < h && sx >= 0 && sx < w {
						want = 1
					}
					if plane[y*w+x] != want {
						t.Fatalf("image %d (shift %d,%d) channel %d (%d,%d): %v, want %v", k, dy, dx, ch, y, x, plane[y*w+x], want)
					}
				}
			}
		}
	}
	if moved < n/2 {
		t.Errorf("only %d of %d images shifted", moved, n)
	}
	// With resizing the same seed still gives the same batch.
	r1, r2 := make([]float32, 2*3*16*16), make([]float32, 2*3*16*16)
	d.Fill([]int{0, 1}, preprocess.Native(16), rand.New(rand.NewPCG(3, 3)), r1, make([]int32, 2))
	d.Fill([]int{0, 1}, preprocess.Native(16), rand.New(rand.NewPCG(3, 3)), r2, make([]int32, 2))
	if !slices.Equal(r1, r2) {
		t.Error("resized augmented batches differ for the same seed")
	}
}

func TestFillAllocs(t *testing.T) {
	sets, err := loadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	d := sets[0]
	idx := []int{5, 1, 59999, 0}
	dst, labels := make([]float32, len(idx)*3*28*28), make([]int32, len(idx))
	rng := rand.New(rand.NewPCG(1, 2))
	if a := testing.AllocsPerRun(20, func() { d.Fill(idx, preprocess.Native(28), rng, dst, labels) }); a != 0 {
		t.Errorf("native Fill: %v allocations, want 0", a)
	}
	if want := []int32{2, 0, 8, 5}; !slices.Equal(labels, want) {
		t.Errorf("labels %v, want %v", labels, want)
	}
}

func TestFillPanics(t *testing.T) {
	d := &Dataset{Name: "toy", N: 1, H: 2, W: 2, C: 1, Images: make([]uint8, 4), Labels: []int32{0}, ClassNames: []string{"a"}}
	for _, tc := range []struct {
		name string
		fill func()
		msg  string
	}{
		{"index", func() { d.Fill([]int{1}, preprocess.Native(2), nil, make([]float32, 12), make([]int32, 1)) }, "index 1 out of range"},
		{"negative index", func() { d.Fill([]int{-1}, preprocess.Native(2), nil, make([]float32, 12), make([]int32, 1)) }, "index -1"},
		{"short dst", func() { d.Fill([]int{0}, preprocess.Native(2), nil, make([]float32, 11), make([]int32, 1)) }, "dst has 11"},
		{"short labels", func() { d.Fill([]int{0}, preprocess.Native(2), nil, make([]float32, 12), nil) }, "labels 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, tc.msg) {
					t.Errorf("panic %q, want %q", r, tc.msg)
				}
			}()
			tc.fill()
		})
	}
}

func TestSubset(t *testing.T) {
	d := &Dataset{Name: "toy", N: 10, H: 1, W: 1, C: 1, ClassNames: []string{"a", "b", "c"},
		Images: seq(10), Labels: []int32{0, 1, 0, 0, 2, 0, 1, 0, 1, 0}}
	for _, tc := range []struct {
		n    int
		want []uint8 // image bytes = original indices
	}{
		{5, []uint8{0, 1, 2, 3, 6}}, // quotas 3.5, 1.5, 0.5 → 3 + 2 (tie to lower class) + 0
		{3, []uint8{0, 1, 2}},       // 2.1, 0.9, 0.3 → 2 + 1 + 0
		{9, []uint8{0, 1, 2, 3, 4, 5, 6, 7, 8}},
	} {
		s := d.Subset(tc.n)
		if s.Len() != tc.n || !slices.Equal(s.Images, tc.want) {
			t.Errorf("Subset(%d): images %v, want %v", tc.n, s.Images, tc.want)
		}
		for k, v := range s.Images {
			if s.Labels[k] != d.Labels[v] {
				t.Errorf("Subset(%d): image %d has label %d, want %d", tc.n, k, s.Labels[k], d.Labels[v])
			}
		}
	}
	if d.Subset(0) != d || d.Subset(10) != d || d.Subset(11) != d {
		t.Error("Subset of 0 or ≥ Len should be the set itself")
	}
	s := d.Subset(5)
	s.Images[0] = 99
	if d.Images[0] != 0 {
		t.Error("Subset shares its images with the original")
	}

	sets, err := loadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	m := sets[0].Subset(1000)
	for c, n := range m.ClassCounts() {
		if want := float64(sets[0].ClassCounts()[c]) / 60; math.Abs(float64(n)-want) > 1 {
			t.Errorf("MNIST Subset(1000) class %d: %d images, want %.1f", c, n, want)
		}
	}
	if m.Len() != 1000 || m.Labels[0] != 5 {
		t.Errorf("MNIST Subset(1000): %v, first label %d", m, m.Labels[0])
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	for _, split := range []string{"train", "val"} {
		for _, c := range []string{"ant", "bee"} {
			for i := range 3 {
				writePNG(t, dir+"/"+split+"/"+c+"/"+string(rune('a'+i))+".png", solid(5, 4, colorOf(0, i)))
			}
		}
	}
	train, test, err := Load(dir, Options{Size: 6})
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 6 || test.Len() != 6 || train.H != 6 || !slices.Equal(test.ClassNames, []string{"ant", "bee"}) {
		t.Errorf("train/val layout: %v, %v", train, test)
	}
	flat := dir + "/train"
	train, test, err = Load(flat, Options{Size: 6, ValSplit: 0.34})
	if err != nil || train.Len() != 4 || test.Len() != 2 {
		t.Errorf("flat layout: %v, %v, %v", train, test, err)
	}
	writePNG(t, dir+"/val/cow/a.png", solid(2, 2, colorOf(0, 0)))
	if _, _, err := Load(dir, Options{}); err == nil || !strings.Contains(err.Error(), "different class folders") {
		t.Errorf("mismatched classes: err = %v", err)
	}
	for _, spec := range []string{"imagenet", dir + "/nope", dir + "/train/ant/a.png"} {
		if _, _, err := Load(spec, Options{}); err == nil || !strings.Contains(err.Error(), spec) {
			t.Errorf("Load(%q): err = %v", spec, err)
		}
	}
}

func BenchmarkFill(b *testing.B) {
	sets, err := loadMNIST()
	if err != nil {
		b.Fatal(err)
	}
	idx := make([]int, 64)
	for i := range idx {
		idx[i] = i * 37
	}
	for _, size := range []int{28, 224} {
		b.Run(map[int]string{28: "native28", 224: "resize224"}[size], func(b *testing.B) {
			dst, labels := make([]float32, 64*3*size*size), make([]int32, 64)
			rng := rand.New(rand.NewPCG(1, 1))
			for b.Loop() {
				sets[0].Fill(idx, preprocess.Native(size), rng, dst, labels)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/image")
		})
	}
}

// lorafit/train's Data interface, restated so a drift shows up here
// without importing train.
var _ interface {
	Len() int
	NumClasses() int
	Fill(idx []int, p preprocess.Preprocess, rng *rand.Rand, dst []float32, labels []int32)
} = (*Dataset)(nil)
