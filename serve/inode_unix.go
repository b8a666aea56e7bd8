//go:build unix

package serve

import (
	"os"
	"syscall"
)

// inode identifies a file beyond its name: a directory replaced by a
// rename (how adapters are saved) has a new one.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
