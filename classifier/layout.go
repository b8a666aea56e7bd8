package classifier

import (
	"lorafit/nn"
	"lorafit/resnet"
)

// Layout says how a PyTorch tensor is stored in the GoMLX Store: conv
// weights as [K,K,C,O] and linear weights as [in,out] (matmul layout, so no
// transpose runs per step); everything else as is.
type Layout int

const (
	Plain Layout = iota
	ConvLayout
	LinearLayout // also LoRA's 1×1-conv B, [O,r,1,1] ↔ [r,O]
)

func layoutOf(k resnet.Kind) Layout {
	switch k {
	case resnet.ConvWeight:
		return ConvLayout
	case resnet.LinearWeight:
		return LinearLayout
	}
	return Plain
}

// toStore converts PyTorch-layout values of shape s to the Store's layout.
func (l Layout) toStore(v []float32, s []int) ([]float32, []int) {
	switch l {
	case ConvLayout:
		return nn.ConvWeightFromTorch(v, s[0], s[1], s[2], s[3]), []int{s[2], s[3], s[1], s[0]}
	case LinearLayout:
		in := len(v) / s[0]
		return nn.TransposeMatrix(v, s[0], in), []int{in, s[0]}
	}
	return v, s
}

// toTorch is the inverse of toStore.
func (l Layout) toTorch(v []float32, s []int) []float32 {
	switch l {
	case ConvLayout:
		return nn.ConvWeightToTorch(v, s[0], s[1], s[2], s[3])
	case LinearLayout:
		return nn.TransposeMatrix(v, len(v)/s[0], s[0])
	}
	return v
}
