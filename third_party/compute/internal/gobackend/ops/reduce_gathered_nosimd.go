//go:build !goexperiment.simd

package ops

// maxInto sets acc[i] = max(acc[i], v[i]) with Go's max.
func maxInto(acc, v []float32) {
	for i := range acc {
		acc[i] = max(acc[i], v[i])
	}
}
