// Package progress prints how far a long job (a download, training) has
// come. On a terminal it redraws one line in place, at most every
// Throttle; elsewhere (CI logs, files) it prints a plain line each tenth of
// the way, so logs stay short and readable.
package progress

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Throttle is the least time between two redraws on a terminal.
const Throttle = 100 * time.Millisecond

// Line is one job's progress line. A nil *Line (from New(nil)) prints
// nothing, so callers need no checks.
type Line struct {
	w   io.Writer
	tty bool
	// Now is the clock (tests set it).
	Now func() time.Time
	// Every is the off-terminal interval, in the job's units, when the
	// total is unknown (≤ 0).
	Every int64

	last    time.Time
	step    int64 // the last printed tenth (or Every-step)
	printed int64 // done at the last print, so Finish does not repeat it
	drawn   bool  // a redrawn line is on screen and needs a newline before notes
}

// New returns a Line on w, or nil if w is nil.
func New(w io.Writer) *Line {
	if w == nil {
		return nil
	}
	return &Line{w: w, tty: IsTerminal(w), Now: time.Now, Every: 1, step: -1, printed: -1}
}

// NewTerminal returns a Line that redraws in place whatever w is: for a
// caller that knows w is a terminal, and for tests.
func NewTerminal(w io.Writer) *Line {
	l := New(w)
	if l != nil {
		l.tty = true
	}
	return l
}

// IsTerminal reports whether w is a character device: only there do
// redraws make sense.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Terminal reports whether the line is redrawn in place.
func (l *Line) Terminal() bool { return l != nil && l.tty }

// Start (re)starts counting at done of total: the steps already behind are
// not printed.
func (l *Line) Start(done, total int64) {
	if l == nil {
		return
	}
	l.step = l.stepOf(done, total)
}

// Update prints text() if it is due: on a terminal when Throttle has passed
// (or the job is done), elsewhere when done enters a new tenth of total.
// text is called only then.
func (l *Line) Update(done, total int64, text func() string) {
	if l == nil {
		return
	}
	if l.tty {
		if t := l.Now(); t.Sub(l.last) >= Throttle || done == total {
			l.last = t
			l.Print(done, text())
		}
		return
	}
	if s := l.stepOf(done, total); s > l.step {
		l.step = s
		l.Print(done, text())
	}
}

// Print prints text now, as the state at done.
func (l *Line) Print(done int64, text string) {
	if l == nil {
		return
	}
	l.printed = done
	if l.tty {
		fmt.Fprintf(l.w, "\r%s\x1b[K", text)
		l.drawn = true
		return
	}
	fmt.Fprintln(l.w, text)
}

// Finish prints the final state (unless it was the last thing printed) and
// ends a redrawn line.
func (l *Line) Finish(done int64, text func() string) {
	if l == nil {
		return
	}
	if l.printed != done {
		l.Print(done, text())
	}
	l.End()
}

// End ends a redrawn line, so what follows starts on a line of its own.
func (l *Line) End() {
	if l != nil && l.drawn {
		fmt.Fprintln(l.w)
		l.drawn = false
	}
}

// Note prints a message on a line of its own without garbling a redrawn one.
func (l *Line) Note(format string, args ...any) {
	if l == nil {
		return
	}
	l.End()
	fmt.Fprintf(l.w, format+"\n", args...)
}

func (l *Line) stepOf(done, total int64) int64 {
	if total > 0 {
		return done * 10 / total
	}
	return done / max(l.Every, 1)
}
