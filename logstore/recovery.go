package logstore

// Recovery: how opening a log turns what is on disk into segments it can
// serve. The steps are written out on recoverSegments; doc.go sums them
// up, and docs/storage.md repeats them.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// recoverSegments opens every segment in dir, oldest first. It returns
// every segment and nil; or, when the log is corrupt, the segments before
// the corruption (all read-only) and a *CorruptionError that says where
// it starts; or no segment and any other error, when the log cannot be
// opened at all.
//
// The steps, in order (docs/storage.md repeats them):
//  0. Finish a reset cut short (dropfront.go): with .reset naming offset
//     F, every segment left is deleted and an empty one made at F. Then
//     finish a truncation cut short (truncate.go), before anything else:
//     the states a truncation passes through would look like a gap or
//     corruption to the steps below. With a truncation intent (.truncate)
//     naming offset T: the segment holding T is checked (header, records
//     before T); every segment above it is deleted, newest first; it is
//     cut after record T-1 (zeroed to its last byte that is not zero,
//     synced; step 4 rewrites its index); the directory is synced and the
//     intent deleted. An intent that fails its checks, or does not fit
//     the log, is an error and nothing is changed. Without an intent, the
//     files of a truncation that never wrote one are deleted.
//  1. List the .log files; delete an .idx without its .log (a rotation
//     or a retention that crashed half way). A segment prepared ahead of
//     a rotation (.prepared.log, see rotation.go) that has a valid header
//     was swapped in and may hold the newest records: it is synced and
//     given the name its header says. Without a valid header it was never
//     swapped in, or none of its records was called durable: it is
//     deleted.
//  2. If the newest .log has no valid header and nothing but zeros, look
//     at its index. When the index is missing or holds no entry (nothing
//     but zeros after its header), the segment's creation did not
//     complete (a crash while it was being created): delete both files.
//     When the index holds entries, records were written to the segment
//     (a segment's .log header is durable before the segment has its
//     name: createSegment syncs it before any record is appended, a
//     rotation's commit before the rename; and only an appended record
//     writes an entry), so the .log was zeroed
//     afterwards: that is corruption at the segment's base offset. Nothing
//     is deleted, so its offsets are never given out again; the older
//     segments are opened as in step 3 and served read-only.
//  3. Open every older segment read-only and check its index: header,
//     entries strictly increasing and in bounds, the last entry's record
//     valid with the right offset, nothing but zeros after it. An index
//     that fails is rebuilt from the .log. Sealed segments are not
//     otherwise read, so opening a large log costs little.
//  4. Open the newest segment read-write and verify every record of it.
//     After the last valid record: if a valid record follows further on,
//     that is corruption; otherwise it is a torn tail, zeroed and synced,
//     with a log line that says how many bytes. Its index is rewritten to
//     match, including entries ahead of the log.
//     Zeros from the last good record to the end of its page, with valid
//     records only past that page, are a page lost in a power cut (see
//     lostPageBefore): a torn tail. The search for a valid record is
//     bounded (see findValidRecord); past the bound it is corruption.
//  5. Check that segments are contiguous: each starts where the one before
//     it ends.
//
// openLog then fdatasyncs every segment before it calls the records
// durable.
//
// Every step can be interrupted and run again with the same result.
func recoverSegments(dir string, opts *Options, report *Recovery) ([]*segment, error) {
	if err := finishReset(dir, opts); err != nil {
		return nil, err
	}
	if err := finishTruncation(dir, opts); err != nil {
		return nil, err
	}
	if err := settlePreparedSegment(dir, opts); err != nil {
		return nil, err
	}
	bases, err := listSegments(dir, opts)
	if err != nil {
		return nil, err
	}
	// zeroed is the corruption of a newest segment zeroed after records
	// were written to it (step 2); it is reported once the segments before
	// it are open.
	var zeroed *CorruptionError
	if len(bases) > 0 {
		removed, err := removeUnbornSegment(dir, bases[len(bases)-1], opts)
		switch {
		case errors.As(err, &zeroed):
		case err != nil:
			return nil, err
		case removed:
			bases = bases[:len(bases)-1]
		}
	}
	segments, err := openSegments(dir, bases, zeroed != nil, opts, report)
	var corrupt *CorruptionError
	switch {
	case err != nil && !errors.As(err, &corrupt):
		for _, s := range segments {
			s.release()
		}
		return nil, err
	case err == nil && zeroed != nil:
		return segments, zeroed
	}
	return segments, err
}

