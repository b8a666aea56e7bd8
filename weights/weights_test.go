package weights

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/resnet"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"resnet50/IMAGENET1K_V2", "resnet50/IMAGENET1K_V2"},
		{"RESNET50/imagenet1k_v2", "resnet50/IMAGENET1K_V2"},
		{"ResNet50_Weights.IMAGENET1K_V2", "resnet50/IMAGENET1K_V2"},
		{"resnet50_weights.imagenet1k_v1", "resnet50/IMAGENET1K_V1"},
		{"resnet50/DEFAULT", "resnet50/IMAGENET1K_V2"},
		{"ResNet101_Weights.DEFAULT", "resnet101/IMAGENET1K_V2"},
		{"  resnet152/default ", "resnet152/IMAGENET1K_V2"},
		{"resnet18/DEFAULT", "resnet18/IMAGENET1K_V1"},
		{"ResNet34_Weights.IMAGENET1K_V1", "resnet34/IMAGENET1K_V1"},
	}
	for _, tc := range tests {
		w, err := Lookup(tc.in)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tc.in, err)
			continue
		}
		if w.Name != tc.want {
			t.Errorf("Lookup(%q) = %s, want %s", tc.in, w.Name, tc.want)
		}
	}
}

func TestLookupUnknown(t *testing.T) {
	for _, in := range []string{
		"resnet18/IMAGENET1K_V2", // only V1 exists
		"vgg16/IMAGENET1K_V1",
		"resnet50",
		"",
		"resnet50/",
		"/IMAGENET1K_V1",
		"ResNet50_Weights.",
		"ResNet50_Weights.IMAGENET1K_V2/x",
	} {
		_, err := Lookup(in)
		if err == nil {
			t.Errorf("Lookup(%q) succeeded, want error", in)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"resnet50/IMAGENET1K_V2", "resnet18/IMAGENET1K_V1", "resnet152/DEFAULT"} {
			if !strings.Contains(msg, want) {
				t.Errorf("Lookup(%q) error %q does not list %s", in, msg, want)
			}
		}
	}
}

func TestLookupReturnsCopy(t *testing.T) {
	w, err := Lookup("resnet50/IMAGENET1K_V2")
	if err != nil {
		t.Fatal(err)
	}
	orig := w.URL
	w.URL = "http://example.invalid/x.pth"
	w2, _ := Lookup("resnet50/IMAGENET1K_V2")
	if w2.URL != orig {
		t.Fatalf("modifying a Lookup result changed the registry: %s", w2.URL)
	}
}

