package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/preprocess"
)

// Eval is a model's score on a labelled set.
type Eval struct {
	N         int
	Accuracy  float64
	MeanLoss  float64
	PerClass  []float64 // accuracy per true class
	Confusion [][]int   // [true][predicted]
	Seconds   float64
	ImgPerSec float64
}

// Evaluate runs p over all of d, in batches of batch (the last one
// smaller), preprocessed as pre says.
func Evaluate(ctx context.Context, p *classifier.Predictor, d Data, pre preprocess.Preprocess, batch int) (*Eval, error) {
	k := d.NumClasses()
	if p.NumClasses() < k {
		return nil, fmt.Errorf("the model has %d outputs and the data %d classes", p.NumClasses(), k)
	}
	outputs := p.NumClasses() // more than k: a 1000-way fc trained on k classes
	e := &Eval{N: d.Len(), Confusion: make([][]int, k), PerClass: make([]float64, k)}
	for i := range e.Confusion {
		e.Confusion[i] = make([]int, k)
	}
	dims := []int{3, pre.Crop, pre.Crop}
	if s, ok := d.(interface{ SampleDims() []int }); ok { // cached features
		dims = s.SampleDims()
	}
	per := 1
	for _, v := range dims {
		per *= v
	}
	x := make([]float32, batch*per)
	labels := make([]int32, batch)
	idx := make([]int, 0, batch)
	start := time.Now()
	var lossSum float64
	correct := 0
	for lo := 0; lo < e.N; lo += batch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("evaluation interrupted: %w", err)
		}
		hi := min(lo+batch, e.N)
		idx = idx[:0]
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		n := hi - lo
		d.Fill(idx, pre, nil, x[:n*per], labels[:n])
		out, err := p.Logits(tensors.FromFlatDataAndDimensions(x[:n*per], append([]int{n}, dims...)...))
		if err != nil {
			return nil, err
		}
		logits := tensors.MustCopyFlatData[float32](out)
		out.FinalizeAll()
		for i := range n {
			row := logits[i*outputs : (i+1)*outputs]
			pred, loss := argmaxLoss(row, int(labels[i]))
			if math.IsNaN(loss) {
				return nil, fmt.Errorf("evaluation: image %d gives NaN logits: the adapter's weights are broken", lo+i)
			}
			if pred < k { // a prediction past the data's classes is wrong, and in no column
				e.Confusion[labels[i]][pred]++
			}
			if pred == int(labels[i]) {
				correct++
			}
			lossSum += loss
		}
	}
	e.Seconds = time.Since(start).Seconds()
	e.ImgPerSec = float64(e.N) / e.Seconds
	e.Accuracy = float64(correct) / float64(e.N)
	e.MeanLoss = lossSum / float64(e.N)
	for c := range k {
		total := 0
		for _, v := range e.Confusion[c] {
			total += v
		}
		if total > 0 {
			e.PerClass[c] = float64(e.Confusion[c][c]) / float64(total)
		}
	}
	return e, nil
}

// argmaxLoss is a row's predicted class (the first maximum, as torch.argmax)
// and its cross-entropy against label.
func argmaxLoss(row []float32, label int) (int, float64) {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	m := float64(row[best])
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v) - m)
	}
	return best, m + math.Log(sum) - float64(row[label])
}
