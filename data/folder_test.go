package data

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writePNG(t testing.TB, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// colorOf gives image i of class c a color of its own, so tests can tell
// which file ended up where.
func colorOf(c, i int) color.NRGBA { return color.NRGBA{uint8(40 * c), uint8(10 * i), 200, 255} }

func solid(w, h int, c color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

// makeTree writes classes × perClass solid PNGs of assorted sizes (wide,
// tall, square, in a sub-folder) and a file ImageFolder must ignore.
func makeTree(t *testing.T, classes []string, perClass int) string {
	dir := t.TempDir()
	for _, c := range classes {
		ci := slices.Index(slices.Sorted(slices.Values(classes)), c)
		for i := range perClass {
			path := filepath.Join(dir, c, fmt.Sprintf("img%02d.png", i))
			if i == 1 {
				path = filepath.Join(dir, c, "sub", "img01.png")
			}
			writePNG(t, path, solid(5+i%3*4, 5+i%2*7, colorOf(ci, i)))
		}
		os.WriteFile(filepath.Join(dir, c, "notes.txt"), []byte("not an image"), 0o644)
	}
	return dir
}

func TestImageFolder(t *testing.T) {
	dir := makeTree(t, []string{"dog", "ant", "cat"}, 10)
	train, val, err := ImageFolder(dir, 6, 0.3, 42)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ant", "cat", "dog"}; !slices.Equal(train.ClassNames, want) || !slices.Equal(val.ClassNames, want) {
		t.Errorf("classes %q, want %q", train.ClassNames, want)
	}
	if !slices.Equal(train.ClassCounts(), []int{7, 7, 7}) || !slices.Equal(val.ClassCounts(), []int{3, 3, 3}) {
		t.Errorf("split %v / %v, want 7 / 3 per class", train.ClassCounts(), val.ClassCounts())
	}
	if train.H != 6 || train.W != 6 || train.C != 3 || len(train.Images) != 21*6*6*3 {
		t.Errorf("train %v", train)
	}
	// Solid images stay solid through resize and crop, and each landed
	// with its own class: color (40·class, 10·i, 200).
	seen := map[[2]int]bool{}
	for _, d := range []*Dataset{train, val} {
		for k := range d.Len() {
			img := d.Image(k)
			r, g, b := img[0], img[1], img[2]
			if int(r) != 40*d.Label(k) || b != 200 || g%10 != 0 {
				t.Errorf("%s image %d, label %d: color %d,%d,%d", d.Name, k, d.Label(k), r, g, b)
			}
			for p := 0; p < len(img); p += 3 {
				if img[p] != r || img[p+1] != g || img[p+2] != b {
					t.Fatalf("%s image %d is not solid at byte %d", d.Name, k, p)
				}
			}
			seen[[2]int{d.Label(k), int(g) / 10}] = true
		}
	}
	if len(seen) != 30 {
		t.Errorf("%d distinct images, want 30", len(seen))
	}

	// The split is a function of the seed.
	valKey := func(d *Dataset) string { return fmt.Sprint(d.Labels, d.Images) }
	train2, val2, err := ImageFolder(dir, 6, 0.3, 42)
	if err != nil || valKey(val2) != valKey(val) || valKey(train2) != valKey(train) {
		t.Errorf("same seed, different split (err %v)", err)
	}
	_, val3, err := ImageFolder(dir, 6, 0.3, 43)
	if err != nil || valKey(val3) == valKey(val) {
		t.Errorf("seeds 42 and 43 give the same split (err %v)", err)
	}
	// No split: everything trains; a class of one image keeps it for training.
	train4, val4, err := ImageFolder(dir, 6, 0, 1)
	if err != nil || train4.Len() != 30 || val4.Len() != 0 || val4.NumClasses() != 3 {
		t.Errorf("valSplit 0: %v / %v, %v", train4, val4, err)
	}
	// A class folder may be a symlink.
	linked := t.TempDir()
	for _, c := range []string{"ant", "cat", "dog"} {
		if err := os.Symlink(filepath.Join(dir, c), filepath.Join(linked, c)); err != nil {
			t.Fatal(err)
		}
	}
	if tr, _, err := ImageFolder(linked, 6, 0, 42); err != nil || valKey(tr) != valKey(train4) {
		t.Errorf("symlinked classes: %v, %v", tr, err)
	}
	one := makeTree(t, []string{"a", "b"}, 1)
	if tr, va, err := ImageFolder(one, 4, 0.9, 1); err != nil || tr.Len() != 2 || va.Len() != 0 {
		t.Errorf("one image per class, valSplit 0.9: %v / %v, %v", tr, va, err)
	}
}

func TestImageFolderColorModels(t *testing.T) {
	dir := t.TempDir()
	g := image.NewGray(image.Rect(0, 0, 4, 4))
	for i := range g.Pix {
		g.Pix[i] = 77
	}
	writePNG(t, filepath.Join(dir, "a", "gray.png"), g)
	// Alpha is dropped, not blended: PIL's convert("RGB").
	writePNG(t, filepath.Join(dir, "a", "alpha.png"), solid(4, 4, color.NRGBA{10, 20, 30, 0}))
	pal := image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.RGBA{1, 2, 3, 255}})
	writePNG(t, filepath.Join(dir, "a", "paletted.png"), pal)
	var buf bytes.Buffer
	jpeg.Encode(&buf, solid(16, 16, color.NRGBA{100, 150, 200, 255}), &jpeg.Options{Quality: 95})
	os.MkdirAll(filepath.Join(dir, "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "b", "photo.JPG"), buf.Bytes(), 0o644)
	d, _, err := ImageFolder(dir, 4, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Files in lexical order: alpha, gray, paletted, then b's photo.
	for k, want := range [][3]int{{10, 20, 30}, {77, 77, 77}, {1, 2, 3}, {100, 150, 200}} {
		img := d.Image(k)
		for c := range 3 {
			if tol := 3 * b2i(k == 3); math.Abs(float64(int(img[c])-want[c])) > float64(tol) {
				t.Errorf("image %d: %v, want %v", k, img[:3], want)
				break
			}
		}
	}
}

func TestImageFolderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(dir string) // writes the tree
		want  func(dir string) string
	}{
		{"corrupt png", func(dir string) {
			writePNG(t, filepath.Join(dir, "a", "ok.png"), solid(3, 3, colorOf(0, 0)))
			os.WriteFile(filepath.Join(dir, "a", "broken.png"), []byte("\x89PNG\r\n\x1a\nnot really"), 0o644)
		}, func(dir string) string {
			return filepath.Join(dir, "a", "broken.png") + ": not a readable PNG or JPEG image"
		}},
		{"truncated png", func(dir string) {
			var buf bytes.Buffer
			png.Encode(&buf, solid(30, 30, colorOf(1, 1)))
			os.MkdirAll(filepath.Join(dir, "a"), 0o755)
			os.WriteFile(filepath.Join(dir, "a", "cut.png"), buf.Bytes()[:buf.Len()/2], 0o644)
		}, func(dir string) string { return filepath.Join(dir, "a", "cut.png") }},
		{"empty class", func(dir string) {
			writePNG(t, filepath.Join(dir, "a", "ok.png"), solid(3, 3, colorOf(0, 0)))
			os.MkdirAll(filepath.Join(dir, "b"), 0o755)
			os.WriteFile(filepath.Join(dir, "b", "readme.txt"), nil, 0o644)
		}, func(dir string) string { return `class "b" has no PNG or JPEG images` }},
		{"no classes", func(dir string) {
			os.WriteFile(filepath.Join(dir, "stray.png"), nil, 0o644)
		}, func(dir string) string { return dir + ": no class folders" }},
		{"missing dir", func(dir string) { os.Remove(dir) }, func(dir string) string { return dir }},
		{"unsupported format", func(dir string) {
			writePNG(t, filepath.Join(dir, "a", "ok.png"), solid(3, 3, colorOf(0, 0)))
			os.WriteFile(filepath.Join(dir, "a", "pic.webp"), nil, 0o644)
		}, func(dir string) string {
			return filepath.Join(dir, "a", "pic.webp") + ": .webp images are not supported"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			_, _, err := ImageFolder(dir, 4, 0.2, 1)
			if want := tc.want(dir); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to contain %q", err, want)
			}
		})
	}
	dir := makeTree(t, []string{"a"}, 2)
	for _, tc := range []struct {
		size  int
		split float64
		want  string
	}{{0, 0.2, "image size 0"}, {5000, 0.2, "image size 5000"}, {4, 1, "validation split 1"}, {4, -0.1, "validation split"}, {4, math.NaN(), "validation split"}} {
		if _, _, err := ImageFolder(dir, tc.size, tc.split, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("size %d split %v: err = %v, want %q", tc.size, tc.split, err, tc.want)
		}
	}
}

