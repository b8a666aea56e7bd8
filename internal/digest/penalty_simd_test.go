//go:build goexperiment.simd && amd64

package digest

import (
	"crypto/sha256"
	"simd/archsimd"
	"testing"
	"time"
)

var sink [8]float32

// dirty leaves the upper half of a vector register in use, as Go code in
// a simd build may.
//
//go:noinline
func dirty() {
	v := archsimd.LoadFloat32x8(sink[:])
	v.Add(archsimd.BroadcastFloat32x8(1)).Store(sink[:])
}

// TestTransitionPenalty: after AVX code left the upper register halves
// dirty, New hashes at full speed where crypto/sha256 alone may not.
func TestTransitionPenalty(t *testing.T) {
	if !archsimd.X86.AVX() {
		t.Skip("no AVX")
	}
	b := make([]byte, 4<<20)
	timeIt := func(f func()) time.Duration {
		best := time.Hour
		for range 3 {
			dirty()
			start := time.Now()
			f()
			best = min(best, time.Since(start))
		}
		return best
	}
	plain := timeIt(func() { sha256.Sum256(b) })
	ours := timeIt(func() { New().Write(b) })
	t.Logf("4 MiB after dirtying the upper halves: crypto/sha256 %v, digest.New %v", plain, ours)
	if ours > 100*time.Millisecond { // 4 ms here; crypto/sha256 alone ~50 ms
		t.Errorf("digest.New took %v for 4 MiB", ours)
	}
}
