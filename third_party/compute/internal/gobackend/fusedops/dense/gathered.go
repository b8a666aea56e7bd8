package dense

import (
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
)

func init() {
	gobackend.RegisterTransformation(50, gatheredLHSFusion{})
}

// gatheredLHSFusion lets a float32 FusedDense read its input straight from a
// Gather of contiguous slices (a convolution's patches, im2col): x =
// Reshape(Gather(src, constant indices)) is replaced by src and the runs'
// offsets (dot.GatheredLHS, dot.GatheredInput), so the gathered matrix is
// never written, where the matmul implementation packs the runs itself (one
// chosen when the product runs that does not is given the matrix laid out,
// matmul.ExecuteWithEpilogue).
type gatheredLHSFusion struct{}

func (gatheredLHSFusion) Name() string { return "GatheredLHSFusion(FusedDense)" }

func (gatheredLHSFusion) Apply(b *gobackend.Builder) (bool, error) {
	uses := dot.CountUses(b)
	for _, f := range b.Functions {
		for _, node := range f.Nodes {
			data, ok := node.Data.(*nodeFusedDense)
			// A constant input is packed once into a cache, from the matrix itself.
			if node.OpType != compute.OpTypeFusedDense || !ok || data.batchSize != 1 || data.dotNodeData.PackedLHSCache != nil ||
				node.Shape.DType != dtypes.Float32 || node.Shape.IsDynamic() || data.dotNodeData.GatheredLHS != nil ||
				!dot.FindRegisteredImplementation(data.layout, dtypes.Float32, dtypes.Float32).Has(dot.ReadsGatheredLHS, data.layout, dtypes.Float32, dtypes.Float32) {
				continue
			}
			src, g := dot.GatheredInput(node.Inputs[0], uses, data.lhsCrossSize, data.contractingSize, 0)
			if g == nil {
				continue
			}
			dotData := *data.dotNodeData
			dotData.GatheredLHS = g
			fused := *data
			fused.dotNodeData = &dotData
			node.Data = &fused
			node.Inputs[0] = src
		}
	}
	return false, nil
}
