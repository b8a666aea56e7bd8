package ops

import (
	"math"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/internal/gobackend"
)

func init() {
	// Above every other ReduceMax executor: only it reads GatheredMax's source.
	gobackend.SetNodeExecutor(compute.OpTypeReduceMax, gobackend.PriorityArch+1, execGatheredMax)
}

// GatheredMax is the data of a float32 ReduceMax over the middle axis of
// [A, B, C] whose operand was never written: row a (B·C values) is Runs
// contiguous runs of RunLen values (whole multiples of C) of the source
// buffer, its input, run t starting at Offsets[a·Runs+t] — a Gather's, as
// max pooling's windows are laid out (im2col). A run at offset PaddingRun
// is the −∞ padding of a source read unpadded: max(x, −∞) is x with Go's
// max for every x, NaN and zeros included, so it is skipped.
type GatheredMax struct {
	Runs, RunLen, C int
	Offsets         []int32
}

// PaddingRun is the offset of a gathered run in the padding of a source
// read unpadded (the padded copy never written): its values are the fill.
const PaddingRun = -1

// execGatheredMax computes a ReduceMax whose data is *GatheredMax: out[a, c]
// is the max over b of row a's value b·C+c, folded in b's order with Go's
// max, as the reduction of the gathered matrix does. Other ReduceMaxes fall
// back to the next executor.
func execGatheredMax(backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer, _ []bool) (*gobackend.Buffer, error) {
	g, ok := node.Data.(*GatheredMax)
	if !ok {
		return nil, gobackend.ErrFallback
	}
	output, err := backend.GetBuffer(node.Shape)
	if err != nil {
		return nil, err
	}
	if backend.NoOps {
		return output, nil
	}
	src, out := inputs[0].Flat.([]float32), output.Flat.([]float32)
	for a := range len(g.Offsets) / g.Runs {
		acc := out[a*g.C : (a+1)*g.C]
		first := true
		for _, off := range g.Offsets[a*g.Runs : (a+1)*g.Runs] {
			if off == PaddingRun {
				continue
			}
			for j := int(off); j < int(off)+g.RunLen; j += g.C {
				if first {
					copy(acc, src[j:j+g.C])
					first = false
					continue
				}
				maxInto(acc, src[j:j+g.C])
			}
		}
		if first { // the window is all padding
			for i := range acc {
				acc[i] = float32(math.Inf(-1))
			}
		}
	}
	return output, nil
}