// openSegments runs steps 3 to 5 over the segments at bases, leaving the
// newest out when step 2 found it zeroed. It stops at the first
// corruption, with the segments before it and the *CorruptionError.
func openSegments(dir string, bases []uint64, newestZeroed bool, opts *Options, report *Recovery) ([]*segment, error) {
	var segments []*segment
	for i, base := range bases {
		isNewest := i == len(bases)-1
		if isNewest && newestZeroed {
			// Not opened: nothing in its .log can be served. The segments
			// before it were opened sealed, read-only, as for any
			// corruption.
			return segments, follows(segments, base, pathsIn(dir, base).log)
		}
		var seg *segment
		var err error
		if isNewest {
			seg, err = openNewestSegment(dir, base, opts, report)
		} else {
			seg, err = openSealedSegment(dir, base, opts, report)
		}
		var corrupt *CorruptionError
		if err != nil && !errors.As(err, &corrupt) {
			return segments, err
		}
		if seg != nil {
			if gap := follows(segments, seg.baseOffset, seg.logPath()); gap != nil {
				seg.release()
				return segments, gap
			}
			segments = append(segments, seg)
		}
		if corrupt != nil {
			if seg != nil {
				seg.writable = false // serve it read-only: the log takes no appends
			}
			return segments, corrupt
		}
	}
	return segments, nil
}

// follows checks step 5 for a segment at base (its .log at path) after
// segments: nil, or a *CorruptionError when it does not start where the
// last of them ends.
func follows(segments []*segment, base uint64, path string) error {
	if len(segments) == 0 {
		return nil
	}
	prev := segments[len(segments)-1]
	if want := prev.baseOffset + prev.count.Load(); want != base {
		return &CorruptionError{Path: path, Offset: want,
			Reason: fmt.Sprintf("segment starts at offset %d, the one before it ends at %d", base, want)}
	}
	return nil
}

// settlePreparedSegment finishes with a segment prepared ahead of a
// rotation (step 1). With a valid .log header a rotation swapped it in,
// and its records may be the newest: it is synced, then renamed (its .idx
// first, then its .log) to the name its header gives, as the rotation's
// commit would have done. Without one it was never swapped in, or the
// header that the commit syncs before any of its records is called
// durable never reached the disk: it is deleted.
func settlePreparedSegment(dir string, opts *Options) error {
	logPath := filepath.Join(dir, preparedLogName)
	indexPath := filepath.Join(dir, preparedIndexName)
	f, err := os.Open(logPath)
	if errors.Is(err, os.ErrNotExist) {
		// A prepared .idx alone: a preparation that stopped half way.
		_, err := removeFiles(indexPath)
		return err
	}
	if err != nil {
		return fmt.Errorf("logstore: open prepared segment: %w", err)
	}
	defer f.Close()
	header := make([]byte, fileHeaderSize)
	n, _ := io.ReadFull(f, header)
	base, headerErr := decodeFileHeader(header[:n], logMagic)
	if headerErr != nil {
		opts.Logger.Warn("logstore: removing a segment prepared ahead of a rotation that holds nothing durable", "path", logPath)
		_, err := removeFiles(logPath, indexPath)
		return err
	}
	final := pathsIn(dir, base)
	if _, err := os.Lstat(final.log); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: %s was swapped in as the segment at offset %d, which %s holds too (%v)", logPath, base, final.log, err)
	}
	opts.Logger.Warn("logstore: naming a segment that a rotation swapped in before it was committed", "path", final.log)
	if err := opts.faults.doSync(f, logPath); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, logPath, err)
	}
	if err := os.Rename(indexPath, final.index); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: name prepared index: %w", err)
	}
	if err := os.Rename(logPath, final.log); err != nil {
		return fmt.Errorf("logstore: name prepared segment: %w", err)
	}
	return syncDir(dir)
}

