package classifier

import (
	"fmt"
	"math"
	"sort"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/limits"
	"github.com/lorafit/lorafit/preprocess"
)

// Prediction is one image's result: the most probable classes and the raw
// logits (before softmax).
type Prediction struct {
	Image  string      `json:"image"`
	Top    []ClassProb `json:"top"`
	Logits []float32   `json:"logits"`
}

// ClassProb is one class of a top-K list.
type ClassProb struct {
	Index int     `json:"index"`
	Label string  `json:"label"`
	Prob  float64 `json:"prob"`
}

// TopClasses applies softmax and returns the k most probable classes (ties in
// index order). NaN logits are an error: they mean a broken model.
func TopClasses(logits []float32, k int, labels []string) ([]ClassProb, error) {
	maxLogit := math.Inf(-1)
	for i, v := range logits {
		if math.IsNaN(float64(v)) {
			return nil, fmt.Errorf("logit %d is NaN: the model's weights are broken", i)
		}
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
	out := make([]ClassProb, k)
	for r, i := range idx[:k] {
		out[r] = ClassProb{Index: i, Label: label(labels, i), Prob: probs[i] / sum}
	}
	return out, nil
}

func label(labels []string, i int) string {
	if i < len(labels) {
		return labels[i]
	}
	return fmt.Sprintf("class %d", i)
}

// ClassifyFiles runs image files through p, batch by batch: each batch is
// decoded and preprocessed just before it runs, so memory grows with batch,
// not with the number of files. Every file's header is checked first, so an
// unreadable file fails the run before any result is emitted.
func (p *Predictor) ClassifyFiles(paths []string, pre preprocess.Preprocess, batch, k int, labels []string, emit func(Prediction) error) error {
	if err := pre.Validate(); err != nil {
		return err
	}
	for _, path := range paths {
		if _, err := limits.ImageConfig(path); err != nil {
			return err
		}
	}
	n := pre.Crop
	flat := make([]float32, 0, batch*3*n*n)
	for start := 0; start < len(paths); start += batch {
		end := min(start+batch, len(paths))
		flat = flat[:0]
		for _, path := range paths[start:end] {
			img, err := limits.DecodeImage(path)
			if err != nil {
				return err
			}
			flat = append(flat, pre.Apply(img)...)
		}
		out, err := p.Logits(tensors.FromFlatDataAndDimensions(flat, end-start, 3, n, n))
		if err != nil {
			return err
		}
		logits := tensors.MustCopyFlatData[float32](out)
		out.FinalizeAll()
		c := p.NumClasses()
		for i := start; i < end; i++ {
			pr := Prediction{Image: paths[i], Logits: logits[(i-start)*c : (i-start+1)*c]}
			if pr.Top, err = TopClasses(pr.Logits, k, labels); err != nil {
				return fmt.Errorf("%s: %w", paths[i], err)
			}
			if err := emit(pr); err != nil {
				return err
			}
		}
	}
	return nil
}
