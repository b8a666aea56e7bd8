package dot

import (
	"math"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
)

func init() {
	gobackend.RegisterTransformation(50, gatheredLHSFusion{})
}

// GatheredLHS describes a matmul's LHS [M, K] that is never materialized:
// row m is Runs contiguous runs of RunLen elements of a source buffer, run t
// starting at Offsets[m*Runs+t] (K = Runs·RunLen). It is what a Gather of
// contiguous slices reshaped into [M, K] produces, as the patches of a
// convolution lowered to a matmul (im2col) are: an implementation that reads
// the runs while it packs the LHS saves writing and reading all of them once
// more (9× the input of a 3×3 convolution).
//
// When NodeData.GatheredLHS is set, the lhs an implementation receives is the
// source buffer, not the [M, K] matrix.
type GatheredLHS struct {
	Runs, RunLen int
	Offsets      []int32
}

// Materialize writes the [M, K] matrix g describes over src into dst.
func Materialize[T any](g *GatheredLHS, src, dst []T) {
	for i, off := range g.Offsets {
		copy(dst[i*g.RunLen:(i+1)*g.RunLen], src[off:int(off)+g.RunLen])
	}
}

// WithLHSLaidOut returns, for an implementation that reads only plain LHSs,
// the [m, k] matrix d.GatheredLHS describes over lhs, laid out, and a copy of
// d without it.
func WithLHSLaidOut[T any](d *NodeData, lhs []T, m, k int) ([]T, *NodeData) {
	plain := make([]T, m*k)
	Materialize(d.GatheredLHS, lhs, plain)
	data := *d
	data.GatheredLHS = nil
	return plain, &data
}

// gatheredLHSFusion lets a float32 DotGeneral without batch axes read its lhs
// straight from a Gather of contiguous slices (see GatheredInput), where its
// implementation reads gathered LHSs.
type gatheredLHSFusion struct{}

func (gatheredLHSFusion) Name() string { return "GatheredLHSFusion(DotGeneral)" }

func (gatheredLHSFusion) Apply(b *gobackend.Builder) (bool, error) {
	uses := CountUses(b)
	for _, f := range b.Functions {
		for _, node := range f.Nodes {
			data, ok := node.Data.(*NodeData)
			// A constant lhs is packed once into a cache, from the matrix itself.
			if node.OpType != compute.OpTypeDotGeneral || !ok || data.GatheredLHS != nil || data.PackedLHSCache != nil || data.BatchSize != 1 ||
				data.InputDType != dtypes.Float32 || data.OutputDType != dtypes.Float32 || node.Shape.IsDynamic() ||
				len(data.LHSBatchAxes) != 0 || !slices.Equal(data.LHSContractingAxes, []int{node.Inputs[0].Shape.Rank() - 1}) ||
				!data.implementation.Has(ReadsGatheredLHS, data.Layout, dtypes.Float32, dtypes.Float32) {
				continue
			}
			src, g := GatheredInput(node.Inputs[0], uses, data.LHSCrossSize, data.ContractingSize)
			if g == nil {
				continue
			}
			fused := *data
			fused.GatheredLHS = g
			node.Data = &fused
			node.Inputs[0] = src
		}
	}
	return false, nil
}

// CountUses counts the uses of every node of b: as an input, a captured
// input, a function's output or a closure's captured parent node.
func CountUses(b *gobackend.Builder) map[*gobackend.Node]int {
	uses := map[*gobackend.Node]int{}
	for _, f := range b.Functions {
		for _, node := range f.Nodes {
			for _, in := range node.Inputs {
				uses[in]++
			}
			for _, captured := range node.CapturedInputs {
				for _, in := range captured {
					uses[in]++
				}
			}
		}
		for _, out := range f.Outputs {
			uses[out]++
		}
		for _, captured := range f.CapturedParentNodes {
			uses[captured]++
		}
	}
	return uses
}

// GatheredInput finds whether x, a matmul's lhs read as [m, k], is a Gather
// of contiguous runs, possibly reshaped, with no other use than this: then it
// returns the Gather's operand and the runs. A transformation that makes the
// matmul read src instead leaves the Gather and Reshapes dead (not executed).
func GatheredInput(x *gobackend.Node, uses map[*gobackend.Node]int, m, k int) (src *gobackend.Node, g *GatheredLHS) {
	for x.OpType == compute.OpTypeReshape && uses[x] == 1 {
		x = x.Inputs[0]
	}
	if x.OpType != compute.OpTypeGather || uses[x] != 1 {
		return nil, nil
	}
	if g = gatheredRuns(x, m, k); g == nil {
		return nil, nil
	}
	return x.Inputs[0], g
}

// gatheredRuns describes gather's output, read as an [m, k] matrix, as runs
// of its operand, or returns nil if it is not one: float32, static shapes,
// constant start indices [Q, n] (one index vector a row), and slices that are
// contiguous in the operand (sizes 1 up to one axis, whole axes after it),
// output [Q, slice...] in the operand's axis order, whole runs a row.
func gatheredRuns(gather *gobackend.Node, m, k int) *GatheredLHS {
	src, indices := gather.Inputs[0], gather.Inputs[1]
	indexVectorAxis, offsetOutputAxes, collapsedSliceAxes, startIndexMap, sliceSizes, ok := ops.GatherParams(gather)
	if !ok || src.Shape.DType != dtypes.Float32 || src.Shape.IsDynamic() || gather.Shape.IsDynamic() ||
		indices.OpType != compute.OpTypeConstant || indices.Shape.Rank() != 2 || indexVectorAxis != 1 ||
		len(collapsedSliceAxes) != 0 || src.Shape.Size() > math.MaxInt32 {
		return nil
	}
	dims := src.Shape.Dimensions
	rank := len(dims)
	q, n := indices.Shape.Dimensions[0], indices.Shape.Dimensions[1]
	if n != len(startIndexMap) || len(sliceSizes) != rank ||
		!slices.Equal(offsetOutputAxes, axesFrom(1, rank)) || gather.Shape.Dimensions[0] != q {
		return nil
	}
	runLen, partial := 1, false
	for i, s := range sliceSizes {
		if partial && s != dims[i] {
			return nil
		}
		partial = partial || s != 1
		runLen *= s
	}
	if runLen == 0 || k%runLen != 0 || q*runLen != m*k {
		return nil
	}
	var start []int64
	switch flat := indices.Data.(*gobackend.Buffer).Flat.(type) {
	case []int32:
		start = make([]int64, len(flat))
		for i, v := range flat {
			start[i] = int64(v)
		}
	case []int64:
		start = flat
	default:
		return nil
	}
	strides := make([]int, rank)
	for i, stride := rank-1, 1; i >= 0; i-- {
		strides[i] = stride
		stride *= dims[i]
	}
	g := &GatheredLHS{Runs: k / runLen, RunLen: runLen, Offsets: make([]int32, q)}
	for r := range q {
		off := 0
		for j, axis := range startIndexMap {
			// As Gather does: a start is clamped so that the slice fits.
			s := int(max(0, min(int64(dims[axis]-sliceSizes[axis]), start[r*n+j])))
			off += s * strides[axis]
		}
		g.Offsets[r] = int32(off)
	}
	return g
}

// axesFrom returns [from, from+1, ..., from+count-1].
func axesFrom(from, count int) []int {
	axes := make([]int, count)
	for i := range axes {
		axes[i] = from + i
	}
	return axes
}
