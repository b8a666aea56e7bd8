//go:build amd64 && goexperiment.simd

package ops

import (
	"simd/archsimd"
	"unsafe"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
)

func init() {
	if gobackend.IsAVX512Allowed {
		gobackend.SetNodeExecutor(compute.OpTypeLessOrEqual, PrioritySIMD, execLessOrEqualAVX512)
	}
}

// execLessOrEqualAVX512 computes x ≤ c for a float32 x and a scalar c, 16
// lanes a compare: the mask of a ReLU that a gradient flows through,
// Where(x ≤ 0, 0, x), which the generic loop took one element at a time
// (3% of a training step). Other operands fall back to it.
func execLessOrEqualAVX512(backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer, _ []bool) (*gobackend.Buffer, error) {
	lhs, rhs := inputs[0], inputs[1]
	if lhs.RawShape.DType != dtypes.Float32 || rhs.RawShape.Size() != 1 || lhs.RawShape.Size() != node.Shape.Size() {
		return nil, gobackend.ErrFallback
	}
	output, err := backend.GetBuffer(node.Shape)
	if err != nil {
		return nil, err
	}
	if backend.NoOps {
		return output, nil
	}
	lessOrEqualScalarFloat32AVX512(lhs.Flat.([]float32), rhs.Flat.([]float32)[0], output.Flat.([]bool))
	return output, nil
}

// lessOrEqualScalarFloat32AVX512 sets out[i] = x[i] <= c, as Go compares
// (false for a NaN).
func lessOrEqualScalarFloat32AVX512(x []float32, c float32, out []bool) {
	vc := archsimd.BroadcastFloat32x16(c)
	one := archsimd.BroadcastInt32x16(1)
	bytes := unsafe.Slice((*int8)(unsafe.Pointer(unsafe.SliceData(out))), len(out)) // a bool is one byte, 0 or 1
	i := 0
	for ; i+16 <= len(x); i += 16 {
		archsimd.LoadFloat32x16(x[i : i+16]).LessEqual(vc).ToInt32x16().And(one).TruncToInt8().Store(bytes[i : i+16])
	}
	for ; i < len(x); i++ {
		out[i] = x[i] <= c
	}
}
