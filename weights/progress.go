package weights

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progressBar renders download progress to any io.Writer. On a terminal it
// redraws one line with \r (throttled); elsewhere (CI logs, files) it prints
// a line per 10% so logs stay short and readable.
type progressBar struct {
	w    io.Writer
	tty  bool
	name string
	now  func() time.Time

	total      int64 // -1 when the server did not say
	cur        int64
	sessStart  time.Time // start of the current attempt
	sessOffset int64     // bytes already present when the attempt started
	lastDraw   time.Time
	lastStep   int64 // last printed decile (or 16 MiB step when total unknown)
	printed    int64 // cur at the last draw, so finish does not repeat a line
	drawn      bool  // a \r line is on screen and needs a newline before notes
}

// unknownStep is the non-terminal print interval when the size is unknown.
const unknownStep = 16 << 20

// newProgress returns nil for a nil writer; all methods accept a nil receiver
// so callers need no checks.
func newProgress(w io.Writer, name string) *progressBar {
	if w == nil {
		return nil
	}
	return &progressBar{w: w, tty: isTerminal(w), name: name, now: time.Now, total: -1, lastStep: -1, printed: -1}
}

// isTerminal reports whether w is a character device; \r redraws only make
// sense there.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// begin starts (or restarts, after a retry) an attempt at byte offset of total.
func (p *progressBar) begin(offset, total int64) {
	if p == nil {
		return
	}
	p.cur, p.total = offset, total
	p.sessStart, p.sessOffset = p.now(), offset
	p.lastStep = p.step()
}

func (p *progressBar) add(n int) {
	if p == nil {
		return
	}
	p.cur += int64(n)
	if p.tty {
		if t := p.now(); t.Sub(p.lastDraw) >= 100*time.Millisecond {
			p.lastDraw = t
			p.draw()
		}
		return
	}
	if s := p.step(); s > p.lastStep {
		p.lastStep = s
		p.draw()
	}
}

// finish prints the final state once the body is complete.
func (p *progressBar) finish() {
	if p == nil {
		return
	}
	if p.tty || p.printed != p.cur {
		p.draw()
	}
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// note prints a message on its own line without garbling a \r bar.
func (p *progressBar) note(format string, args ...any) {
	if p == nil {
		return
	}
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *progressBar) step() int64 {
	if p.total > 0 {
		return p.cur * 10 / p.total
	}
	return p.cur / unknownStep
}

func (p *progressBar) draw() {
	p.printed = p.cur
	var b strings.Builder
	b.WriteString(p.name)
	b.WriteString("  ")
	if p.total > 0 {
		fmt.Fprintf(&b, "%s / %s  %3d%%", mb(p.cur), mb(p.total), p.cur*100/p.total)
	} else {
		b.WriteString(mb(p.cur))
	}
	elapsed := p.now().Sub(p.sessStart)
	if got := p.cur - p.sessOffset; elapsed > 0 && got > 0 {
		rate := float64(got) / elapsed.Seconds()
		fmt.Fprintf(&b, "  %.1f MB/s", rate/1e6)
		if p.total > 0 && p.cur < p.total {
			eta := time.Duration(float64(p.total-p.cur) / rate * float64(time.Second))
			fmt.Fprintf(&b, "  ETA %s", eta.Round(time.Second))
		}
	}
	if p.tty {
		// Pad so a shorter line fully overwrites the previous one.
		fmt.Fprintf(p.w, "\r%-72s", b.String())
		p.drawn = true
	} else {
		fmt.Fprintln(p.w, b.String())
	}
}

// mb formats a byte count in decimal megabytes, like most download tools.
func mb(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}
