// Package nn holds the few graph building blocks a torchvision CNN needs,
// written for GoMLX's pure-Go backend: convolution as im2col (one Gather of
// channel rows) + one matmul (the backend's native convolution is ~20×
// slower), batch norm in inference mode
// (frozen layers must not learn scale/offset), max pooling as a max over
// strided slices, and a Linear layer. Tensors are NHWC inside the graph;
// weights are in "matmul layout" (see ConvWeightFromTorch).
package nn

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // the graph DSL reads best unqualified
	"github.com/gomlx/gomlx/core/tensors"
)

// ModuleType is the torch.nn class of a leaf module.
type ModuleType string

const (
	Conv2d      ModuleType = "Conv2d"
	BatchNorm2d ModuleType = "BatchNorm2d"
	Linear      ModuleType = "Linear"
)

// Module describes one leaf module of a network by its PyTorch name, with
// what its computation needs: channels, and for convs the square kernel,
// stride, padding and groups (0 and 1 both mean an ordinary conv). LoRA
// targets are chosen among these by name and wrap them with the same
// geometry.
type Module struct {
	Name                    string
	Type                    ModuleType
	In, Out                 int
	Kernel, Stride, Padding int
	Groups                  int
}

// NumGroups is Groups with 0 read as 1.
func (m Module) NumGroups() int { return max(m.Groups, 1) }

// WeightShape is the PyTorch shape of the module's weight: [O, C/groups, K, K]
// for a conv, [out, in] for a Linear, [C] for a batch norm.
func (m Module) WeightShape() []int {
	switch m.Type {
	case Conv2d:
		return []int{m.Out, m.In / m.NumGroups(), m.Kernel, m.Kernel}
	case Linear:
		return []int{m.Out, m.In}
	}
	return []int{m.Out}
}

// Conv2D computes a 2-D convolution of x [N,H,W,C] with a k×k kernel w in
// matmul layout [k·k·C/groups, O] (rows tap by tap, then channel: see
// ConvWeightFromTorch), stride and zero padding equal on both spatial axes,
// returning [N,Ho,Wo,O]. With groups > 1 (ResNeXt's 3×3 convs), input and
// output channels split into that many groups, each convolved on its own,
// as torch.nn.Conv2d's groups does; output channel o belongs to group
// o/(O/groups).
//
// Taps whose every input row or column falls in the padding are skipped: at
// 28×28 inputs ResNet's layer4 runs on 1×1 maps, where a padded 3×3 conv only
// ever multiplies its centre tap. Skipping them is exact. A constant weight
// on a map with fewer pixels than live taps (layer3's 2×2 maps) is one
// dense product instead (denseConv), which multiplies no padding at all.
//
// No operand of the matmuls is reshaped or transposed at run time (the Go
// backend copies a reshaped buffer that another op still reads, as the
// residual path reads x): a 1×1 conv contracts x's channel axis directly,
// and work on a weight baked in as a constant (SetConst) is done once, when
// the graph is built.
func Conv2D(x, w *Node, k, stride, padding, groups int) *Node {
	return conv2D(x, w, k, stride, padding, groups, matmulProduct)
}

// Conv2DShift is relu?(Conv2D(x, w) + shift) for shift [O] (a frozen batch
// norm folded into the conv), as one backend op where the backend has
// GoMLX's fused dense (the Go backend): the matmul, then the shift and the
// ReLU together, row by row, in one pass over the output instead of two
// passes and a buffer for each. The same
// float32 operations in the same order as the three ops apart. For
// inference: differentiated, the fused op's gradient would also compute the
// frozen weight's. A conv taken as one dense product (denseConv) keeps the
// ops apart: its output columns are pixels × channels, not the shift's.
func Conv2DShift(x, w, shift *Node, k, stride, padding, groups int, relu bool) *Node {
	if groups > 1 || !fusedDense(x.Graph()) || dense(x, w, k, stride, padding, groups) {
		y := Add(Conv2D(x, w, k, stride, padding, groups), ExpandLeftToRank(shift, 4))
		if relu {
			y = ReLU(y)
		}
		return y
	}
	cfg := compute.DenseConfig{WeightLayout: compute.DenseLayoutInputOutputs}
	if relu {
		cfg.Activation = compute.ActivationConfig{Type: compute.ActivationRelu}
	}
	return conv2D(x, w, k, stride, padding, 1, func(p, w *Node) *Node { return BackendFusedDense(p, w, shift, cfg) })
}

