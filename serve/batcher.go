package serve

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrOverloaded: the queue is full (503).
var ErrOverloaded = errors.New("server overloaded: too many requests queued")

// errClosed: the batcher stopped (shutdown).
var errClosed = errors.New("server shutting down")

// batcher coalesces the images of concurrent requests into batches of up
// to maxBatch, waiting at most wait after the oldest queued image, and runs
// them one at a time on the engine: while one batch runs, the next one
// gathers.
type batcher struct {
	engine   *Engine
	maxBatch int
	wait     time.Duration
	metrics  *metrics
	in       chan *job

	mu     sync.Mutex
	queued int // images waiting
	closed bool
	done   chan struct{}

	// gate, if set (tests), is called before each batch runs.
	gate func()
}

// job is one request's images, all for one model.
type job struct {
	ctx      context.Context // the request's: a job whose client left is dropped
	items    []Item
	enqueued time.Time
	next     int // first item not yet taken into a batch
	logits   [][]float32
	started  time.Time // when its first batch started
	stats    []Stats   // of every batch the job was part of
	err      error
	left     int // items not yet computed
	done     chan struct{}
}

// slice is the part of a job one batch computes.
type slice struct {
	job        *job
	start, end int
}

func newBatcher(e *Engine, maxBatch int, wait time.Duration, queue int, m *metrics) *batcher {
	b := &batcher{engine: e, maxBatch: maxBatch, wait: wait, metrics: m, in: make(chan *job, queue), done: make(chan struct{})}
	go b.loop()
	return b
}

// submit queues a job's items, refusing at once (ErrOverloaded) when the
// queue is full; wait then blocks until they are computed.
func (b *batcher) submit(ctx context.Context, items []Item) (*job, error) {
	j := &job{ctx: ctx, items: items, enqueued: time.Now(), logits: make([][]float32, len(items)), left: len(items), done: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	select {
	case b.in <- j:
		b.queued += len(items)
		return j, nil
	default:
		return nil, ErrOverloaded
	}
}

// wait blocks until the job's logits are computed, or its request's
// context ends (the client left; the logits, if computed, are dropped).
func (j *job) wait() ([][]float32, error) {
	select {
	case <-j.done:
		return j.logits, j.err
	case <-j.ctx.Done():
		return nil, j.ctx.Err()
	}
}

// close stops taking jobs; the queued ones still run. It returns once the
// loop has finished them.
func (b *batcher) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	<-b.done
}

func (b *batcher) queuedImages() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}

func (b *batcher) loop() {
	defer close(b.done)
	var carry *job // a job whose items did not all fit in the last batch
	for {
		first := carry
		if first == nil {
			var ok bool
			if first, ok = <-b.in; !ok {
				return
			}
		}
		carry = nil
		var parts []slice
		n := 0
		take := func(j *job) {
			if j.next == 0 && j.ctx.Err() != nil {
				// Its client has gone: nobody will read the logits.
				b.mu.Lock()
				b.queued -= len(j.items)
				b.mu.Unlock()
				j.err = j.ctx.Err()
				close(j.done)
				return
			}
			k := min(len(j.items)-j.next, b.maxBatch-n)
			parts = append(parts, slice{j, j.next, j.next + k})
			j.next += k
			n += k
			if j.next < len(j.items) {
				carry = j
			}
		}
		take(first)
		deadline := first.enqueued.Add(b.wait)
		open := true
	gather:
		for n < b.maxBatch && carry == nil && open {
			select {
			case j, ok := <-b.in:
				if !ok {
					open = false
					break gather
				}
				take(j)
				continue
			default:
			}
			d := time.Until(deadline)
			if d <= 0 {
				break
			}
			t := time.NewTimer(d)
			select {
			case j, ok := <-b.in:
				t.Stop()
				if !ok {
					open = false
					break gather
				}
				take(j)
			case <-t.C:
				break gather
			}
		}
		if n > 0 {
			b.run(parts, n)
		}
		// After close, the loop goes on until the channel is drained.
	}
}

// run computes one batch and hands each job its logits.
func (b *batcher) run(parts []slice, n int) {
	b.mu.Lock()
	b.queued -= n
	b.mu.Unlock()
	if b.gate != nil {
		b.gate()
	}
	items := make([]Item, 0, n)
	waited := make([]time.Duration, 0, len(parts))
	now := time.Now()
	for _, p := range parts {
		items = append(items, p.job.items[p.start:p.end]...)
		waited = append(waited, now.Sub(p.job.enqueued))
		if p.job.started.IsZero() {
			p.job.started = now
		}
	}
	logits, st, err := b.engine.Run(items)
	b.metrics.observeBatch(st, time.Since(now), waited)
	k := 0
	for _, p := range parts {
		j := p.job
		if err != nil {
			j.err = err
		} else {
			copy(j.logits[p.start:p.end], logits[k:k+p.end-p.start])
			j.stats = append(j.stats, st)
		}
		k += p.end - p.start
		j.left -= p.end - p.start
		if j.left == 0 {
			close(j.done)
		}
	}
}
