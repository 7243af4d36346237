package logstore

// Truncation: dropping the records at and above an offset, so that the
// log ends there and later appends give those offsets out again. A replica
// that rejoins its group truncates its log to where its latest leader
// epoch ended on the leader (KIP-101; epochs.go), dropping records that
// were never committed, and then copies the leader's records in their
// place (AppendAt).
//
// # Steps
//
// TruncateTo(T), the writer lock held throughout, segment k being the one
// that holds T (base B ≤ T) and segments k+1.. the newer ones:
//
//  1. Make the records to keep durable: the active segment committed (so
//     that no segment is left under a prepared name) and, when it is
//     segment k, synced; sealed segments up to k synced if they were
//     sealed under SyncNone without a sync.
//  2. Copy the records B..T-1 of segment k into a new segment under the
//     names .truncate.log and .truncate.idx: preallocated, headers, the
//     records copied byte for byte, their index entries, both synced.
//  3. Write the intent (below) to .truncate.tmp, fdatasync it, rename it
//     to .truncate and sync the directory. From here on the truncation
//     is decided: recovery finishes it.
//  4. Delete the segments above segment k, newest first (.log, then .idx).
//  5. Rename .truncate.idx and then .truncate.log over segment k's files.
//  6. Sync the directory; delete the intent; sync the directory again, so
//     that no record appended after the truncation is called durable
//     while an intent that would drop it is still on disk.
//  7. Publish: the dropped segments are marked and released, the new one
//     is the active segment, the end offset and the durable offset are T.
//
// A failure before step 3 deletes the new files and changes nothing. A
// failure after it leaves the log as it was in memory, refusing appends
// as after a failed sync, and the next open finishes the truncation.
//
// Segment k is copied rather than cut in place because readers read the
// mappings without a lock: a reader in the middle of a record that is
// being dropped keeps the old file's mapping, whose bytes never change,
// as a reader of a segment that retention deleted does.
//
// # Recovery (step 0 of recoverSegments)
//
// Before anything else, opening a log looks for .truncate. With it, T is
// read from it, and: the other .truncate.* files and any prepared
// segment are deleted; the segment holding T (the one with the greatest
// base at or below T) is opened and its header and first T-B records
// checked, before anything is deleted; every segment whose base is above
// T is deleted, newest first; the segment holding T is cut after its
// first T-B records, in place (nothing reads it yet): zeros from there to
// its last byte that is not zero, fdatasynced (its index is rewritten to
// match by step 4, as any newest index is); the directory is synced and
// the intent deleted, the directory synced again. Each of these can be
// interrupted and run again. Without .truncate, files of a truncation
// that never wrote its intent are deleted: the log is as it was.
//
// No state a truncation passes through reaches the later steps, which
// would take some of them for corruption (a segment cut while newer ones
// remain is a gap; records after zeros are a bad record followed by a
// valid one).
//
// # Intent file (.truncate)
//
// 32 bytes, the layout of a segment file's header (format.go) with its
// own magic; the base offset field holds T:
//
//	 0               8       10      12              16                              24      28      32
//	+---------------+-------+-------+---------------+-------------------------------+-------+-------+
//	| magic (8)     | vers. | zero  | zero (4)      | target offset (uint64)        | zero  | crc32c|
//	+---------------+-------+-------+---------------+-------------------------------+-------+-------+
//
//	magic          "VOIKTRN\n"
//	vers.          uint16 format version, currently 1
//	target offset  the offset the log is being truncated to: its end offset after
//	crc32c         checksum of bytes 0..28
//
// An intent that fails its checks is never guessed at: the log is not
// opened (the error says why), and nothing is changed.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
)

// ErrTruncateBelowFirst: a truncation to an offset below the log's first
// offset, whose records are gone already (retention deleted them); the
// log is unchanged.
var ErrTruncateBelowFirst = errors.New("logstore: truncation below the first offset")

var truncateMagic = [8]byte{'V', 'O', 'I', 'K', 'T', 'R', 'N', '\n'}

// The files of a truncation in a log's directory.
const (
	truncateIntentName = ".truncate"     // the intent: the truncation is decided
	truncateTempName   = ".truncate.tmp" // the intent being written
	truncateLogName    = ".truncate.log" // the copy of the segment holding the target
	truncateIndexName  = ".truncate.idx"
)

// encodeTruncateIntent is the content of a .truncate file for target.
func encodeTruncateIntent(target uint64) []byte {
	b := make([]byte, fileHeaderSize)
	encodeFileHeader(b, truncateMagic, target)
	return b
}