// fusedDense tells whether g's backend runs GoMLX's fused dense op.
func fusedDense(g *Graph) bool {
	b := g.Backend()
	return b != nil && b.Capabilities().Operations[compute.OpTypeFusedDense]
}

// Conv2DNarrow is Conv2D without groups for a trainable weight with few
// output channels (LoRA's A, O = r): the product is taken as (wᵀ·Pᵀ)ᵀ for
// the patches P [N·Ho·Wo, k·k·C], so that the weight's gradient, Pᵀ·dy,
// reads P as it is. As P·w, the Go backend transposes all of P on every
// backward pass to form Pᵀ·dy (it transposes an operand whose contracting
// axis leads): 10% of a case-3 step. Only [O, N·Ho·Wo] is transposed here.
func Conv2DNarrow(x, w *Node, k, stride, padding int) *Node {
	return conv2D(x, w, k, stride, padding, 1, narrowProduct)
}

// matmulProduct is p·w for p [..., K] and w [K, O]: [..., O].
func matmulProduct(p, w *Node) *Node {
	return DotGeneral(p, []int{p.Rank() - 1}, nil, w, []int{0}, nil)
}

// conv2D lays x out for product, which multiplies p [..., K] (x itself for
// an ungrouped 1×1 conv without stride or padding, else the patches) by w
// [K, O].
func conv2D(x, w *Node, k, stride, padding, groups int, product func(p, w *Node) *Node) *Node {
	xd, wd := x.Shape().Dimensions, w.Shape().Dimensions
	groups = max(groups, 1)
	if len(xd) != 4 || len(wd) != 2 || xd[3]%groups != 0 || wd[0] != k*k*xd[3]/groups || wd[1]%groups != 0 {
		panic(fmt.Errorf("nn.Conv2D: input %v and weight %v do not fit a %dx%d kernel with %d groups (want [N,H,W,C] and [%d·C/groups,O])", xd, wd, k, k, groups, k*k))
	}
	n, h, wi, c := xd[0], xd[1], xd[2], xd[3]
	o := wd[1]
	ho, wo := outSize(h, k, stride, padding), outSize(wi, k, stride, padding)
	if ho <= 0 || wo <= 0 {
		panic(fmt.Errorf("nn.Conv2D: input %dx%d is too small for a %dx%d kernel with stride %d and padding %d", h, wi, k, k, stride, padding))
	}
	rows := liveTaps(k, h, ho, stride, padding)
	cols := liveTaps(k, wi, wo, stride, padding)
	if k == 1 && stride == 1 && padding == 0 && groups == 1 {
		return product(x, w)
	}
	if dense(x, w, k, stride, padding, groups) {
		return denseConv(x, constValue(w), k, stride, padding, ho, wo)
	}
	cg := c / groups
	if len(rows) != k || len(cols) != k {
		w = liveWeights(w, k, cg, rows, cols)
	}
	x = padHW(x, padding, ScalarZero(x.Graph(), x.DType()))
	taps, m := len(rows)*len(cols), n*ho*wo
	patches := im2col(x, rows, cols, stride, ho, wo) // [M, taps·C], tap by tap as w's rows
	if groups == 1 {
		return Reshape(product(patches, w), n, ho, wo, o)
	}
	// One matmul per group, batched: patches [G, M, taps·C/G] times weights
	// [G, taps·C/G, O/G].
	og := o / groups
	p := Reshape(TransposeAllAxes(Reshape(patches, m, taps, groups, cg), 2, 0, 1, 3), groups, m, taps*cg)
	y := Einsum("gmk,gko->mgo", p, groupedWeights(w, taps, cg, groups, og))
	return Reshape(y, n, ho, wo, o)
}