// TestResizeMatchesPIL compares load-time Resize+CenterCrop with PIL's
// (what torchvision uses on image files), when Debian's python3 has PIL.
// PIL works in 8-bit fixed point, so ±1 is allowed.
func TestResizeMatchesPIL(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 5))
	const size = 16
	var paths []string
	var ours []uint8
	for _, wh := range [][2]int{{37, 23}, {20, 45}, {9, 9}, {16, 40}, {300, 200}} {
		img := image.NewNRGBA(image.Rect(0, 0, wh[0], wh[1]))
		for i := range img.Pix {
			img.Pix[i] = uint8(rng.IntN(256))
			if i%4 == 3 {
				img.Pix[i] = 255
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("%dx%d.png", wh[0], wh[1]))
		writePNG(t, path, img)
		got := make([]uint8, size*size*3)
		if err := loadImage(path, size, got); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
		ours = append(ours, got...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, append([]string{"-c", `
import sys
from PIL import Image
import torchvision.transforms as T
n = int(sys.argv[1])
tf = T.Compose([T.Resize(n, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(n)])
for p in sys.argv[2:]:
    sys.stdout.buffer.write(tf(Image.open(p).convert("RGB")).tobytes())
`, fmt.Sprint(size)}, paths...)...).Output()
	if err != nil {
		t.Skipf("PIL/torchvision not usable by %s: %v", py, err)
	}
	if len(out) != len(ours) {
		t.Fatalf("PIL gave %d bytes, want %d", len(out), len(ours))
	}
	for k, path := range paths {
		worst := 0
		for i := k * size * size * 3; i < (k+1)*size*size*3; i++ {
			worst = max(worst, int(math.Abs(float64(int(ours[i])-int(out[i])))))
		}
		t.Logf("%s: largest difference from PIL %d", filepath.Base(path), worst)
		if worst > 1 {
			t.Errorf("%s: differs from PIL by up to %d", filepath.Base(path), worst)
		}
	}
}
