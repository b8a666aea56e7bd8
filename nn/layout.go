package nn

// Layout says how a PyTorch tensor is kept for graphs: conv weights as
// [K·K·C, O] (matmul layout, so no transpose or reshape runs per step);
// linear weights as PyTorch keeps them, [out,in], which Dense contracts on
// its last axis — the layout whose gradient comes out of the backward
// matmul already in place (as [in,out] it would be transposed on every
// step); everything else as is. Conversions happen once, when weights are
// loaded or saved.
type Layout int

const (
	Plain        Layout = iota
	ConvLayout          // [O,C,K,K] ↔ [K·K·C,O]; also LoRA's 1×1-conv B, [O,r,1,1] ↔ [r,O]
	LinearLayout        // [out,in], as is: a weight (decayed), unlike Plain
)

// ToStore converts PyTorch-layout values of shape s to the Store's layout,
// returning the values and their Store shape.
func (l Layout) ToStore(v []float32, s []int) ([]float32, []int) {
	switch l {
	case ConvLayout:
		return ConvWeightFromTorch(v, s[0], s[1], s[2], s[3]), []int{s[2] * s[3] * s[1], s[0]}
	case LinearLayout:
		in := len(v) / s[0]
		return v, []int{s[0], in}
	}
	return v, s
}

// ToTorch is the inverse of ToStore; s is the PyTorch shape.
func (l Layout) ToTorch(v []float32, s []int) []float32 {
	switch l {
	case ConvLayout:
		return ConvWeightToTorch(v, s[0], s[1], s[2], s[3])
	}
	return v
}

// StoreShape is the graph-layout shape of a tensor of PyTorch shape s.
func (l Layout) StoreShape(s []int) []int {
	switch l {
	case ConvLayout:
		return []int{s[2] * s[3] * s[1], s[0]}
	case LinearLayout:
		in := 1
		for _, d := range s[1:] {
			in *= d
		}
		return []int{s[0], in}
	}
	return s
}
