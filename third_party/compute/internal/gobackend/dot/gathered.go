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
	gobackend.RegisterTransformation(50, gatheredMaxFusion{})
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
//
// An offset of ops.PaddingRun is a run of zeros: the padding of a
// zero-padded source, read unpadded (see GatheredInput).
type GatheredLHS struct {
	Runs, RunLen int
	Offsets      []int32
	zeros        []float32 // RunLen zeros, for offsets ops.PaddingRun
}

// Float32Run returns n values of run i (of all rows' runs, row-major) from
// its element o on: part of src, or zeros.
func (g *GatheredLHS) Float32Run(src []float32, i, o, n int) []float32 {
	off := int(g.Offsets[i])
	if off == ops.PaddingRun {
		return g.zeros[o : o+n]
	}
	return src[off+o : off+o+n]
}

// Materialize writes the [M, K] matrix g describes over src into dst.
func Materialize[T any](g *GatheredLHS, src, dst []T) {
	for i, off := range g.Offsets {
		run := dst[i*g.RunLen : (i+1)*g.RunLen]
		if off == ops.PaddingRun {
			clear(run)
			continue
		}
		copy(run, src[off:int(off)+g.RunLen])
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
			src, g := GatheredInput(node.Inputs[0], uses, data.LHSCrossSize, data.ContractingSize, 0)
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
//
// Where the operand is a Pad with fill (bit for bit) and no other use (a
// convolution's +0, max pooling's −∞), src is what was padded and the runs
// in the padding are ops.PaddingRun: the padded copy is never written.
func GatheredInput(x *gobackend.Node, uses map[*gobackend.Node]int, m, k int, fill float32) (src *gobackend.Node, g *GatheredLHS) {
	for x.OpType == compute.OpTypeReshape && uses[x] == 1 {
		x = x.Inputs[0]
	}
	if x.OpType != compute.OpTypeGather || uses[x] != 1 {
		return nil, nil
	}
	if g = gatheredRuns(x, m, k); g == nil {
		return nil, nil
	}
	if pad := x.Inputs[0]; uses[pad] == 1 {
		if unpadded := withoutPadding(pad, x, g, fill); unpadded != nil {
			return pad.Inputs[0], unpadded
		}
	}
	return x.Inputs[0], g
}

// minUnpaddedRun is the shortest run withoutPadding splits runs into:
// shorter ones (the 3 channels of an image) cost more to pack one by one
// than the padded copy.
const minUnpaddedRun = 32

// withoutPadding returns g, runs of the output of pad (a Pad with fill, no
// interior padding) that gather reads, as runs of pad's operand: each run
// split where it crosses the padding's border, into runs along the slices'
// first axis longer than 1 (the axes after it whole and unpadded), those in
// the padding ops.PaddingRun. Or nil where that does not apply.
func withoutPadding(pad, gather *gobackend.Node, g *GatheredLHS, fill float32) *GatheredLHS {
	axes, ok := ops.PadParams(pad)
	if !ok || pad.Inputs[1].OpType != compute.OpTypeConstant || pad.Inputs[0].Shape.Size() > math.MaxInt32 {
		return nil
	}
	if v, ok := pad.Inputs[1].Data.(*gobackend.Buffer).Flat.([]float32); !ok || len(v) != 1 || math.Float32bits(v[0]) != math.Float32bits(fill) {
		return nil
	}
	_, _, _, _, sliceSizes, _ := ops.GatherParams(gather)
	padded, dims := pad.Shape.Dimensions, pad.Inputs[0].Shape.Dimensions
	rank := len(dims)
	lo := make([]int, rank)
	for i, a := range axes {
		if a.Interior != 0 || a.Start < 0 || a.End < 0 {
			return nil
		}
		lo[i] = a.Start
	}
	split := slices.IndexFunc(sliceSizes, func(s int) bool { return s != 1 })
	if split < 0 {
		return nil
	}
	runLen := 1
	for _, d := range dims[split+1:] {
		runLen *= d
	}
	// g's runs hold whole axes after split: of the operand's sizes if unpadded.
	if runLen < minUnpaddedRun || g.RunLen != sliceSizes[split]*runLen {
		return nil
	}
	// Row-major strides of the padded output and of the operand.
	pStrides, strides := make([]int, rank), make([]int, rank)
	for i, ps, s := rank-1, 1, 1; i >= 0; i-- {
		pStrides[i], strides[i] = ps, s
		ps, s = ps*padded[i], s*dims[i]
	}
	parts := sliceSizes[split]
	u := &GatheredLHS{Runs: g.Runs * parts, RunLen: runLen, Offsets: make([]int32, len(g.Offsets)*parts), zeros: make([]float32, runLen)}
	for r, off := range g.Offsets {
		for j := range parts {
			at, inside := 0, true
			for i := 0; i <= split; i++ {
				c := int(off)/pStrides[i]%padded[i] - lo[i]
				if i == split {
					c += j
				}
				inside = inside && c >= 0 && c < dims[i]
				at += c * strides[i]
			}
			if !inside {
				at = ops.PaddingRun
			}
			u.Offsets[r*parts+j] = int32(at)
		}
	}
	return u
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

// gatheredMaxFusion lets a float32 ReduceMax over the middle axis of [A, B,
// C] read its operand straight from a Gather of contiguous runs of whole
// multiples of C, possibly reshaped (max pooling's windows, im2col), and a
// −∞ padding under it skipped (ops.GatheredMax): neither the windows nor
// the padded map are written.
type gatheredMaxFusion struct{}

func (gatheredMaxFusion) Name() string { return "GatheredMaxFusion(ReduceMax)" }

func (gatheredMaxFusion) Apply(b *gobackend.Builder) (bool, error) {
	uses := CountUses(b)
	for _, f := range b.Functions {
		for _, node := range f.Nodes {
			cfg, ok := node.Data.(*ops.ReduceConfig)
			if node.OpType != compute.OpTypeReduceMax || !ok || cfg.Pattern != ops.ReduceMiddle || node.Shape.DType != dtypes.Float32 ||
				node.Shape.IsDynamic() || cfg.C < 1 {
				continue
			}
			src, g := GatheredInput(node.Inputs[0], uses, cfg.A, cfg.B*cfg.C, float32(math.Inf(-1)))
			if g == nil || g.RunLen%cfg.C != 0 {
				continue
			}
			node.Inputs = []*gobackend.Node{src}
			node.Data = &ops.GatheredMax{Runs: g.Runs, RunLen: g.RunLen, C: cfg.C, Offsets: g.Offsets}
		}
	}
	return false, nil
}