// decodeTruncateIntent checks a .truncate file and returns its target.
func decodeTruncateIntent(b []byte) (uint64, error) {
	if len(b) != fileHeaderSize {
		return 0, fmt.Errorf("truncation intent: %d bytes, want %d", len(b), fileHeaderSize)
	}
	target, err := decodeFileHeader(b, truncateMagic)
	if err != nil {
		return 0, fmt.Errorf("truncation intent: %w", err)
	}
	return target, nil
}

// TruncateTo drops every record at or above offset: the log ends at
// offset, and the next append gets offset again. It returns how many
// records it dropped. An offset at or past the end drops nothing; one
// below the first offset is ErrTruncateBelowFirst, and changes nothing.
// A closed log is ErrClosed; a log that refuses appends (corruption found
// when it was opened, a failed sync) is not truncated either, and the
// error says why.
//
// When it returns nil, the truncation and every record below offset are
// durable: DurableOffset is offset. A kill or a power cut at any moment
// leaves the log, once reopened, as it was before or as it is after,
// never anything between. Once its intent is on disk, a truncation cut
// short (by a crash, or by an error TruncateTo returns, wrapping
// ErrSyncFailed) is finished by the next open of the log, not by calling
// TruncateTo again: until then the log refuses appends, as after a
// failed sync. truncate.go lists the steps.
//
// Readers never wait for a truncation. One in the middle of a segment
// that it drops or replaces finishes reading that segment from its
// mapping, as from a segment that retention deleted, and a Scan stops at
// the end of such a segment, so that one Scan returns records of the log
// before the truncation or of the log after it, never of both. Between
// reads, the records at offset and above change: a reader that must never
// see that reads only below an offset that is never truncated (a
// replica's high watermark).
//
// Waiters see the end offset and DurableOffset go down to offset. WaitFor
// on an offset at or above it waits for the record appended there next.
// WaitDurable on such an offset returns a *RangeError until a record is
// appended there, and then waits for that record: a caller that appended
// at an offset before it was dropped must not take that for its own.
// Appends are not interleaved with a truncation (both hold the writer
// lock); one that returned before it may be dropped by it.
//
// It costs a copy of the records of the segment holding offset that come
// before it (at most Options.SegmentBytes), a few fdatasyncs and
// directory syncs.
func (l *Log) TruncateTo(offset uint64) (dropped uint64, err error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	end := l.endOffset.Load()
	if offset >= end {
		return 0, nil
	}
	if first := l.firstOffset.Load(); offset < first {
		return 0, fmt.Errorf("%w: offset %d, the log starts at %d", ErrTruncateBelowFirst, offset, first)
	}
	if err := l.appendableLocked(); err != nil {
		return 0, err
	}
	segments := *l.segments.Load()
	k := sort.Search(len(segments), func(i int) bool { return segments[i].baseOffset > offset }) - 1
	if k < 0 { // the first offset is the first segment's base: not reached
		return 0, fmt.Errorf("%w: offset %d, the log's first segment starts at %d", ErrTruncateBelowFirst, offset, segments[0].baseOffset)
	}
	if err := l.syncKeptLocked(segments[:k+1]); err != nil { // step 1
		return 0, err
	}
	holder := segments[k]
	replacement, err := l.copyKeptRecords(holder, offset-holder.baseOffset) // step 2
	if err != nil {
		return 0, err
	}
	decided, err := l.replaceFiles(segments[k:], replacement, offset) // steps 3 to 6
	if err != nil {
		if !decided {
			replacement.discard()
			return 0, err
		}
		// The files are left for recovery, at whatever names they have.
		replacement.closeFiles()
		err = fmt.Errorf("%w: truncation to offset %d cut short; the log refuses appends until it is reopened, which finishes it: %w", ErrSyncFailed, offset, err)
		l.failSync(err)
		return 0, err
	}
	l.publishTruncationLocked(segments, k, replacement, offset) // step 7
	l.opts.Logger.Debug("logstore: truncated", "subject", l.subject, "offset", offset, "dropped", end-offset)
	return end - offset, nil
}