// listSegments returns the base offsets of the .log files in dir, sorted,
// and removes index files that have no log.
func listSegments(dir string, opts *Options) ([]uint64, error) {
	err := opts.faults.fail("open", dir)
	var entries []os.DirEntry
	if err == nil {
		entries, err = os.ReadDir(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("logstore: list segments: %w", err)
	}
	logs := map[uint64]bool{}
	var indexes []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".idx.tmp") {
			// An index rebuild that crashed before its rename.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("logstore: remove unfinished index: %w", err)
			}
			continue
		}
		base, ext, ok := parseSegmentName(name)
		if !ok {
			continue
		}
		if ext == ".log" {
			logs[base] = true
		} else {
			indexes = append(indexes, base)
		}
	}
	for _, base := range indexes {
		if !logs[base] {
			path := filepath.Join(dir, segmentFileName(base, ".idx"))
			opts.Logger.Warn("logstore: removing index without a segment", "path", path)
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("logstore: remove stray index: %w", err)
			}
		}
	}
	bases := make([]uint64, 0, len(logs))
	for base := range logs {
		bases = append(bases, base)
	}
	slices.Sort(bases)
	return bases, nil
}

// removeUnbornSegment deletes the newest segment when its creation never
// completed: no valid header, no byte other than zero, and an index that
// is missing or holds no entry. It says whether it did. A .log of zeros
// whose index holds entries had records (see step 2 on recoverSegments):
// it is left as it is and returned as a *CorruptionError.
func removeUnbornSegment(dir string, base uint64, opts *Options) (removed bool, err error) {
	paths := pathsIn(dir, base)
	logPath, indexPath := paths.log, paths.index
	f, err := os.Open(logPath)
	if err != nil {
		return false, fmt.Errorf("logstore: open newest segment: %w", err)
	}
	header := make([]byte, fileHeaderSize)
	n, _ := io.ReadFull(f, header)
	if _, err := decodeFileHeader(header[:n], logMagic); err == nil {
		f.Close()
		return false, nil
	}
	content, err := io.ReadAll(io.MultiReader(bytes.NewReader(header[:n]), f))
	f.Close()
	if err != nil {
		return false, fmt.Errorf("logstore: read newest segment: %w", err)
	}
	if !allZero(content) {
		return false, nil // a damaged header over data: corruption, reported on open
	}
	entries, err := countIndexEntries(indexPath)
	if err != nil {
		// Whether records were written cannot be told: delete nothing.
		return false, err
	}
	if entries > 0 {
		return false, &CorruptionError{Path: logPath, Offset: base,
			Reason: fmt.Sprintf("segment file is zeroed (%d bytes) while its index holds %d entries: records were written to it", len(content), entries)}
	}
	opts.Logger.Warn("logstore: removing segment whose creation did not complete", "path", logPath, "bytes", len(content))
	if err := os.Remove(logPath); err != nil {
		return false, fmt.Errorf("logstore: remove unborn segment: %w", err)
	}
	if err := os.Remove(indexPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("logstore: remove unborn index: %w", err)
	}
	return true, syncDir(dir)
}

// checkLogHeader verifies the mapped .log header against the file name.
func (s *segment) checkLogHeader() error {
	base, err := decodeFileHeader(s.logBytes(), logMagic)
	if err == nil && base != s.baseOffset {
		err = fmt.Errorf("file header: base offset %d, file name says %d", base, s.baseOffset)
	}
	if err != nil {
		return &CorruptionError{Path: s.logPath(), Offset: s.baseOffset, Reason: err.Error()}
	}
	return nil
}

