// Package memcheck lets fuzz targets fail on allocation bombs: a parser
// that allocates far more than its input justifies would otherwise pass a
// fuzz run (or only crash the machine running it).
package memcheck

import (
	"runtime"
	"testing"
)

// Bound runs fn and fails t if fn allocated more than base + perByte×n
// bytes in total (runtime.MemStats.TotalAlloc, which counts every
// allocation, so a bomb is caught even if its memory is freed again). n is
// the input's size; perByte is the most a valid input of that format can
// legitimately expand to per byte. Allocations too large to survive at all
// still end the fuzz run, as a crash the fuzzer records.
func Bound(t testing.TB, n int, perByte, base uint64, fn func()) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	limit := base + perByte*uint64(n)
	if got := after.TotalAlloc - before.TotalAlloc; got > limit {
		t.Fatalf("allocated %d bytes for a %d-byte input, over the bound of %d (%d + %d per byte)", got, n, limit, base, perByte)
	}
}
