package nn

import (
	"fmt"
	"sort"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

// Weights are the tensors a graph reads, by state_dict key
// ("layer1.0.conv1.weight"), as nodes of the graph being built.
type Weights map[string]*Node

// Get returns a weight's node; a missing key is a bug in whoever built the
// map, reported with the keys that are there.
func (w Weights) Get(key string) *Node {
	n, ok := w[key]
	if !ok {
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) > 6 {
			keys = append(keys[:6], "…")
		}
		panic(fmt.Errorf("nn: no weight %q among %d (%v)", key, len(w), keys))
	}
	return n
}
