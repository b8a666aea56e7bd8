package train

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress draws a one-line bar on a terminal (steps, loss, running
// accuracy, img/s, ETA) and prints plain lines every ~10% elsewhere, so logs
// of CI runs stay readable. The first step always gets a line: it includes
// compiling the step, and shows that training has started.
type progress struct {
	w           io.Writer
	tty         bool
	total       int
	start, last time.Time
	images      int
	loss, acc   float64 // exponential moving averages
	n           int
	nextLine    int
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now(), nextLine: 1}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(step int, loss, acc float64, batch int) {
	if p.w == nil {
		return
	}
	p.n++
	p.images += batch
	const k = 0.1
	if p.n == 1 {
		p.loss, p.acc = loss, acc
	} else {
		p.loss, p.acc = (1-k)*p.loss+k*loss, (1-k)*p.acc+k*acc
	}
	elapsed := time.Since(p.start).Seconds()
	rate := float64(p.images) / elapsed
	eta := time.Duration(float64(p.total-step)*float64(batch)/rate) * time.Second
	line := fmt.Sprintf("step %d/%d  loss %.4f  acc %.3f  %.0f img/s  ETA %s", step, p.total, p.loss, p.acc, rate, eta.Round(time.Second))
	switch {
	case p.tty && (time.Since(p.last) > 200*time.Millisecond || step == p.total):
		width := 24
		filled := width * step / p.total
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = '-'
			if i < filled {
				bar[i] = '='
			}
		}
		fmt.Fprintf(p.w, "\r[%s] %s\x1b[K", bar, line)
		p.last = time.Now()
	case !p.tty && (step >= p.nextLine || step == p.total):
		fmt.Fprintln(p.w, line)
		p.nextLine = step + max(1, p.total/10)
	}
}

func (p *progress) done() {
	if p.w != nil && p.tty {
		fmt.Fprintln(p.w)
	}
}
