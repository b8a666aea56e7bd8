package weights

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lorafit/lorafit/progress"
)

// progressBar is a download's progress line: bytes, percent, MB/s and ETA
// of the current attempt.
type progressBar struct {
	line *progress.Line
	name string

	total      int64 // -1 when the server did not say
	cur        int64
	sessStart  time.Time // start of the current attempt
	sessOffset int64     // bytes already present when the attempt started
}

// unknownStep is the off-terminal print interval when the size is unknown.
const unknownStep = 16 << 20

// newProgress returns nil for a nil writer; all methods accept a nil
// receiver so callers need no checks.
func newProgress(w io.Writer, name string) *progressBar {
	line := progress.New(w)
	if line == nil {
		return nil
	}
	line.Every = unknownStep
	return &progressBar{line: line, name: name, total: -1}
}

// begin starts (or restarts, after a retry) an attempt at byte offset of total.
func (p *progressBar) begin(offset, total int64) {
	if p == nil {
		return
	}
	p.cur, p.total = offset, total
	p.sessStart, p.sessOffset = p.line.Now(), offset
	p.line.Start(offset, total)
}

func (p *progressBar) add(n int) {
	if p == nil {
		return
	}
	p.cur += int64(n)
	p.line.Update(p.cur, p.total, p.text)
}

// finish prints the final state once the body is complete.
func (p *progressBar) finish() {
	if p != nil {
		p.line.Finish(p.cur, p.text)
	}
}

// note prints a message on its own line without garbling the bar.
func (p *progressBar) note(format string, args ...any) {
	if p != nil {
		p.line.Note(format, args...)
	}
}

func (p *progressBar) text() string {
	var b strings.Builder
	b.WriteString(p.name)
	b.WriteString("  ")
	if p.total > 0 {
		fmt.Fprintf(&b, "%s / %s  %3d%%", mb(p.cur), mb(p.total), p.cur*100/p.total)
	} else {
		b.WriteString(mb(p.cur))
	}
	elapsed := p.line.Now().Sub(p.sessStart)
	if got := p.cur - p.sessOffset; elapsed > 0 && got > 0 {
		rate := float64(got) / elapsed.Seconds()
		fmt.Fprintf(&b, "  %.1f MB/s", rate/1e6)
		if p.total > 0 && p.cur < p.total {
			eta := time.Duration(float64(p.total-p.cur) / rate * float64(time.Second))
			fmt.Fprintf(&b, "  ETA %s", eta.Round(time.Second))
		}
	}
	return b.String()
}

// mb formats a byte count in decimal megabytes, like most download tools.
func mb(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}
