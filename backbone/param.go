package backbone

import "github.com/lorafit/lorafit/nn"

// Kind says what a state_dict entry is, which decides its layout and whether
// it is a parameter (counted, trainable) or a buffer.
type Kind int

const (
	ConvWeight Kind = iota
	LinearWeight
	LinearBias
	BNWeight
	BNBias
	BNMean
	BNVar
	BNCount // num_batches_tracked: an int64 scalar, kept so files round-trip
)

// Layout is how the entry is kept in memory for the graph.
func (k Kind) Layout() nn.Layout {
	switch k {
	case ConvWeight:
		return nn.ConvLayout
	case LinearWeight:
		return nn.LinearLayout
	}
	return nn.Plain
}

// IsBuffer tells buffers (running stats) from parameters.
func (k Kind) IsBuffer() bool { return k >= BNMean }

// Param is one state_dict entry: its torchvision key, kind, PyTorch shape
// and the module it belongs to.
type Param struct {
	Name   string
	Kind   Kind
	Shape  []int
	Module string
}

// NumElements is the product of the shape.
func (p Param) NumElements() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// ModuleParams lists a module's state_dict entries in torchvision's order:
// what any network built of these modules has.
func ModuleParams(m nn.Module) []Param {
	switch m.Type {
	case nn.Conv2d:
		return []Param{{m.Name + ".weight", ConvWeight, m.WeightShape(), m.Name}}
	case nn.BatchNorm2d:
		return []Param{
			{m.Name + ".weight", BNWeight, []int{m.Out}, m.Name},
			{m.Name + ".bias", BNBias, []int{m.Out}, m.Name},
			{m.Name + ".running_mean", BNMean, []int{m.Out}, m.Name},
			{m.Name + ".running_var", BNVar, []int{m.Out}, m.Name},
			{m.Name + ".num_batches_tracked", BNCount, []int{}, m.Name},
		}
	case nn.Linear:
		return []Param{
			{m.Name + ".weight", LinearWeight, m.WeightShape(), m.Name},
			{m.Name + ".bias", LinearBias, []int{m.Out}, m.Name},
		}
	}
	return nil
}

// ParamsOf lists the state_dict entries of a module list.
func ParamsOf(modules []nn.Module) []Param {
	var ps []Param
	for _, m := range modules {
		ps = append(ps, ModuleParams(m)...)
	}
	return ps
}
