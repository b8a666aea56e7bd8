package backend

import (
	"runtime"
	"runtime/debug"
)

// Experiments is the GOEXPERIMENT the running binary was built with, as
// `go version -m` shows it ("" for none).
func Experiments() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOEXPERIMENT" {
				return s.Value
			}
		}
	}
	return ""
}

// SIMD tells whether GoMLX's AVX2/AVX-512 matmul kernels are compiled in:
// they are behind GOEXPERIMENT=simd.
func SIMD() bool { return simdBuild }

// BuildWarnings lists what makes this binary needlessly slow, each with the
// command that fixes it; every verb that computes prints them once.
func BuildWarnings() []string {
	var w []string
	if !simdBuild && runtime.GOARCH == "amd64" {
		w = append(w, "this lorafit was built without GOEXPERIMENT=simd: GoMLX's vectorized matmul is off and "+
			"training and inference run an order of magnitude slower. Rebuild with "+
			"`GOEXPERIMENT=simd go build ./cmd/lorafit` (or `GOEXPERIMENT=simd go run ./cmd/lorafit ...`, "+
			"`GOEXPERIMENT=simd go install github.com/lorafit/lorafit/cmd/lorafit@latest`)")
	}
	return w
}
