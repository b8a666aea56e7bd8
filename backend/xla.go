//go:build xla

package backend

// With `-tags xla` the XLA/PJRT backend is compiled in; it needs a PJRT plugin
// installed on the machine (see GoMLX's documentation).
import _ "github.com/gomlx/go-xla/compute/xla"
