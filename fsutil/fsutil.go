// Package fsutil writes files and directories so that they appear whole or
// not at all: a crash, a full disk or an error never leaves a partial
// adapter, report or checkpoint where a reader (PEFT, a resumed run, a user)
// would take it for a finished one.
package fsutil

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// WriteFile writes path atomically: write fills a temporary file beside it,
// which is synced and renamed over path. On any error the temporary file is
// removed and an existing file at path is left untouched. An existing file's
// permissions are kept; a new file gets 0644.
func WriteFile(path string, write func(w io.Writer) error) (err error) {
	perm := os.FileMode(0o644)
	if fi, statErr := os.Stat(path); statErr == nil && fi.Mode().IsRegular() {
		perm = fi.Mode().Perm()
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+TempMark+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close() // may already be closed; the error is irrelevant then
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// WriteBytes is WriteFile of a byte slice.
func WriteBytes(path string, b []byte) error {
	return WriteFile(path, func(w io.Writer) error { _, err := w.Write(b); return err })
}

// WriteDir creates dir atomically: fill writes the contents into a
// temporary directory beside it, which then replaces dir (an existing one is
// moved aside first and removed after, or put back if the rename fails).
// Errors name dir first: the temporary names in them mean nothing to a user.
func WriteDir(dir string, fill func(tmp string) error) error {
	if err := writeDir(dir, fill); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	return nil
}

func writeDir(dir string, fill func(tmp string) error) error {
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+TempMark)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	if err := fill(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	var old string
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return err
	}
	syncDir(parent)
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

// TempMark is in the name of every temporary file and directory these
// functions create: what a killed write leaves behind, and Clean removes.
const TempMark = ".tmp-"

// Clean removes what killed writes left in dir (entries named
// .NAME.tmp-*), returning how many it removed.
func Clean(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if name := e.Name(); strings.HasPrefix(name, ".") && strings.Contains(name, TempMark) {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// syncDir makes a rename durable. It is best effort: some filesystems
// refuse to fsync a directory, and the data is already safe.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// WriteJSON writes v as indented JSON, atomically.
func WriteJSON(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return WriteBytes(path, append(raw, '\n'))
}