// maxDenseConv caps denseConv's matrix, in values (4 MiB): it holds each
// tap once per pixel pair, more than the weight, and a frozen weight is
// read from memory on every pass (resnet18's layer4 on the 2×2 maps of a
// 64×64 input would need 16 MiB a conv).
const maxDenseConv = 1 << 20

// dense tells whether conv2D takes the conv of x by w as one dense product
// (denseConv): w is a constant, the map has fewer pixels than live taps and
// the dense matrix fits maxDenseConv.
func dense(x, w *Node, k, stride, padding, groups int) bool {
	xd := x.Shape().Dimensions
	h, wi, c, o := xd[1], xd[2], xd[3], w.Shape().Dimensions[1]
	ho, wo := outSize(h, k, stride, padding), outSize(wi, k, stride, padding)
	taps := len(liveTaps(k, h, ho, stride, padding)) * len(liveTaps(k, wi, wo, stride, padding))
	return IsConst(w) && groups == 1 && k > 1 && h*wi <= taps && h*wi*c*ho*wo*o <= maxDenseConv
}

// denseConv computes the conv of x [N,H,W,C] by the constant weight t
// [k·k·C, O] as one product with a [H·W·C, Ho·Wo·O] matrix, for maps with
// fewer pixels than live taps. On layer3's 2×2 maps at 28×28 input a
// padded 3×3 conv reads 4 real pixels for each output pixel but im2col
// multiplies all 9 taps, 5 of them by padding; the dense matrix holds each
// tap once per (input, output) pixel pair it connects, zeros elsewhere:
// 4/9 of the multiplies, and no padding or patches to copy. Each output
// sums the same nonzero terms; the kernel groups them in other panels than
// im2col's longer rows, so last bits can differ.
func denseConv(x *Node, t *tensors.Tensor, k, stride, padding, ho, wo int) *Node {
	d := x.Shape().Dimensions
	n, h, wi, c := d[0], d[1], d[2], d[3]
	src := tensors.MustCopyFlatData[float32](t)
	o := len(src) / (k * k * c)
	cols := ho * wo * o
	dst := make([]float32, h*wi*c*cols)
	for yi := range h {
		for xi := range wi {
			for yo := range ho {
				for xo := range wo {
					i, j := yi-yo*stride+padding, xi-xo*stride+padding
					if i < 0 || i >= k || j < 0 || j >= k {
						continue
					}
					for ci := range c {
						row := ((yi*wi+xi)*c + ci) * cols
						tap := ((i*k+j)*c + ci) * o
						copy(dst[row+(yo*wo+xo)*o:row+(yo*wo+xo+1)*o], src[tap:tap+o])
					}
				}
			}
		}
	}
	dense := constant(x.Graph(), tensors.FromFlatDataAndDimensions(dst, h, wi, c, cols))
	y := DotGeneral(x, []int{1, 2, 3}, nil, dense, []int{0, 1, 2}, nil) // [N, Ho·Wo·O]
	return Reshape(y, n, ho, wo, o)
}

// narrowProduct is p·w for p [..., K] and w [K, O], computed as (wᵀ·pᵀ)ᵀ
// (see Conv2DNarrow): [..., O].
func narrowProduct(p, w *Node) *Node {
	pd := p.Shape().Dimensions
	rank := len(pd)
	m := 1
	for _, d := range pd[:rank-1] {
		m *= d
	}
	o := w.Shape().Dimensions[1]
	yt := DotGeneral(w, []int{0}, nil, p, []int{rank - 1}, nil) // [O, ...]
	y := TransposeAllAxes(Reshape(yt, o, m), 1, 0)
	return Reshape(y, append(slices.Clone(pd[:rank-1]), o)...)
}

