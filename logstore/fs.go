package logstore

// The file system calls of the package that tests need to fail or watch,
// and the helpers that make files and directory entries durable.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// faultHooks lets tests fail the next preallocation or sync, or a look at
// a path. Production code leaves it nil.
type faultHooks struct {
	preallocate func(f *os.File, offset, length int64) error
	// sync is called before each fdatasync of a segment file, with the
	// file's path; for a segment swapped in by a rotation and not yet
	// committed (rotation.go), the path it is being given.
	sync func(path string) error
	// path, when it returns an error, fails the call op ("lstat", "open",
	// "mkdir" or "rename") on path with it, as a failing or full disk
	// (EIO, ENOSPC) or a missing permission would; tests run as root,
	// which no permission stops. Only the calls that find logs (the
	// subject file, the listing of a log directory), make them, and give
	// a new subject's directory or a swapped-in segment its name consult
	// it.
	path func(op, path string) error
}

// fail returns the error the path hook injects for op on path, as the
// *fs.PathError the real call would return, or nil.
func (h *faultHooks) fail(op, path string) error {
	if h != nil && h.path != nil {
		if err := h.path(op, path); err != nil {
			return &fs.PathError{Op: op, Path: path, Err: err}
		}
	}
	return nil
}

// doLstat is os.Lstat, which the path hook can fail, for its error only.
func (h *faultHooks) doLstat(path string) error {
	if err := h.fail("lstat", path); err != nil {
		return err
	}
	_, err := os.Lstat(path)
	return err
}

// doRename is os.Rename, which the path hook can fail (on the old path).
func (h *faultHooks) doRename(from, to string) error {
	if err := h.fail("rename", from); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: errors.Unwrap(err)}
	}
	return os.Rename(from, to)
}

func (h *faultHooks) doPreallocate(f *os.File, offset, length int64) error {
	if h != nil && h.preallocate != nil {
		if err := h.preallocate(f, offset, length); err != nil {
			return err
		}
	}
	return preallocate(f, offset, length)
}

// doSync fdatasyncs f, whose path is path.
func (h *faultHooks) doSync(f *os.File, path string) error {
	if h != nil && h.sync != nil {
		if err := h.sync(path); err != nil {
			return err
		}
	}
	return unix.Fdatasync(int(f.Fd()))
}

// timedSync fdatasyncs f and tells the observer how long it took.
func timedSync(f *os.File, path string, faults *faultHooks, observer Observer) error {
	start := time.Now()
	err := faults.doSync(f, path)
	observer.Synced(time.Since(start), err)
	return err
}

// preallocate reserves real blocks for [offset, offset+length) and extends
// the file. A sparse ftruncate would defer the out-of-space error to a page
// fault (SIGBUS); fallocate reports it here, as an error.
func preallocate(f *os.File, offset, length int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, offset, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = writeZeros(f, offset, length)
	}
	if err != nil {
		return fmt.Errorf("preallocate %d bytes at %d: %w", length, offset, err)
	}
	return nil
}

// writeZeros is preallocation for file systems without fallocate.
func writeZeros(f *os.File, offset, length int64) error {
	zeros := make([]byte, min(length, 1<<16))
	for length > 0 {
		n := min(length, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:n], offset); err != nil {
			return err
		}
		offset += n
		length -= n
	}
	return nil
}

// syncDir makes a directory's entries (new, renamed or removed files) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("logstore: open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("logstore: sync dir %s: %w", dir, err)
	}
	return nil
}

// writeFileSync writes a whole file and fsyncs it.
func writeFileSync(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("logstore: create %s: %w", path, err)
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("logstore: write %s: %w", path, err)
	}
	return nil
}

func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("logstore: stat %s: %w", f.Name(), err)
	}
	return fi.Size(), nil
}

// removeFiles removes paths that exist and returns the bytes they took.
func removeFiles(paths ...string) (freed int64, err error) {
	for _, path := range paths {
		if fi, statErr := os.Stat(path); statErr == nil {
			freed += fi.Size()
		}
		if removeErr := os.Remove(path); removeErr != nil && !errors.Is(removeErr, os.ErrNotExist) {
			err = errors.Join(err, removeErr)
		}
	}
	return freed, err
}

// asNoSpace marks an error of a full disk, a quota or the file size limit,
// met while doing what, as ErrNoSpace, saying what failed: making a new log
// fails the way growing a segment does (a caller may retry once space is
// freed), and the message tells which. An error already marked is kept as
// it is; any other error is returned unchanged.
func asNoSpace(what string, err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("%w: %s: %w", ErrNoSpace, what, err)
	}
	return err
}
