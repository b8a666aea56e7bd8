package dense

import (
	"math"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
)

func init() {
	// After the gathered-LHS passes (50): the fused node takes over the
	// FusedDense's inputs as they leave it, and the dead FusedDense's uses
	// must not count against a Gather it reads.
	gobackend.RegisterTransformation(40, residualFusion{})
}

// residualFusion folds a residual connection into the float32 FusedDense
// before it: Max(Add(FusedDense(x, w, b), r), 0), how a ResNet block ends
// (its last conv, batch norm folded in, plus the shortcut, then ReLU),
// becomes one FusedDense that adds r and applies the ReLU in its epilogue
// (matmul.Epilogue.Residual), block by block while each block is in cache,
// instead of an Add and a Max each over the whole output. The same float32
// operations in the same order: (x·w + b) + r, then max with 0. A Reshape
// between the FusedDense and the Add (a 3×3 conv's product laid back out as
// an image) is allowed: it does not move a value.
//
// The Max node itself becomes the fused node, so its users need not change
// and it still comes after all its inputs; the FusedDense, Reshape and Add,
// then unused, are not executed.
type residualFusion struct{}

func (residualFusion) Name() string { return "ResidualFusion(FusedDense)" }

func (residualFusion) Apply(b *gobackend.Builder) (bool, error) {
	uses := dot.CountUses(b)
	for _, f := range b.Functions {
		for _, node := range f.Nodes {
			if node.OpType != compute.OpTypeMax || node.Shape.DType != dtypes.Float32 || node.Shape.IsDynamic() {
				continue
			}
			sum := node.Inputs[0]
			if isZero(sum) {
				sum = node.Inputs[1]
			} else if !isZero(node.Inputs[1]) {
				continue
			}
			if sum.OpType != compute.OpTypeAdd || uses[sum] != 1 || !sum.Shape.Equal(node.Shape) {
				continue
			}
			for i, product := range sum.Inputs {
				residual := sum.Inputs[1-i]
				if product.OpType == compute.OpTypeReshape && uses[product] == 1 {
					product = product.Inputs[0]
				}
				data, ok := product.Data.(*nodeFusedDense)
				if product.OpType != compute.OpTypeFusedDense || !ok || uses[product] != 1 || data.residual || data.batchSize != 1 ||
					data.options.Activation.Type != compute.ActivationNone || product.Shape.DType != dtypes.Float32 ||
					product.Shape.Size() != node.Shape.Size() || !residual.Shape.Equal(node.Shape) || product.Function != f {
					continue
				}
				fused := *data
				fused.residual = true
				fused.options.Activation = compute.ActivationConfig{Type: compute.ActivationRelu}
				node.OpType = compute.OpTypeFusedDense
				node.Inputs = append(slices.Clone(product.Inputs), residual)
				node.Data = &fused
				break
			}
		}
	}
	return false, nil
}

// isZero tells whether node is a float32 constant of +0s, possibly broadcast.
func isZero(node *gobackend.Node) bool {
	if node.OpType == compute.OpTypeBroadcastInDim {
		node = node.Inputs[0]
	}
	if node.OpType != compute.OpTypeConstant {
		return false
	}
	buf, ok := node.Data.(*gobackend.Buffer)
	if !ok {
		return false
	}
	flat, ok := buf.Flat.([]float32)
	if !ok || len(flat) == 0 {
		return false
	}
	for _, v := range flat {
		if math.Float32bits(v) != 0 {
			return false
		}
	}
	return true
}
