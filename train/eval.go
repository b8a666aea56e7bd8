package train

import (
	"context"
	"fmt"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/ml/model"

	"github.com/lorafit/lorafit/classifier"
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

// Evaluate runs net in inference mode over all of d, in batches of
// cfg.Batch (the last one smaller).
func Evaluate(ctx context.Context, b compute.Backend, net *classifier.Model, d Data, cfg Config) (*Eval, error) {
	cfg.Defaults()
	exec, err := model.NewExec(b, net.Base.Store, func(_ *model.Scope, x, labels *Node) (*Node, *Node) {
		logits := net.Logits(x)
		return ArgMax(logits, 1, dtypes.Int32), crossEntropyPerSample(logits, labels, 0)
	})
	if err != nil {
		return nil, err
	}
	k := d.NumClasses()
	e := &Eval{N: d.Len(), Confusion: make([][]int, k), PerClass: make([]float64, k)}
	for i := range e.Confusion {
		e.Confusion[i] = make([]int, k)
	}
	size := cfg.ImageSize
	x := make([]float32, cfg.Batch*3*size*size)
	labels := make([]int32, cfg.Batch)
	idx := make([]int, 0, cfg.Batch)
	start := time.Now()
	var lossSum float64
	correct := 0
	for lo := 0; lo < e.N; lo += cfg.Batch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("evaluation interrupted: %w", err)
		}
		hi := min(lo+cfg.Batch, e.N)
		idx = idx[:0]
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		n := hi - lo
		d.Fill(idx, size, cfg.Mean, cfg.Std, nil, x[:n*3*size*size], labels[:n])
		out, err := exec.Call(tensors.FromFlatDataAndDimensions(x[:n*3*size*size], n, 3, size, size),
			tensors.FromFlatDataAndDimensions(labels[:n], n))
		if err != nil {
			return nil, err
		}
		pred := tensors.MustCopyFlatData[int32](out[0])
		losses := tensors.MustCopyFlatData[float32](out[1])
		for i := range n {
			e.Confusion[labels[i]][pred[i]]++
			if pred[i] == labels[i] {
				correct++
			}
			lossSum += float64(losses[i])
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
