package train

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lorafit/lorafit/progress"
)

// stepProgress is training's progress line: steps, loss, running accuracy,
// img/s and ETA, with a bar on a terminal. The first step always gets a
// line: it includes compiling the step, and shows that training started.
type stepProgress struct {
	line      *progress.Line
	total     int
	start     time.Time
	images    int
	loss, acc float64 // exponential moving averages
	n         int
}

func newProgress(w io.Writer, total int) *stepProgress {
	return &stepProgress{line: progress.New(w), total: total, start: time.Now()}
}

func (p *stepProgress) update(step int, loss, acc float64, batch int) {
	if p.line == nil {
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
	text := func() string {
		rate := float64(p.images) / time.Since(p.start).Seconds()
		eta := time.Duration(float64(p.total-step)*float64(batch)/rate) * time.Second
		line := fmt.Sprintf("step %d/%d  loss %.4f  acc %.3f  %.0f img/s  ETA %s", step, p.total, p.loss, p.acc, rate, eta.Round(time.Second))
		if !p.line.Terminal() {
			return line
		}
		const width = 24
		filled := width * step / p.total
		return "[" + strings.Repeat("=", filled) + strings.Repeat("-", width-filled) + "] " + line
	}
	if p.n == 1 {
		p.line.Start(int64(step), int64(p.total))
		p.line.Print(int64(step), text())
		return
	}
	p.line.Update(int64(step), int64(p.total), text)
}

func (p *stepProgress) done() { p.line.End() }
