package dot

import "github.com/gomlx/compute/dtypes"

// Capability is something a matmul implementation does beyond what
// DotGeneralExecFn asks of every implementation.
type Capability uint8

const (
	// ReadsGatheredLHS: it reads NodeData.GatheredLHS's runs itself, where
	// others are given the matrix laid out.
	ReadsGatheredLHS Capability = 1 << iota

	// AppliesEpilogue: it applies NodeData.Epilogue to each block of the
	// output as soon as the block's sums are final, while the block is in
	// cache, where others leave the epilogue to a pass of its own over the
	// whole output.
	AppliesEpilogue
)

// capabilities holds, per key, the implementation (by name) that has them.
var capabilities = map[ImplementationKey]struct {
	name string
	caps Capability
}{}

// RegisterCapabilities records what the implementation registered under name
// for this key does beyond DotGeneralExecFn's contract.
//
// This should only be called during initialization.
func RegisterCapabilities(name string, layout Layout, inputDType, outputDType dtypes.DType, caps Capability) {
	capabilities[ImplementationKey{Layout: layout, InputDType: inputDType, OutputDType: outputDType}] = struct {
		name string
		caps Capability
	}{name, caps}
}

// Has tells whether r, registered for the key, has capability c.
func (r *ImplementationRegistration) Has(c Capability, layout Layout, inputDType, outputDType dtypes.DType) bool {
	got, ok := capabilities[ImplementationKey{Layout: layout, InputDType: inputDType, OutputDType: outputDType}]
	return ok && r != nil && r.name == got.name && got.caps&c == c
}
