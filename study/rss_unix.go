//go:build unix

package study

import (
	"runtime"
	"syscall"
)

// peakRSS is this process's peak resident set size in bytes: what the
// machine had to have for the run, the off-heap feature cache included
// (the Go heap's own figures leave it out).
func peakRSS() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return int64(ru.Maxrss) // bytes there, KiB elsewhere
	}
	return int64(ru.Maxrss) * 1024
}
