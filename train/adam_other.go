//go:build !(goexperiment.simd && amd64)

package train

const avx2 = false

// lanes does nothing without Go's SIMD (see adam_simd.go): scalar does all.
func (a adam) lanes(task) int { return 0 }
