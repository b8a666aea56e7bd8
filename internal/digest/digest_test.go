package digest

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestSums: the same sums as crypto/sha256, for sizes around the pieces.
func TestSums(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, piece - 1, piece, piece + 1, 3*piece + 17} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		h := New()
		h.Write(b[:n/3])
		h.Write(b[n/3:])
		if got, want := h.Sum(nil), sha256.Sum256(b); string(got) != string(want[:]) {
			t.Errorf("%d bytes: %x, want %x", n, got, want)
		}
	}
}
