//go:build unix

package weights

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// lockPoll is how often a waiting Download retries the lock; polling lets
// the wait be cancelled, which a blocking flock could not.
const lockPoll = 50 * time.Millisecond

// lockFile takes an exclusive flock(2) on path, creating it, so that only
// one process (or goroutine) at a time downloads a given file into a
// cache. waiting is called once if another holder makes us wait. A lock
// left by a killed process is released by the kernel, so a stale lock file
// never blocks anyone. unlock removes the file while still holding it;
// whoever locked the removed file notices (it is no longer at path) and
// tries again. Filesystems without flock get no locking (unlock is a
// no-op), as before.
func lockFile(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	notified := false
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			held, serr := f.Stat()
			now, perr := os.Stat(path)
			if serr == nil && perr == nil && os.SameFile(held, now) {
				return func() { os.Remove(path); f.Close() }, nil
			}
			f.Close() // locked a file its holder had just removed
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
		case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
			f.Close()
			os.Remove(path)
			return func() {}, nil
		default:
			f.Close()
			return nil, err
		}
		f.Close()
		if !notified && waiting != nil {
			waiting()
			notified = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}
