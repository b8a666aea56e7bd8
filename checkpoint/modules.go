package checkpoint

import (
	"fmt"
	"strings"
)

// IsBuffer tells a batch-norm running statistic from a learned parameter by
// its key, as torch's named_buffers would: buffers are not counted as
// parameters and never train.
func IsBuffer(key string) bool {
	return strings.HasSuffix(key, ".running_mean") || strings.HasSuffix(key, ".running_var") ||
		strings.HasSuffix(key, ".num_batches_tracked")
}

// Module is a node of the module tree a state_dict implies (torch's
// named_modules): "layer1", "layer1.0", "layer1.0.conv1", …
type Module struct {
	Name   string
	Depth  int    // number of dots in Name
	Type   string // for leaves: "Conv2d 64→256 1×1", "BatchNorm2d 64", "Linear 2048→1000"
	Params int    // learned parameters in this module and below
	Leaf   bool
}

// Modules lists the module tree in first-appearance order, with parameter
// counts, so users can see what a LoRA target regex like `.*\.2\.conv3` hits.
func Modules(sd *StateDict) []Module {
	var order []string
	byName := map[string]*Module{}
	get := func(name string, leaf bool) *Module {
		m, ok := byName[name]
		if !ok {
			m = &Module{Name: name, Depth: strings.Count(name, "."), Leaf: leaf}
			byName[name] = m
			order = append(order, name)
		}
		return m
	}
	for _, key := range sd.Names {
		i := strings.LastIndex(key, ".")
		if i < 0 {
			continue // a top-level tensor belongs to no module
		}
		owner := key[:i]
		parts := strings.Split(owner, ".")
		for d := 1; d < len(parts); d++ {
			get(strings.Join(parts[:d], "."), false)
		}
		leaf := get(owner, true)
		t := sd.Tensors[key]
		if !IsBuffer(key) {
			n := t.NumElements()
			for d := 1; d <= len(parts); d++ {
				byName[strings.Join(parts[:d], ".")].Params += n
			}
		}
		switch s := t.Shape; {
		case strings.HasSuffix(key, ".running_mean") && len(s) == 1:
			leaf.Type = fmt.Sprintf("BatchNorm2d %d", s[0])
		case strings.HasSuffix(key, ".weight") && len(s) == 4:
			leaf.Type = fmt.Sprintf("Conv2d %d→%d %d×%d", s[1], s[0], s[2], s[3])
		case strings.HasSuffix(key, ".weight") && len(s) == 2 && leaf.Type == "":
			leaf.Type = fmt.Sprintf("Linear %d→%d", s[1], s[0])
		}
	}
	out := make([]Module, len(order))
	for i, n := range order {
		out[i] = *byName[n]
	}
	return out
}

// Counts returns the number of learned parameters and of buffer values.
func Counts(sd *StateDict) (params, buffers int) {
	for _, k := range sd.Names {
		if IsBuffer(k) {
			buffers += sd.Tensors[k].NumElements()
		} else {
			params += sd.Tensors[k].NumElements()
		}
	}
	return params, buffers
}