func TestRegistryFacts(t *testing.T) {
	all := All()
	if len(all) != 17 {
		t.Fatalf("registry has %d entries, want torchvision 0.14's 17 for resnet.py's ten architectures", len(all))
	}
	if !sort.SliceIsSorted(all, func(i, j int) bool { return all[i].Name < all[j].Name }) {
		t.Error("All() not sorted")
	}
	fileRE := regexp.MustCompile(`^https://download\.pytorch\.org/models/((?:resnet|resnext|wide_resnet)[0-9_x]+d?)-([0-9a-f]{8,})\.pth$`)
	seen := map[string]bool{}
	params := map[string]int{}
	for _, w := range all {
		if seen[w.Name] {
			t.Errorf("duplicate name %s", w.Name)
		}
		seen[w.Name] = true
		m := fileRE.FindStringSubmatch(w.URL)
		if m == nil {
			t.Errorf("%s: unexpected URL %s", w.Name, w.URL)
			continue
		}
		if m[1] != w.Arch || !strings.HasPrefix(w.Name, w.Arch+"/") {
			t.Errorf("%s: arch %s does not match URL %s", w.Name, w.Arch, w.URL)
		}
		if w.SHA256Prefix != m[2] || len(w.SHA256Prefix) != 8 {
			t.Errorf("%s: SHA256Prefix %q, URL file name says %q", w.Name, w.SHA256Prefix, m[2])
		}
		if !(0 < w.Acc1 && w.Acc1 < w.Acc5 && w.Acc5 <= 100) {
			t.Errorf("%s: implausible accuracies %v/%v", w.Name, w.Acc1, w.Acc5)
		}
		tr := w.Preprocess
		if tr.Crop != 224 || (tr.Resize != 256 && tr.Resize != 232) {
			t.Errorf("%s: crop %d resize %d", w.Name, tr.Crop, tr.Resize)
		}
		// The new recipe (V2, and resnext101_64x4d's only weights) evaluates
		// at 232; the original one at 256.
		if newRecipe := !strings.HasSuffix(w.Name, "_V1") || w.Arch == "resnext101_64x4d"; newRecipe != (tr.Resize == 232) {
			t.Errorf("%s: resize %d", w.Name, tr.Resize)
		}
		if tr.Mean != [3]float32{0.485, 0.456, 0.406} || tr.Std != [3]float32{0.229, 0.224, 0.225} || w.Interpolation != "bilinear" {
			t.Errorf("%s: preprocessing %+v, %s", w.Name, tr, w.Interpolation)
		}
		if !strings.HasPrefix(w.Recipe, "https://github.com/pytorch/vision/") {
			t.Errorf("%s: recipe %q", w.Name, w.Recipe)
		}
		if cfg, err := resnet.ConfigFor(w.Arch); err != nil || cfg.NumParams() != w.NumParams {
			t.Errorf("%s: torchvision counts %d parameters, lorafit's %s has %d (%v)", w.Name, w.NumParams, w.Arch, cfg.NumParams(), err)
		}
		if p, ok := params[w.Arch]; ok && p != w.NumParams {
			t.Errorf("%s: num_params %d differs from the other %s weights (%d)", w.Name, w.NumParams, w.Arch, p)
		}
		params[w.Arch] = w.NumParams
		if len(w.Categories) != 1000 {
			t.Errorf("%s: %d categories", w.Name, len(w.Categories))
		}
		if got, err := Lookup(w.TorchvisionName()); err != nil || got.Name != w.Name {
			t.Errorf("%s: TorchvisionName %q does not round-trip (%v)", w.Name, w.TorchvisionName(), err)
		}
	}
	order := []string{"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
	for i := 1; i < len(order); i++ {
		if params[order[i]] <= params[order[i-1]] {
			t.Errorf("num_params not increasing with depth: %v", params)
		}
	}

	w, err := Lookup("resnet50/IMAGENET1K_V2")
	if err != nil {
		t.Fatal(err)
	}
	if w.NumParams != 25557032 || w.Acc1 != 80.858 || w.Acc5 != 95.434 || w.Preprocess.Resize != 232 {
		t.Errorf("resnet50 V2 facts: %d params, acc %v/%v, resize %d", w.NumParams, w.Acc1, w.Acc5, w.Preprocess.Resize)
	}
	if w.TorchvisionName() != "ResNet50_Weights.IMAGENET1K_V2" {
		t.Errorf("TorchvisionName = %s", w.TorchvisionName())
	}
	if got, want := w.CachedPath("/c"), filepath.Join("/c", "resnet50-"+w.SHA256Prefix+".pth"); got != want {
		t.Errorf("CachedPath = %s, want %s", got, want)
	}
	// DEFAULT is the best entry: V2 wherever it exists.
	for _, arch := range order {
		d, err := Lookup(arch + "/DEFAULT")
		if err != nil {
			t.Fatal(err)
		}
		if _, v2 := seen[arch+"/IMAGENET1K_V2"]; v2 != strings.HasSuffix(d.Name, "_V2") {
			t.Errorf("%s/DEFAULT = %s", arch, d.Name)
		}
	}
}

func TestCategories(t *testing.T) {
	cats := All()[0].Categories
	uniq := map[string]bool{}
	for i, c := range cats {
		if c == "" || strings.TrimSpace(c) != c {
			t.Errorf("category %d is %q", i, c)
		}
		uniq[c] = true
	}
	if len(cats) != 1000 || len(uniq) != 1000 {
		t.Fatalf("%d categories, %d unique; want 1000", len(cats), len(uniq))
	}
	// Logit order matters for predictions: spot-check both ends.
	if cats[0] != "tench" || cats[999] != "toilet tissue" {
		t.Errorf("categories[0]=%q [999]=%q", cats[0], cats[999])
	}
}

func TestCacheDir(t *testing.T) {
	t.Setenv("LORAFIT_CACHE", "/tmp/lc")
	if d, err := CacheDir(); err != nil || d != "/tmp/lc" {
		t.Errorf("with LORAFIT_CACHE: %q %v", d, err)
	}
	if runtime.GOOS != "linux" {
		return
	}
	t.Setenv("LORAFIT_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/tmp/xdg")
	if d, err := CacheDir(); err != nil || d != "/tmp/xdg/lorafit/weights" {
		t.Errorf("with XDG_CACHE_HOME: %q %v", d, err)
	}
}

func TestTorchHubDir(t *testing.T) {
	t.Setenv("TORCH_HOME", "/th")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	t.Setenv("HOME", "/home/u")
	check := func(want string) {
		t.Helper()
		if d, err := TorchHubDir(); err != nil || d != want {
			t.Errorf("TorchHubDir = %q %v, want %q", d, err, want)
		}
	}
	check("/th/hub/checkpoints")
	t.Setenv("TORCH_HOME", "~/th")
	check("/home/u/th/hub/checkpoints")
	t.Setenv("TORCH_HOME", "")
	check("/xdg/torch/hub/checkpoints")
	t.Setenv("XDG_CACHE_HOME", "")
	check("/home/u/.cache/torch/hub/checkpoints")
}

// TestGeneratedIsFresh regenerates the registry when torchvision is importable
// and fails if registry_gen.go was edited by hand or is stale.
func TestGeneratedIsFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("imports torch")
	}
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torchvision").Run(); err != nil {
		t.Skipf("no torchvision for %s: %v", py, err)
	}
	out := filepath.Join(t.TempDir(), "registry_gen.go")
	if b, err := exec.Command(py, "gen_registry.py", "--out", out).CombinedOutput(); err != nil {
		t.Fatalf("gen_registry.py: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("registry_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, have) {
		t.Error("registry_gen.go differs from gen_registry.py output; run go generate ./weights/")
	}
}
