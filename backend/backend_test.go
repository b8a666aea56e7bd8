package backend

import (
	"strings"
	"testing"
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
