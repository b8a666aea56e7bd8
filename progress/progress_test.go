package progress

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestLineOffTerminal(t *testing.T) {
	tests := []struct {
		name         string
		start, total int64
		every        int64
		steps, by    int64
		want         int // lines, Finish included
	}{
		{"a line per tenth", 0, 100, 0, 100, 1, 10},
		{"resumed halfway", 50, 100, 0, 50, 1, 5},
		{"coarse steps", 0, 100, 0, 4, 25, 4},
		{"unknown total", 0, -1, 10, 35, 1, 4}, // at 10, 20, 30, and Finish at 35
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := New(&buf)
			l.Every = tc.every
			l.Start(tc.start, tc.total)
			done := tc.start
			text := func() string { return fmt.Sprint(done) }
			for range tc.steps {
				done += tc.by
				l.Update(done, tc.total, text)
			}
			l.Finish(done, text)
			out := buf.String()
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != tc.want || strings.ContainsAny(out, "\r\x1b") {
				t.Fatalf("want %d plain lines, got %d: %q", tc.want, len(lines), out)
			}
			if last := lines[len(lines)-1]; last != fmt.Sprint(done) {
				t.Errorf("last line %q, want the final state %d", last, done)
			}
		})
	}
}

func TestLineTerminal(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	l := NewTerminal(&buf)
	l.Now = func() time.Time { return clock }
	calls := 0
	text := func() string { calls++; return fmt.Sprint("at ", calls) }
	for i := range int64(10) {
		clock = clock.Add(Throttle / 2) // every other update is due
		l.Update(i+1, 100, text)
	}
	l.Note("hello")
	l.Update(100, 100, text) // done: drawn whatever the clock
	l.End()
	want := "\rat 1\x1b[K\rat 2\x1b[K\rat 3\x1b[K\rat 4\x1b[K\rat 5\x1b[K\nhello\n\rat 6\x1b[K\n"
	if got := buf.String(); got != want {
		t.Errorf("terminal output\n got %q\nwant %q", got, want)
	}
}

func TestNilLine(t *testing.T) {
	l := New(nil) // every method is a no-op
	l.Start(0, 1)
	l.Update(1, 1, func() string { t.Fatal("text called on a nil Line"); return "" })
	l.Note("x")
	l.Finish(1, nil)
	if l.Terminal() {
		t.Error("a nil Line is no terminal")
	}
}