// syncKeptLocked is step 1: the records the truncation keeps are made
// durable, so that recovery, which cuts the old files in place, finds
// them whole. The active segment is committed first whatever happens to
// it, so that no segment of the log is left under a prepared name (a
// rotation's commit would otherwise race with the deletion of its files).
// kept ends with the segment holding the target. The caller holds
// writeMu.
func (l *Log) syncKeptLocked(kept []*segment) error {
	committed, err := l.commit(l.active) // syncs it, if it was not committed
	if err != nil {
		return err // failSync has recorded it
	}
	for _, seg := range kept {
		switch {
		case seg == l.active && committed:
		case seg == l.active:
			if err := l.syncSegment(seg); err != nil {
				return err
			}
		case seg.unsynced:
			if err := l.syncUnsyncedLocked(seg); err != nil {
				return err
			}
		}
	}
	return nil
}

// keptRecords walks the first keep records of seg, each verified, and
// returns their index entries and where they end. A record that is not
// valid is a *CorruptionError; a memory fault on the mapping is ErrFault.
func (seg *segment) keptRecords(keep uint64) (entries []indexEntry, end int64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guardFault(seg, &err)
	bytes := seg.logBytes()
	end = fileHeaderSize
	// keep may come from an intent on disk: allocate by what the segment can hold.
	entries = make([]indexEntry, 0, min(keep, uint64(len(bytes))/recordHeaderSize))
	for i := uint64(0); i < keep; i++ {
		view, status, reason := decodeRecord(bytes[end:])
		if status == decodeOK && view.Offset != seg.baseOffset+i {
			status, reason = decodeBad, fmt.Sprintf("record holds offset %d", view.Offset)
		}
		if status != decodeOK {
			if status == decodeEnd {
				reason = "record missing"
			}
			return nil, 0, &CorruptionError{Path: seg.logPath(), Position: end, Offset: seg.baseOffset + i, Reason: reason}
		}
		entries = append(entries, entryOf(end, view))
		end += int64(view.size)
	}
	return entries, end, nil
}

// copyKeptRecords is step 2: a new segment at seg's base, under the
// truncation's temporary names, holding seg's first keep records byte for
// byte and their index entries, both files synced. It is writable, mapped
// as a newest segment is, and unpublished.
func (l *Log) copyKeptRecords(seg *segment, keep uint64) (*segment, error) {
	entries, end, err := seg.keptRecords(keep)
	if err != nil {
		return nil, err
	}
	paths := segmentPaths{log: filepath.Join(l.dir, truncateLogName), index: filepath.Join(l.dir, truncateIndexName)}
	if _, err := removeFiles(paths.log, paths.index); err != nil { // left by an attempt that failed
		return nil, fmt.Errorf("logstore: remove %s: %w", paths.log, err)
	}
	s, err := openSegment(paths, seg.baseOffset, segmentCreate, l.opts)
	if err != nil {
		return nil, err
	}
	logSize := max(roundUpPage(end), min(roundUpPage(l.opts.InitialSegmentBytes), roundUpPage(l.opts.SegmentBytes)))
	indexSize := max(pageSize, roundUpPage(int64(fileHeaderSize+(keep+1)*indexEntrySize)))
	err = s.grow(s.logFile, 0, logSize, "truncating segment")
	if err == nil {
		s.logAllocated.Store(logSize)
		err = s.grow(s.indexFile, 0, indexSize, "truncating segment")
	}
	if err == nil {
		s.indexAllocated.Store(indexSize)
		err = s.mapWritable(roundUpPage(l.opts.SegmentBytes))
	}
	if err == nil {
		s.start(seg.baseOffset)
		err = s.copyRecordsFrom(seg, end)
	}
	if err != nil {
		s.discard()
		return nil, err
	}
	var payload int64
	for i, e := range entries {
		s.putIndexEntry(uint64(i), e)
		payload += int64(e.size)
	}
	s.writePos = end
	s.count.Store(keep)
	s.payloadBytes.Store(payload)
	if keep > 0 {
		s.firstTimestamp.Store(entries[0].timestamp)
		s.lastTimestamp.Store(entries[keep-1].timestamp)
	}
	err = timedSync(s.logFile, paths.log, s.faults, s.observer)
	s.syncGen.Add(1)
	if err == nil {
		err = s.faults.doSync(s.indexFile, paths.index)
	}
	if err != nil {
		// The log's own files are as they were: nothing sticks.
		err = fmt.Errorf("logstore: truncation: sync the copy of %s: %w", seg.logPath(), err)
	}
	if err != nil {
		s.discard()
		return nil, err
	}
	return s, nil
}