// liveWeights keeps the rows of w [k·k·cg, O] of the live taps (rows ×
// cols of the kernel, each a contiguous range).
func liveWeights(w *Node, k, cg int, rows, cols []int) *Node {
	o := w.Shape().Dimensions[1]
	if t := constValue(w); t != nil {
		src := tensors.MustCopyFlatData[float32](t)
		dst := make([]float32, 0, len(rows)*len(cols)*cg*o)
		for _, i := range rows {
			lo := (i*k + cols[0]) * cg * o
			dst = append(dst, src[lo:lo+len(cols)*cg*o]...)
		}
		return constant(w.Graph(), tensors.FromFlatDataAndDimensions(dst, len(rows)*len(cols)*cg, o))
	}
	var parts []*Node
	for _, i := range rows {
		lo := (i*k + cols[0]) * cg
		parts = append(parts, Slice(w, AxisRange(lo, lo+len(cols)*cg), AxisRange()))
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return Concatenate(parts, 0)
}

// groupedWeights lays w [taps·cg, groups·og] out per group: [groups,
// taps·cg, og].
func groupedWeights(w *Node, taps, cg, groups, og int) *Node {
	if t := constValue(w); t != nil {
		src := tensors.MustCopyFlatData[float32](t)
		dst := make([]float32, len(src))
		k := taps * cg
		for r := range k {
			for g := range groups {
				copy(dst[(g*k+r)*og:(g*k+r+1)*og], src[(r*groups+g)*og:(r*groups+g+1)*og])
			}
		}
		return constant(w.Graph(), tensors.FromFlatDataAndDimensions(dst, groups, k, og))
	}
	return Reshape(TransposeAllAxes(Reshape(w, taps*cg, groups, og), 1, 0, 2), groups, taps*cg, og)
}

// constKey keys a graph's record of the host values of its constant
// weights.
type constKey struct{}

// SetConst records that node is the constant t: work on it that does not
// depend on the input (slicing a conv's live taps) then happens once, when
// the graph is built, instead of on every run.
func SetConst(node *Node, t *tensors.Tensor) {
	g := node.Graph()
	m, _ := g.State(constKey{}).(map[*Node]*tensors.Tensor)
	if m == nil {
		m = map[*Node]*tensors.Tensor{}
		g.AttachState(constKey{}, m)
	}
	m[node] = t
}

// IsConst tells whether node was recorded as a constant with SetConst.
func IsConst(node *Node) bool { return constValue(node) != nil }

func constValue(node *Node) *tensors.Tensor {
	m, _ := node.Graph().State(constKey{}).(map[*Node]*tensors.Tensor)
	return m[node]
}

func constant(g *Graph, t *tensors.Tensor) *Node {
	c := ConstTensor(g, t)
	SetConst(c, t)
	return c
}

// im2col lays out the patches of the (padded) x [N,H,W,C] read by the given
// kernel rows and columns as a [N·Ho·Wo, taps·C] matrix, tap-major.
//
// It is one GatherSlices: for every output pixel and live kernel row, the
// live columns' taps with all their channels are one contiguous run of x
// (len(cols)·C floats), whatever the stride, so the backend copies whole
// runs with memmove — 21 floats a run for the 3-channel stem, where one
// slice per tap (49) and a Concatenate had cost 7% of a 28×28 forward pass.
// x is gathered as it is, never reshaped (see Conv2D).
func im2col(x *Node, rows, cols []int, stride, ho, wo int) *Node {
	d := x.Shape().Dimensions
	n, c := d[0], d[3]
	if len(rows) == 1 && len(cols) == 1 && rows[0] == 0 && cols[0] == 0 && stride == 1 && ho == d[1] && wo == d[2] {
		return Reshape(x, n*ho*wo, c)
	}
	// (image, row, first column) in x for every (image, output pixel, live row).
	idx := make([]int32, 0, 3*n*ho*wo*len(rows))
	for b := range n {
		for y := range ho {
			for xx := range wo {
				for _, i := range rows {
					idx = append(idx, int32(b), int32(y*stride+i), int32(xx*stride+cols[0]))
				}
			}
		}
	}
	start := Const(x.Graph(), tensors.FromFlatDataAndDimensions(idx, len(idx)/3, 3))
	runs := GatherSlices(x, []int{0, 1, 2}, start, []int{1, 1, len(cols)}, true) // [M·rows, 1, 1, cols, C]
	return Reshape(runs, n*ho*wo, len(rows)*len(cols)*c)
}

// padHW pads the two spatial axes of x [N,H,W,C] with fill.
func padHW(x *Node, padding int, fill *Node) *Node {
	if padding == 0 {
		return x
	}
	p := compute.PadAxis{Start: padding, End: padding}
	return Pad(x, fill, compute.PadAxis{}, p, p, compute.PadAxis{})
}

// outSize is a conv's or a pooling's output size along an axis of in
// values, as torch computes it.
func outSize(in, k, stride, padding int) int { return (in+2*padding-k)/stride + 1 }

// liveTaps lists the kernel offsets (along one axis) that read at least one
// real, non-padding input position.
func liveTaps(k, in, out, stride, padding int) []int {
	var live []int
	for t := 0; t < k; t++ {
		for p := 0; p < out; p++ {
			if pos := t + stride*p - padding; pos >= 0 && pos < in {
				live = append(live, t)
				break
			}
		}
	}
	return live
}

// BatchNormTrain normalizes x [..., C] with the batch's own statistics, as
// torch.nn.BatchNorm2d does in train mode, and returns the updated running
// statistics: mean' = (1-m)·mean + m·batch mean, var' = (1-m)·var + m·unbiased
// batch variance (the normalization itself uses the biased one, as PyTorch).
func BatchNormTrain(x, gamma, beta, mean, variance *Node, eps, momentum float64) (y, newMean, newVar *Node) {
	rank := x.Rank()
	axes := make([]int, rank-1)
	count := 1
	for i := range axes {
		axes[i] = i
		count *= x.Shape().Dimensions[i]
	}
	if count < 2 {
		panic(fmt.Errorf("nn.BatchNormTrain: %d value(s) per channel: batch statistics need at least 2 (PyTorch refuses too)", count))
	}
	bm := ReduceMean(x, axes...)
	centered := Sub(x, ExpandLeftToRank(bm, rank))
	bv := ReduceMean(Square(centered), axes...)
	scale := Div(gamma, Sqrt(AddScalar(bv, eps))) // (GoMLX has no gradient for Rsqrt)
	y = Add(Mul(centered, ExpandLeftToRank(scale, rank)), ExpandLeftToRank(beta, rank))
	bm, bv = StopGradient(bm), StopGradient(bv)
	newMean = Add(MulScalar(mean, 1-momentum), MulScalar(bm, momentum))
	unbiased := MulScalar(bv, float64(count)/float64(count-1))
	newVar = Add(MulScalar(variance, 1-momentum), MulScalar(unbiased, momentum))
	return y, newMean, newVar
}

// BatchNormInference normalizes x [..., C] with frozen running statistics, as
// torch.nn.BatchNorm2d does in eval mode: (x-mean)/sqrt(var+eps)*gamma+beta.
// Folding the statistics into one scale and shift keeps it to two cheap ops.
func BatchNormInference(x, gamma, beta, mean, variance *Node, eps float64) *Node {
	scale := Mul(gamma, Rsqrt(AddScalar(variance, eps)))
	shift := Sub(beta, Mul(mean, scale))
	rank := x.Rank()
	return Add(Mul(x, ExpandLeftToRank(scale, rank)), ExpandLeftToRank(shift, rank))
}

// ReLU is max(x, 0).
func ReLU(x *Node) *Node { return Max(x, ZerosLike(x)) }

// ReLUDifferentiable is ReLU for a value the loss is differentiated
// through: Where(x ≤ 0, 0, x). Its forward pass is one op more than Max's,
// but its gradient is one select where Max's is five elementwise ops
// (GoMLX differentiates max(x, 0) as a comparison built from Sub and two
// Signs): 2.5% of a case-2 training step. The gradient at x = 0 is 0, as
// PyTorch's ReLU has it (Max's gives 1); NaN passes through, as in PyTorch.
func ReLUDifferentiable(x *Node) *Node {
	zero := ScalarZero(x.Graph(), x.DType())
	return Where(LessOrEqual(x, zero), zero, x)
}

// MaxPool2D takes the max over k×k windows of x [N,H,W,C] with the given
// stride and -inf padding, as torch.nn.MaxPool2d does: the max over the
// window's taps laid out by im2col.
func MaxPool2D(x *Node, k, stride, padding int) *Node {
	d := x.Shape().Dimensions
	n, c := d[0], d[3]
	ho, wo := outSize(d[1], k, stride, padding), outSize(d[2], k, stride, padding)
	x = padHW(x, padding, Infinity(x.Graph(), x.DType(), -1))
	taps := make([]int, k)
	for i := range taps {
		taps[i] = i
	}
	cols := Reshape(im2col(x, taps, taps, stride, ho, wo), n*ho*wo, k*k, c)
	return Reshape(ReduceMax(cols, 1), n, ho, wo, c)
}

// Dense computes x [N,I] · wᵀ + b [O] for w [O,I] (torch.nn.Linear, in its
// layout); b may be nil.
func Dense(x, w, b *Node) *Node {
	y := DotGeneral(x, []int{1}, nil, w, []int{1}, nil)
	if b != nil {
		y = Add(y, ExpandLeftToRank(b, 2))
	}
	return y
}

// ConvWeightFromTorch reorders a conv weight from PyTorch's [O,C,KH,KW] to
// the matmul layout Conv2D wants: [KH·KW·C, O], rows tap by tap (i, j),
// then channel. Done once at load time, not per step.
func ConvWeightFromTorch(src []float32, o, c, kh, kw int) []float32 {
	return convPermute(src, o, c, kh*kw, true)
}

// ConvWeightToTorch is the inverse of ConvWeightFromTorch.
func ConvWeightToTorch(src []float32, o, c, kh, kw int) []float32 {
	return convPermute(src, o, c, kh*kw, false)
}

// convPermute moves a conv weight between PyTorch's layout, an [O, C·kk]
// matrix whose column q is channel q/kk at tap q%kk, and the matmul layout,
// [kk·C, O] with that column as row (q%kk)·C + q/kk: a transpose with rows
// renumbered, done in 32×32 tiles. Element by element, every store of the
// [kk·C, O] side lands on another cache line (O apart): 0.26 s of a
// ResNet-50's start-up.
func convPermute(src []float32, o, c, kk int, fromTorch bool) []float32 {
	const tile = 32
	dst := make([]float32, len(src))
	cols := c * kk
	for o0 := 0; o0 < o; o0 += tile {
		o1 := min(o0+tile, o)
		for q0 := 0; q0 < cols; q0 += tile {
			for q := q0; q < min(q0+tile, cols); q++ {
				row := (q%kk*c + q/kk) * o
				if fromTorch {
					for oi := o0; oi < o1; oi++ {
						dst[row+oi] = src[oi*cols+q]
					}
				} else {
					for oi := o0; oi < o1; oi++ {
						dst[oi*cols+q] = src[row+oi]
					}
				}
			}
		}
	}
	return dst
}
