//go:build !unix

package study

// peakRSS is 0 where getrusage is not available: results.json then leaves
// the field out.
func peakRSS() int64 { return 0 }