// openSealedSegment opens a segment that is not the newest, read-only,
// trusting its index once the index passes the cheap checks of step 3.
// A *CorruptionError comes with the segment when the records before the
// corruption can be served, without it when none can.
func openSealedSegment(dir string, base uint64, opts *Options, report *Recovery) (*segment, error) {
	s, err := openSegment(pathsIn(dir, base), base, segmentSealed, opts)
	if err != nil {
		return nil, err
	}
	if s.logAllocated.Load() < fileHeaderSize {
		s.closeFiles()
		return nil, &CorruptionError{Path: s.logPath(), Offset: base, Reason: "shorter than its header"}
	}
	if err := s.mapReadOnly(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.checkLogHeader(); err != nil {
		s.closeFiles()
		return nil, err
	}
	reason := s.checkIndex()
	if reason == "" {
		return s, nil
	}
	opts.Logger.Warn("logstore: rebuilding index", "path", s.indexPath(), "reason", reason)
	count, _, badAt, reason := s.scanRecords()
	if err := s.rewriteIndex(count); err != nil {
		s.closeFiles()
		return nil, err
	}
	report.IndexesRebuilt++
	if badAt >= 0 {
		// A sealed segment must be whole: any bad record in it is
		// corruption. The records before it stay readable.
		return s, &CorruptionError{Path: s.logPath(), Position: badAt, Offset: base + count, Reason: reason}
	}
	return s, nil
}

// scanRecords verifies every record of the segment from the start. It sets
// count, payloadBytes, lastTimestamp and writePos to cover the valid
// prefix and returns the count, the end of the valid prefix, and where the
// first bad record starts (-1 when the records end cleanly) with why.
func (s *segment) scanRecords() (count uint64, end int64, badAt int64, reason string) {
	bytes := s.logBytes()
	position := int64(fileHeaderSize)
	var payload int64
	var last int64
	badAt = -1
	for position < int64(len(bytes)) {
		view, status, why := decodeRecord(bytes[position:])
		if status == decodeEnd {
			break
		}
		if status == decodeOK && view.Offset != s.baseOffset+count {
			status, why = decodeBad, fmt.Sprintf("record holds offset %d, want %d", view.Offset, s.baseOffset+count)
		}
		if status == decodeOK && view.Timestamp < last {
			status, why = decodeBad, "timestamp goes back"
		}
		if status == decodeBad {
			badAt, reason = position, why
			break
		}
		payload += int64(view.PayloadSize())
		if count == 0 {
			s.firstTimestamp.Store(view.Timestamp)
		}
		last = view.Timestamp
		position += int64(view.size)
		count++
	}
	s.count.Store(count)
	s.payloadBytes.Store(payload)
	s.lastTimestamp.Store(last)
	s.writePos = position
	return count, position, badAt, reason
}

// openNewestSegment opens the newest segment read-write and runs step 4.
// A *CorruptionError comes with the segment when the records before the
// corruption can be served, without it when none can.
func openNewestSegment(dir string, base uint64, opts *Options, report *Recovery) (*segment, error) {
	s, err := openSegment(pathsIn(dir, base), base, segmentWritable, opts)
	if err != nil {
		return nil, err
	}
	if s.logAllocated.Load() < fileHeaderSize {
		s.closeFiles()
		return nil, &CorruptionError{Path: s.logPath(), Offset: base, Reason: "shorter than its header"}
	}
	if s.indexAllocated.Load() < pageSize {
		// A missing or short index: give it room for its header and entries.
		if err := s.grow(s.indexFile, s.indexAllocated.Load(), pageSize-s.indexAllocated.Load(), "restoring index"); err != nil {
			s.closeFiles()
			return nil, err
		}
		s.indexAllocated.Store(pageSize)
	}
	if err := s.mapWritable(roundUpPage(opts.SegmentBytes)); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.checkLogHeader(); err != nil {
		s.closeFiles()
		return nil, err
	}
	count, corrupt := s.recoverTail(opts, report)
	if err := s.mapIndexRebuilt(count); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, corrupt
}

// recoverTail verifies the records of the newest segment and looks at
// what follows the last valid one (step 4): nothing but zeros; a torn
// tail, which it zeroes (openLog syncs it with the rest); or corruption,
// returned as a *CorruptionError. It returns the count of valid records.
func (s *segment) recoverTail(opts *Options, report *Recovery) (uint64, error) {
	count, end, badAt, reason := s.scanRecords()
	if badAt < 0 {
		badAt = end
	}
	bytes := s.logBytes()
	tail := bytes[badAt:]
	if allZero(tail) {
		return count, nil
	}
	minTimestamp := int64(math.MinInt64)
	if count > 0 {
		minTimestamp = s.lastTimestamp.Load()
	}
	at := findValidRecord(tail, s.baseOffset+count, minTimestamp)
	if at >= 0 && lostPageBefore(bytes, badAt, badAt+int64(at)) {
		opts.Logger.Warn("logstore: a page before valid records never reached the disk; treating everything after the last good record as a torn tail",
			"path", s.logPath(), "position", badAt, "record_at", badAt+int64(at))
		at = -1
	}
	if at != -1 {
		if reason == "" {
			reason = "zeros where a record should be"
		}
		where := fmt.Sprintf("with a valid record after it at byte %d", badAt+int64(at))
		if at == searchTooCostly {
			where = "followed by bytes too costly to prove a torn tail"
		}
		return count, &CorruptionError{Path: s.logPath(), Position: badAt, Offset: s.baseOffset + count,
			Reason: reason + ", " + where}
	}
	cut := lastNonZero(tail) + 1
	opts.Logger.Warn("logstore: cutting torn tail", "path", s.logPath(), "offset", s.baseOffset+count, "position", badAt, "bytes", cut)
	clear(tail[:cut])
	report.TornBytes = int64(cut) // synced by openLog with the rest
	return count, nil
}

// searchTooCostly is what findValidRecord returns when proving that no
// valid record follows would cost more checksumming than it allows.
const searchTooCostly = -2

// findValidRecord looks for a valid record anywhere in tail that claims an
// offset at or after minOffset and a timestamp at or after minTimestamp
// (timestamps never go back in a log), and returns its position or -1. It is what
// tells corruption (good records after a bad one) from a torn tail.
//
// Candidates are filtered on their length, offset and timestamp fields
// before any checksum is computed, so that garbage costs a few compares a byte. The
// tail may hold a publisher's data, crafted so that a candidate starts
// every few bytes and claims the rest of the segment; checksumming each
// would cost the square of the tail. So the bytes checksummed are capped
// at a few times the tail: past the cap findValidRecord gives up and
// returns searchTooCostly, and the caller reports corruption instead of
// cutting a tail it could not prove torn.
func findValidRecord(tail []byte, minOffset uint64, minTimestamp int64) int {
	maxOffset := minOffset + uint64(len(tail))/recordHeaderSize
	budget := 4*int64(len(tail)) + 1<<20
	for at := 0; at+recordHeaderSize <= len(tail); at++ {
		length := binary.LittleEndian.Uint32(tail[at:])
		if length < recordFixedBody || uint64(length) > uint64(len(tail)-at-8) {
			continue
		}
		if offset := binary.LittleEndian.Uint64(tail[at+8:]); offset < minOffset || offset > maxOffset {
			continue
		}
		if timestamp := int64(binary.LittleEndian.Uint64(tail[at+16:])); timestamp < minTimestamp {
			continue
		}
		if budget -= int64(length); budget < 0 {
			return searchTooCostly
		}
		view, status, _ := decodeRecord(tail[at:])
		if status == decodeOK && view.Offset >= minOffset {
			return at
		}
	}
	return -1
}

// lostPageBefore says whether the gap between the last good record (at
// badAt) and a valid record found after it (at found) is explained by a
// page of the mapping that never reached the disk. The kernel writes dirty
// pages back in no particular order, and a disk may persist them in
// another, so a power cut can keep a later unsynced page and lose an
// earlier one; the lost page reads as it was at the last sync: zeros after
// the last record synced (the file was preallocated). None of it was ever
// synced, because a sync writes every page: a torn tail, not corruption.
//
// It is that when everything from badAt to the end of its page is zero
// (no record was even begun there) and the valid record lies past that
// page. A gap that starts with a damaged record is not explained this way
// and stays corruption, so that synced data is never cut on a guess.
func lostPageBefore(bytes []byte, badAt, found int64) bool {
	pageEnd := roundUpPage(badAt + 1)
	return pageEnd <= found && allZero(bytes[badAt:pageEnd])
}

func lastNonZero(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}
