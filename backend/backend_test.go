package backend

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	if _, err := New("go"); err != nil {
		t.Fatalf("go backend: %v", err)
	}
	for _, tc := range []struct{ config, want string }{
		{"xla:cuda", "-tags xla"},
		{"tpu", `backend "tpu" is not compiled into this binary`},
	} {
		if _, err := New(tc.config); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q) = %v, want an error mentioning %q", tc.config, err, tc.want)
		}
	}
}

func TestResolve(t *testing.T) {
	t.Setenv("GOMLX_BACKEND", "")
	if got := Resolve(""); got != Default {
		t.Errorf("Resolve(\"\") = %q, want %q", got, Default)
	}
	t.Setenv("GOMLX_BACKEND", "xla:cpu")
	if got := Resolve(""); got != "xla:cpu" {
		t.Errorf("with $GOMLX_BACKEND: %q", got)
	}
	if got := Resolve("go"); got != "go" {
		t.Errorf("the flag wins over the environment: got %q", got)
	}
}

// TestAtOnce: every call runs, never more than limit at a time, and the
// first error in index order is the one returned; at limit 1 the calls run
// in order and stop at the first error.
func TestAtOnce(t *testing.T) {
	for _, limit := range []int{1, 2, 3} {
		var mu sync.Mutex
		running, peak := 0, 0
		var ran []int
		err := AtOnce(7, limit, func(i int) error {
			mu.Lock()
			running++
			peak = max(peak, running)
			ran = append(ran, i)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			if i == 2 || i == 5 {
				return fmt.Errorf("part %d", i)
			}
			return nil
		})
		if err == nil || err.Error() != "part 2" {
			t.Errorf("limit %d: error %v, want part 2", limit, err)
		}
		if peak > limit {
			t.Errorf("limit %d: %d ran at once", limit, peak)
		}
		want := 7
		if limit == 1 {
			want = 3 // 0, 1, 2, then it stops
		}
		if len(ran) != want {
			t.Errorf("limit %d: ran %v, want %d calls", limit, ran, want)
		}
	}
}
