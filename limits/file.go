package limits

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular marks a path that is not a regular file (a directory,
// device, FIFO or socket). Reading one would fail late, read forever
// (/dev/zero) or block (a FIFO with no writer).
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens path for reading if it is a regular file (symlinks
// followed), and refuses anything else at once, without blocking: the type
// is checked with os.Stat before opening, and the open itself does not
// block even if the path was swapped for a FIFO in between (the opened file
// is checked again). The FileInfo is the opened file's.
func OpenRegular(path string) (*os.File, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openNoBlock, 0)
	if err != nil {
		return nil, nil, err
	}
	ofi, err := f.Stat()
	if err == nil {
		err = regular(path, ofi)
	}
	if err == nil && !os.SameFile(fi, ofi) {
		err = fmt.Errorf("%s: changed while being opened", path)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, ofi, nil
}

// regular explains, naming path, why fi is not a regular file.
func regular(path string, fi os.FileInfo) error {
	m := fi.Mode()
	kind := "of type " + m.Type().String()
	switch {
	case m.IsRegular():
		return nil
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeCharDevice != 0:
		kind = "a character device"
	case m&fs.ModeDevice != 0:
		kind = "a block device"
	}
	return &notRegularError{path, kind}
}

type notRegularError struct{ path, kind string }

func (e *notRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file", e.path, e.kind)
}

func (e *notRegularError) Is(target error) bool { return target == ErrNotRegular }

// ReadFile reads a whole regular file whose size must be within l (for
// example ConfigBytes for adapter_config.json). The size is checked before
// reading, and at most l's maximum plus one byte is ever read, so a file
// that grows meanwhile cannot get past it either.
func ReadFile(path string, l *Limit) ([]byte, error) {
	max, err := l.Max()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, fi, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := l.Check(fi.Size()); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := l.Check(int64(len(b))); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