// copyRecordsFrom writes the records of from, up to byte end, after the
// header of s, with pwrite from from's mapping (a fault there is EFAULT,
// an error, not a signal).
func (s *segment) copyRecordsFrom(from *segment, end int64) error {
	if end <= fileHeaderSize {
		return nil
	}
	if _, err := s.logFile.WriteAt(from.logBytes()[fileHeaderSize:end], fileHeaderSize); err != nil {
		return fmt.Errorf("logstore: write %s: %w", s.logPath(), err)
	}
	return nil
}

// replaceFiles runs steps 3 to 6 on disk: the intent, the deletion of the
// segments after drop[0] (newest first), the replacement of drop[0] by
// replacement, and the intent's removal. drop is the segment holding
// target and every newer one. decided says whether the intent may be on
// disk: then, on an error, recovery has to finish the truncation, and
// nothing may be deleted to undo it.
func (l *Log) replaceFiles(drop []*segment, replacement *segment, target uint64) (decided bool, err error) {
	faults := l.opts.faults
	intent := filepath.Join(l.dir, truncateIntentName)
	temp := filepath.Join(l.dir, truncateTempName)
	if err := writeIntent(temp, encodeTruncateIntent(target), faults); err != nil {
		os.Remove(temp)
		return false, err
	}
	if err := faults.doRename(temp, intent); err != nil {
		os.Remove(temp)
		return false, fmt.Errorf("logstore: name truncation intent: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		return true, err
	}
	for _, seg := range slices.Backward(drop[1:]) {
		paths := seg.paths.Load()
		if err := removeFile(paths.log, faults); err != nil {
			return true, err
		}
		if err := removeFile(paths.index, faults); err != nil {
			return true, err
		}
	}
	final := pathsIn(l.dir, replacement.baseOffset)
	// The index first, as a rotation's commit does: a .log of the old
	// segment beside the new index is cut by recovery all the same.
	if err := faults.doRename(replacement.indexPath(), final.index); err != nil {
		return true, fmt.Errorf("logstore: name truncated index: %w", err)
	}
	replacement.paths.Store(&segmentPaths{log: replacement.logPath(), index: final.index})
	if err := faults.doRename(replacement.logPath(), final.log); err != nil {
		return true, fmt.Errorf("logstore: name truncated segment: %w", err)
	}
	replacement.paths.Store(&final)
	if err := syncDir(l.dir); err != nil {
		return true, err
	}
	if err := removeFile(intent, faults); err != nil {
		return true, err
	}
	return true, syncDir(l.dir)
}

// writeIntent writes a truncation intent to path and fdatasyncs it.
func writeIntent(path string, content []byte, faults *faultHooks) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("logstore: create %s: %w", path, err)
	}
	_, err = f.Write(content)
	if err == nil {
		if err = faults.doSync(f, path); err != nil {
			err = fmt.Errorf("logstore: sync %s: %w", path, err)
		}
	}
	if closeErr := f.Close(); err == nil && closeErr != nil {
		err = fmt.Errorf("logstore: write %s: %w", path, closeErr)
	}
	return err
}

// removeFile removes path, which the path hook can fail ("remove"); a
// file already gone is not an error.
func removeFile(path string, faults *faultHooks) error {
	err := faults.fail("remove", path)
	if err == nil {
		err = os.Remove(path)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: truncation: %w", err)
	}
	return nil
}

// publishTruncationLocked is step 7: readers and the writer see the log
// end at target, replacement (the new segments[k]) being the active
// segment. The dropped segments are marked before the new list is
// published, which Scan relies on, and released: their mappings stay
// until their last reader is done. The caller holds writeMu.
func (l *Log) publishTruncationLocked(segments []*segment, k int, replacement *segment, target uint64) {
	for _, seg := range segments[k:] {
		seg.dropped.Store(true)
	}
	replacement.committed.Store(true)
	kept := append(slices.Clone(segments[:k]), replacement)
	l.segments.Store(&kept)
	l.active = replacement
	switch {
	case replacement.count.Load() > 0:
		l.lastTimestamp = replacement.lastTimestamp.Load()
	case k > 0:
		l.lastTimestamp = segments[k-1].lastTimestamp.Load()
	default:
		l.lastTimestamp = 0
	}
	l.endOffset.Store(target)
	// Every record below target is durable (step 1 and the copy), and no
	// sync in flight can raise this again (syncOnce).
	l.durable.Store(target)
	for _, seg := range segments[k:] {
		l.opts.Observer.DiskBytes(-(seg.logAllocated.Load() + seg.indexAllocated.Load()))
		seg.release()
	}
	l.broadcast(&l.synced)
}

