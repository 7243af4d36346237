package logstore

// Dropping the front of a log to an offset another log chose: a replica
// deletes what its leader's retention deleted, so that both start at the
// same offset, and a replica that starts copying after the leader's
// retention deleted what it lacks jumps to where the leader's log starts.
//
// # Reset
//
// DropBefore(F) with F at or past the end drops every record and starts
// the log afresh at F, the writer lock held throughout:
//
//  1. The active segment is committed (no segment is left under a
//     prepared name).
//  2. The intent (below) is written to .reset.tmp, fdatasynced, renamed
//     to .reset and the directory synced. From here on the reset is
//     decided: recovery finishes it.
//  3. Every segment is deleted, oldest first (.log, then .idx).
//  4. An empty segment is made at F (createSegment: header synced,
//     directory synced).
//  5. The intent is deleted and the directory synced.
//  6. Publish: the old segments are marked deleted and released, the new
//     one is the active segment, first, end and durable offsets are F.
//
// Recovery (before a truncation's, in recoverSegments) finds .reset,
// deletes every segment and prepared segment left, makes the empty
// segment at F if it is not there whole, and deletes the intent. A .reset
// that fails its checks is never guessed at: the log is not opened.
//
// # Intent file (.reset)
//
// 32 bytes, laid out as a truncation's intent (truncate.go) with the
// magic "VOIKRST\n"; the offset field holds F.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

var resetMagic = [8]byte{'V', 'O', 'I', 'K', 'R', 'S', 'T', '\n'}

// The files of a reset in a log's directory.
const (
	resetIntentName = ".reset"
	resetTempName   = ".reset.tmp"
)

// DropBefore deletes the log's records below offset, as its leader's
// retention did, and returns how many segments it deleted. Below the end
// it deletes whole segments only, those that hold nothing at or above
// offset, so the first offset becomes the base of the segment holding
// offset: equal to offset when both logs cut their segments at the same
// offsets (the same segment size and records), at most one segment below
// it otherwise. At or past the end every record goes and the log starts
// again, empty, at offset (the next append gets it; a reset, see above).
// An offset at or below the first offset changes nothing. A closed log is
// ErrClosed; a log that refuses appends is not reset, and the error says
// why.
//
// It runs whatever Options.HoldRetention says: it is how a replica that
// holds its retention follows its leader's.
func (l *Log) DropBefore(offset uint64) (int, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	if offset <= l.firstOffset.Load() {
		return 0, nil
	}
	segments := *l.segments.Load()
	if offset < l.endOffset.Load() {
		drop := 0
		for drop < len(segments)-1 && segments[drop+1].baseOffset <= offset {
			drop++
		}
		if drop > 0 {
			l.dropFrontLocked(segments, drop)
		}
		return drop, nil
	}
	if err := l.appendableLocked(); err != nil {
		return 0, err
	}
	return len(segments), l.resetLocked(segments, offset)
}

// resetLocked runs steps 1 to 6 of a reset to offset. The caller holds
// writeMu.
func (l *Log) resetLocked(segments []*segment, offset uint64) error {
	if _, err := l.commit(l.active); err != nil { // step 1
		return err
	}
	faults := l.opts.faults
	intent := filepath.Join(l.dir, resetIntentName)
	temp := filepath.Join(l.dir, resetTempName)
	b := make([]byte, fileHeaderSize)
	encodeFileHeader(b, resetMagic, offset)
	if err := writeIntent(temp, b, faults); err != nil { // step 2
		os.Remove(temp)
		return err
	}
	if err := faults.doRename(temp, intent); err != nil {
		os.Remove(temp)
		return fmt.Errorf("logstore: name reset intent: %w", err)
	}
	fresh, err := l.replaceAll(segments, offset, intent) // steps 2 (sync) to 5
	if err != nil {
		err = fmt.Errorf("%w: reset to offset %d cut short; the log refuses appends until it is reopened, which finishes it: %w", ErrSyncFailed, offset, err)
		l.failSync(err)
		return err
	}
	for _, seg := range segments { // step 6
		seg.deleted.Store(true)
		l.opts.Observer.DiskBytes(-(seg.logAllocated.Load() + seg.indexAllocated.Load()))
		seg.release()
	}
	kept := []*segment{fresh}
	l.segments.Store(&kept)
	l.active = fresh
	l.firstOffset.Store(offset)
	l.endOffset.Store(offset)
	l.durable.Store(offset)
	l.broadcast(&l.synced)
	l.opts.Logger.Debug("logstore: reset", "subject", l.subject, "offset", offset)
	return nil
}

