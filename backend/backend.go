// Package backend picks the GoMLX compute backend. The pure-Go backend is the
// default because it needs nothing installed; GoMLX's own default would try to
// download an XLA plugin, which panics on an offline machine. Users with an
// XLA/PJRT install choose it by name (build with `-tags xla`).
package backend

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // registers "go"
)

// Default is used when neither --backend nor $GOMLX_BACKEND say otherwise.
const Default = "go"

// Resolve returns the configuration to use: the flag if set, then
// $GOMLX_BACKEND, then Default.
func Resolve(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(compute.ConfigEnvVar); env != "" {
		return env
	}
	return Default
}

// New creates the backend named by config ("go", "xla:cpu", "xla:cuda", …),
// with an error, not a panic, when that backend is not compiled in.
func New(config string) (b compute.Backend, err error) {
	name, _, _ := strings.Cut(config, ":")
	known := compute.List()
	if !slices.Contains(known, name) {
		hint := ""
		if name == "xla" {
			hint = " (rebuild with `go build -tags xla` and install the PJRT plugin)"
		}
		slices.Sort(known)
		return nil, fmt.Errorf("backend %q is not compiled into this binary%s; available: %s", config, hint, strings.Join(known, ", "))
	}
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("backend %q: %v", config, r)
		}
	}()
	return compute.NewWithConfig(config)
}
