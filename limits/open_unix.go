//go:build unix

package limits

import "syscall"

// openNoBlock keeps open(2) from waiting for a writer if the path turns out
// to be a FIFO; it changes nothing for regular files.
const openNoBlock = syscall.O_NONBLOCK