// replaceAll runs steps 3 to 5 once the intent is named: the old
// segments' files deleted, oldest first, the new segment made, the intent
// deleted.
func (l *Log) replaceAll(segments []*segment, offset uint64, intent string) (*segment, error) {
	if err := syncDir(l.dir); err != nil {
		return nil, err
	}
	for _, seg := range segments {
		paths := seg.paths.Load()
		if err := removeFile(paths.log, l.opts.faults); err != nil {
			return nil, err
		}
		if err := removeFile(paths.index, l.opts.faults); err != nil {
			return nil, err
		}
	}
	fresh, err := createSegment(l.dir, offset, l.opts)
	if err != nil {
		return nil, err
	}
	if err := removeFile(intent, l.opts.faults); err != nil {
		fresh.closeFiles()
		return nil, err
	}
	if err := syncDir(l.dir); err != nil {
		fresh.closeFiles()
		return nil, err
	}
	return fresh, nil
}

// finishReset is the first step of recoverSegments: a reset whose intent
// is on disk is finished (see above); a temporary intent is deleted.
func finishReset(dir string, opts *Options) error {
	intent := filepath.Join(dir, resetIntentName)
	content, err := os.ReadFile(intent)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Remove(filepath.Join(dir, resetTempName)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("logstore: remove an unfinished reset intent: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("logstore: read reset intent: %w", err)
	}
	if len(content) != fileHeaderSize {
		return fmt.Errorf("logstore: reset intent in %s: %d bytes, want %d", dir, len(content), fileHeaderSize)
	}
	offset, err := decodeFileHeader(content, resetMagic)
	if err != nil {
		return fmt.Errorf("logstore: reset intent in %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("logstore: list %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if _, _, ok := parseSegmentName(name); ok || name == preparedLogName || name == preparedIndexName {
			if err := removeFile(filepath.Join(dir, name), opts.faults); err != nil {
				return err
			}
		}
	}
	seg, err := createSegment(dir, offset, opts)
	if err != nil {
		return err
	}
	seg.closeFiles()
	if err := removeFile(intent, opts.faults); err != nil {
		return err
	}
	opts.Logger.Warn("logstore: finished a reset cut short", "dir", dir, "offset", offset)
	return syncDir(dir)
}

// DropBefore is Log.DropBefore on the log of subject. A subject without a
// log has nothing to drop: its first append at an offset (AppendAt) makes
// it start there.
func (s *Store) DropBefore(subject string, offset uint64) (int, error) {
	return s.dropBefore(subject, func(*Log) uint64 { return offset })
}

// dropBefore is Log.DropBefore on the log of subject, at the offset at
// picks for it; a subject without a log has nothing to drop.
func (s *Store) dropBefore(subject string, at func(*Log) uint64) (int, error) {
	deleted := 0
	err := s.View(subject, func(l *Log) error {
		var err error
		deleted, err = l.DropBefore(at(l))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return deleted, err
}

// SegmentBase is the base offset of the segment that holds offset: where
// DropBefore(offset) makes the log start. Below the first offset it is
// the first offset; at or past the end, the newest segment's base.
func (l *Log) SegmentBase(offset uint64) uint64 {
	segments := *l.segments.Load()
	base := l.firstOffset.Load()
	for _, seg := range segments {
		if seg.baseOffset > offset {
			break
		}
		base = max(base, seg.baseOffset)
	}
	return base
}

// DropSegmentsBefore deletes the whole segments of subject's log that
// hold nothing at or above offset, and returns how many it deleted: what a
// replica does once its group has agreed where a log starts. Unlike
// DropBefore it keeps the records of the newest segment whatever offset
// says (a replica that holds nothing that far copies on), and a log that
// is not open and has no such segment (its second segment, by the names
// of its files, starts past offset) is not opened: a member that applies
// every agreed start when it opens does not open every log for it.
func (s *Store) DropSegmentsBefore(subject string, offset uint64) (int, error) {
	s.mu.Lock()
	dir, known := s.subjects[subject]
	_, isOpen := s.open[subject]
	s.mu.Unlock()
	if !known {
		return 0, nil
	}
	if bases := segmentFileBases(dir); !isOpen && (len(bases) < 2 || bases[1] > offset) {
		return 0, nil
	}
	return s.dropBefore(subject, func(l *Log) uint64 { return min(offset, l.SegmentBase(l.EndOffset())) })
}
