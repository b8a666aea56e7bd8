// Package testutil holds what lorafit's tests share: one compute backend per
// test binary, the tolerance check every parity test uses, and paths to the
// committed fixtures.
package testutil

import (
	"math"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/backend"
)

// Backend is the backend users get by default ($GOMLX_BACKEND or lorafit's
// default), one for the whole test binary: a tensor used on one backend
// cannot be passed to another.
var Backend = sync.OnceValue(func() compute.Backend {
	b, err := backend.New(backend.Resolve(""))
	if err != nil {
		panic(err)
	}
	return b
})

// Path is a path relative to the repository root.
func Path(rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", filepath.FromSlash(rel))
}

// Fixture paths: PyTorch-saved ResNets of the ResNet-50 and ResNet-18
// topologies with width 4 (see resnet/testdata/make_fixtures.py).
var (
	ResNet50W4 = Path("resnet/testdata/resnet50_w4.pth")
	ResNet18W4 = Path("resnet/testdata/resnet18_w4.pth")
)

// MaxRelDiff is max|a-b| / max|b|: a relative tolerance on the tensor's
// scale, as PyTorch's own parity tests use. Different lengths or an all-zero
// b give +Inf, so a check against nothing never passes.
func MaxRelDiff(a, b []float32) float64 {
	if len(a) != len(b) || len(b) == 0 {
		return math.Inf(1)
	}
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	if s == 0 {
		return math.Inf(1)
	}
	return d / s
}

// AssertClose fails when MaxRelDiff(got, want) exceeds tol.
func AssertClose(t testing.TB, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	if d := MaxRelDiff(got, want); d > tol {
		t.Errorf("%s: differs from the reference by %.3g relative (limit %.0e)", what, d, tol)
	}
}

// Meter measures a benchmark's CPU use: Start before the timed loop, then
// Report adds "cpu%" (process CPU time over wall time: 200 is two busy
// cores) and "peakMiB" (the process's peak resident memory so far).
type Meter struct {
	wall time.Time
	cpu  time.Duration
}

// StartMeter starts measuring.
func StartMeter() *Meter { return &Meter{wall: time.Now(), cpu: cpuTime()} }

// Report adds the metrics to b.
func (m *Meter) Report(b *testing.B) {
	wall := time.Since(m.wall)
	b.ReportMetric(100*float64(cpuTime()-m.cpu)/float64(wall), "cpu%")
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "peakMiB") // Linux: KiB
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
