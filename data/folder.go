package data

import (
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/lorafit/lorafit/limits"
	"github.com/lorafit/lorafit/preprocess"
)

// imageExts are the extensions ImageFolder reads. Other image formats
// torchvision would read are refused with an error rather than skipped,
// so that no class silently loses images; other files are ignored.
var (
	imageExts       = []string{".png", ".jpg", ".jpeg"}
	unsupportedExts = []string{".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
)

// ImageFolder loads torchvision's ImageFolder layout, dir/CLASS/**/*.png
// or .jpg: class indices follow the sorted sub-folder names (symlinks to
// folders count), files are found recursively in lexical order. Every image becomes RGB (C=3; gray
// replicated, alpha dropped as PIL's convert("RGB") does) and is resized so
// its shorter side is size, then center-cropped to size×size —
// Resize(size)+CenterCrop(size), with PIL's antialiased bilinear — once, at
// load time, so batches need no resizing when trained at that size.
//
// Each class is split on its own (stratified): round(valSplit × its count)
// images, chosen by a shuffle seeded with seed, go to val, but at least one
// stays in train. Both sets keep folder order. valSplit must be in [0, 1);
// 0 gives an empty val set. Errors name the offending file or folder;
// no class folder, or a class without images, is an error.
func ImageFolder(dir string, size int, valSplit float64, seed uint64) (train, val *Dataset, err error) {
	if !(valSplit >= 0 && valSplit < 1) {
		return nil, nil, fmt.Errorf("%s: validation split %v: want a fraction in [0, 1)", dir, valSplit)
	}
	all, err := loadFolder(dir, size)
	if err != nil {
		return nil, nil, err
	}
	trainIdx, valIdx := stratifiedSplit(all.Labels, len(all.ClassNames), valSplit, seed)
	return all.pick(trainIdx, all.Name+"/train"), all.pick(valIdx, all.Name+"/val"), nil
}

// stratifiedSplit returns the indices of the training and validation
// images, each in increasing order.
func stratifiedSplit(labels []int32, numClasses int, valSplit float64, seed uint64) (train, val []int) {
	rng := rand.New(rand.NewPCG(seed, 0x6c6f726166697421)) // "lorafit!"
	byClass := make([][]int, numClasses)
	for i, l := range labels {
		byClass[l] = append(byClass[l], i)
	}
	isVal := make([]bool, len(labels))
	for _, members := range byClass {
		nv := min(int(math.Round(valSplit*float64(len(members)))), len(members)-1)
		for _, p := range rng.Perm(len(members))[:max(nv, 0)] {
			isVal[members[p]] = true
		}
	}
	for i, v := range isVal {
		if v {
			val = append(val, i)
		} else {
			train = append(train, i)
		}
	}
	return train, val
}

// loadFolder reads dir/CLASS/** into one Dataset (see ImageFolder),
// decoding on all cores.
func loadFolder(dir string, size int) (*Dataset, error) {
	if size <= 0 || size > 4096 {
		return nil, fmt.Errorf("%s: image size %d: want 1 to 4096", dir, size)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var classes []string // ReadDir sorts by name
	for _, e := range entries {
		if isDir(filepath.Join(dir, e.Name())) {
			classes = append(classes, e.Name())
		}
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("%s: no class folders (want %s/CLASS/IMAGE.png)", dir, dir)
	}
	var files []string
	var labels []int32
	for ci, c := range classes {
		before := len(files)
		// The trailing separator makes WalkDir follow a symlinked class folder.
		err := filepath.WalkDir(filepath.Join(dir, c)+string(filepath.Separator), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			ext := strings.ToLower(filepath.Ext(path))
			if slices.Contains(unsupportedExts, ext) {
				return fmt.Errorf("%s: %s images are not supported (only PNG and JPEG)", path, ext)
			}
			if slices.Contains(imageExts, ext) {
				files = append(files, path)
				labels = append(labels, int32(ci))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(files) == before {
			return nil, fmt.Errorf("%s: class %q has no PNG or JPEG images", filepath.Join(dir, c), c)
		}
	}
	sz := size * size * 3
	d := &Dataset{Name: filepath.Base(filepath.Clean(dir)), Images: make([]uint8, len(files)*sz), Labels: labels,
		N: len(files), H: size, W: size, C: 3, ClassNames: classes}
	// Decode in parallel; report the error of the first bad file in order,
	// so the message does not depend on scheduling.
	errs := make([]error, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				errs[i] = loadImage(files[i], size, d.Images[i*sz:(i+1)*sz])
			}
		})
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// loadImage decodes path into dst as size×size×3 bytes: shorter side
// resized to size, then center-cropped.
func loadImage(path string, size int, dst []uint8) error {
	img, err := limits.DecodeImage(path)
	if err != nil {
		return err
	}
	rgb, w, h := preprocess.ToRGB(img)
	if w != size || h != size {
		rgb = preprocess.ResizeCrop(rgb, w, h, size, size)
	}
	copy(dst, rgb)
	return nil
}
