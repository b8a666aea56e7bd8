package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/lorafit/lorafit/report"
)

// checkPeakRSS: the peak memory an in-process experiment reports is the
// OS's figure, in bytes: at least its cached features (resident while the
// cases train), at most this process's peak so far; and the last line says
// it.
func checkPeakRSS(t *testing.T, r *report.Results, stdout string) {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	if r.Cache == nil || r.PeakRSSBytes < r.Cache.Bytes || r.PeakRSSBytes > ru.Maxrss*1024 || !strings.Contains(stdout, ", peak memory ") {
		t.Errorf("peak RSS %d bytes reported: want between the cache's %+v and this process's peak %d KiB, and said on the last line:\n%s",
			r.PeakRSSBytes, r.Cache, ru.Maxrss, stdout)
	}
}
