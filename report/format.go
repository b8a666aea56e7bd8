package report

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Every number a person reads goes through these helpers, so report.md,
// report.html and the plots never disagree on how a value is written.

// none stands for a value that was not measured.
const none = "—"

// Thousands writes n with comma separators: 2733810 → "2,733,810".
func Thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// mebibytes converts bytes to MiB, the unit sizes are compared in.
func mebibytes(b int64) float64 { return float64(b) / (1 << 20) }

// mib writes a byte count as MiB with 2 decimals: "97.49 MiB".
func mib(b int64) string { return fmt.Sprintf("%.2f MiB", mebibytes(b)) }

// mibValue is mib without the unit, for table rows that name it.
func mibValue(b int64) string {
	if b <= 0 {
		return none
	}
	return fmt.Sprintf("%.2f", mebibytes(b))
}

// thousandsOrNone is thousands, or "—" for a size that was not measured.
func thousandsOrNone(b int64) string {
	if b <= 0 {
		return none
	}
	return Thousands(b)
}

// bytesAndMiB writes "10,936,960 B (10.43 MiB)".
func bytesAndMiB(b int64) string {
	if b <= 0 {
		return none
	}
	return Thousands(b) + " B (" + mib(b) + ")"
}

// percent writes a fraction in [0,1] as a percentage with 2 decimals, or
// 2 significant digits when that would round a nonzero value to 0.00%
// (LoRA trains a tiny share of a network's parameters).
func percent(frac float64) string {
	if math.IsNaN(frac) || math.IsInf(frac, 0) {
		return none
	}
	p := 100 * frac
	if p != 0 && math.Abs(p) < 0.005 {
		return strconv.FormatFloat(p, 'g', 2, 64) + "%"
	}
	return fmt.Sprintf("%.2f%%", p)
}

// ratio is a/b as a fraction, NaN when b is 0 so percent prints "—".
func ratio(a, b int64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// fixed writes x with d decimals, or "—" when x is not a number or not
// measured (0 means "not measured" for times and rates).
func fixed(x float64, d int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) || x == 0 {
		return none
	}
	return strconv.FormatFloat(x, 'f', d, 64)
}

// duration writes seconds as "1h2m3s (3723 s)": the first for people, the
// second to compare with the table's train times.
func duration(sec float64) string {
	if !(sec > 0) {
		return none
	}
	d := time.Duration(sec * float64(time.Second)).Round(time.Second)
	return fmt.Sprintf("%s (%.0f s)", d, sec)
}

// shortSHA keeps enough of a sha256 to recognize it at a glance.
func shortSHA(h string) string {
	if h == "" {
		return none
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// compact writes a count for a plot label: 2733810 → "2.73M".
func compact(x float64) string {
	switch a := math.Abs(x); {
	case a >= 1e9:
		return strconv.FormatFloat(x/1e9, 'g', 3, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(x/1e6, 'g', 3, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(x/1e3, 'g', 3, 64) + "k"
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}

// shortMiB writes a MiB value for a plot label: 3 significant digits,
// at most 2 decimals.
func shortMiB(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// orNone returns s, or "—" when s is empty.
func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}