// finishTruncation is step 0 of recoverSegments: a truncation whose intent
// is on disk is finished; the files of one that never wrote its intent
// are deleted. truncate.go describes it.
func finishTruncation(dir string, opts *Options) error {
	intent := filepath.Join(dir, truncateIntentName)
	temps := []string{
		filepath.Join(dir, truncateTempName),
		filepath.Join(dir, truncateLogName),
		filepath.Join(dir, truncateIndexName),
	}
	content, err := os.ReadFile(intent)
	if errors.Is(err, os.ErrNotExist) {
		if freed, err := removeFiles(temps...); err != nil {
			return fmt.Errorf("logstore: remove files of a truncation that did not begin: %w", err)
		} else if freed > 0 {
			opts.Logger.Warn("logstore: removed the files of a truncation that never wrote its intent", "dir", dir)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("logstore: read truncation intent: %w", err)
	}
	target, err := decodeTruncateIntent(content)
	if err != nil {
		return fmt.Errorf("logstore: %s: %w; the log is left as it is", intent, err)
	}
	opts.Logger.Warn("logstore: finishing a truncation that was cut short", "dir", dir, "offset", target)
	if _, err := removeFiles(temps...); err != nil {
		return fmt.Errorf("logstore: remove files of a truncation: %w", err)
	}
	// A prepared segment holds nothing the truncation keeps: TruncateTo
	// commits the active segment before it writes the intent, so none was
	// swapped in.
	if _, err := removeFiles(filepath.Join(dir, preparedLogName), filepath.Join(dir, preparedIndexName)); err != nil {
		return fmt.Errorf("logstore: remove prepared segment: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("logstore: list segments: %w", err)
	}
	var bases []uint64
	for _, e := range entries {
		if base, ext, ok := parseSegmentName(e.Name()); ok && ext == ".log" {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	// The segment holding target: the one with the greatest base at or
	// below it. Its records before target are checked before anything is
	// deleted, so that an intent that does not fit the log changes nothing.
	i := sort.Search(len(bases), func(i int) bool { return bases[i] > target }) - 1
	if i < 0 {
		return fmt.Errorf("logstore: %s: truncation to offset %d, but no segment holds it; the log is left as it is", intent, target)
	}
	holder, end, err := openHolder(dir, bases[i], target, opts)
	if err != nil {
		return err
	}
	defer holder.closeFiles()
	for _, base := range slices.Backward(bases[i+1:]) {
		paths := pathsIn(dir, base)
		if _, err := removeFiles(paths.log, paths.index); err != nil {
			return fmt.Errorf("logstore: truncation: remove segment: %w", err)
		}
	}
	tail := holder.logBytes()[end:]
	if cut := lastNonZero(tail) + 1; cut > 0 {
		clear(tail[:cut])
		if err := holder.syncData(); err != nil {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Remove(intent); err != nil {
		return fmt.Errorf("logstore: remove truncation intent: %w", err)
	}
	return syncDir(dir)
}

// openHolder opens the segment at base, which holds target, read-write
// and mapped, and checks its header and its records before target (they
// were synced before the intent was written). It returns the segment and
// where those records end.
func openHolder(dir string, base, target uint64, opts *Options) (*segment, int64, error) {
	s, err := openSegment(pathsIn(dir, base), base, segmentWritable, opts)
	if err != nil {
		return nil, 0, err
	}
	if s.logAllocated.Load() < fileHeaderSize {
		s.closeFiles()
		return nil, 0, fmt.Errorf("logstore: truncation to offset %d: %s is shorter than its header; the log is left as it is", target, s.logPath())
	}
	err = s.mapWritable(0)
	if err == nil {
		err = s.checkLogHeader()
	}
	var end int64
	if err == nil {
		_, end, err = s.keptRecords(target - base)
	}
	if err != nil {
		s.closeFiles()
		return nil, 0, fmt.Errorf("logstore: truncation to offset %d: %w; the log is left as it is", target, err)
	}
	return s, end, nil
}

// TruncateTo truncates the log of subject to offset, holding it open
// meanwhile (Log.TruncateTo says what that means), and returns how many
// records it dropped. A subject with no log is ErrNotFound. A log
// truncated to its first offset is empty, and keeps its place: its next
// record gets that offset.
func (s *Store) TruncateTo(subject string, offset uint64) (dropped uint64, err error) {
	err = s.View(subject, func(l *Log) error {
		dropped, err = l.TruncateTo(offset)
		return err
	})
	return dropped, err
}
