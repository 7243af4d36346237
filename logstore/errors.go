package logstore

import (
	"errors"
	"fmt"
)

// Errors a caller can act on. Every error the package returns either is one
// of these or wraps one (test with errors.Is), with context in its message.
var (
	// ErrClosed: the log or store was closed.
	ErrClosed = errors.New("logstore: closed")

	// ErrNotFound: the subject has no log (nothing was ever stored for it).
	ErrNotFound = errors.New("logstore: no log for subject")

	// ErrOutOfRange: an offset below the first offset held or above the end
	// offset. The error is a *RangeError that carries both bounds.
	ErrOutOfRange = errors.New("logstore: offset out of range")

	// ErrRecordTooLarge: a record that cannot fit in one segment. Appending
	// it again will fail again; the log is unchanged.
	ErrRecordTooLarge = errors.New("logstore: record too large")

	// ErrNoSpace: the disk, a quota or the file size limit (ENOSPC, EDQUOT,
	// EFBIG) refused the space to grow a segment, to create one, or to
	// create a new subject's log directory; the message says which. The
	// record was not stored; reads keep working and a later append may
	// succeed once space is freed.
	ErrNoSpace = errors.New("logstore: no space left on device")

	// ErrSyncFailed: an fsync of the log failed. Data the kernel could not
	// write may be lost without a trace, so the failure is sticky: the log
	// takes no more appends and confirms no more durability until it is
	// reopened. Reopening recovers what the files hold and syncs it again
	// before calling any of it durable; records that were never confirmed
	// durable may be missing from it.
	ErrSyncFailed = errors.New("logstore: sync failed")

	// ErrCorrupt: a record or file that fails its checks where a valid one
	// must be. The error is a *CorruptionError that says where. A log opened
	// with corruption keeps the records before it readable and refuses
	// appends with ErrCorrupt; nothing is truncated without being asked.
	ErrCorrupt = errors.New("logstore: corrupt")

	// ErrFault: reading a mapping faulted, because the file was truncated
	// or the device failed underneath it.
	ErrFault = errors.New("logstore: memory fault reading segment")

	// ErrInvalidSubject: an empty subject or one with a NUL byte.
	ErrInvalidSubject = errors.New("logstore: invalid subject")

	// ErrInvalidOptions: options out of their range.
	ErrInvalidOptions = errors.New("logstore: invalid options")

	// ErrNotAtEnd: an exact append (AppendAt) at an offset other than the
	// log's end offset, where the copy would leave a gap or overwrite. The
	// error is an *EndError that carries both; nothing was stored.
	ErrNotAtEnd = errors.New("logstore: exact append not at the end of the log")

	// ErrTimestampOrder: an exact append of a record whose timestamp is
	// not above zero or is below the record's before it. A copy keeps its
	// source's timestamps, which never decrease, so such a record is not a
	// copy of one; it and the records after it were not stored.
	ErrTimestampOrder = errors.New("logstore: timestamp out of order")
)

// RangeError is returned for an offset outside [First, End].
type RangeError struct {
	Offset, First, End uint64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("logstore: offset %d out of range: first offset %d, end offset %d", e.Offset, e.First, e.End)
}

// Is makes errors.Is(err, ErrOutOfRange) true.
func (e *RangeError) Is(target error) bool { return target == ErrOutOfRange }

// CorruptionError says where a log is corrupt and why.
type CorruptionError struct {
	Path     string // the file
	Position int64  // byte position in the file
	Offset   uint64 // the offset expected there
	Reason   string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("logstore: corrupt %s at byte %d (offset %d): %s", e.Path, e.Position, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// EndError is an exact append at Offset to a log whose end offset is End.
type EndError struct {
	Offset, End uint64
}

func (e *EndError) Error() string {
	return fmt.Sprintf("logstore: exact append at offset %d, but the log ends at %d", e.Offset, e.End)
}

// Is makes errors.Is(err, ErrNotAtEnd) true.
func (e *EndError) Is(target error) bool { return target == ErrNotAtEnd }
