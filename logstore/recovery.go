package logstore

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
	"strconv"
	"strings"

	"github.com/edsrzf/mmap-go"
)

// OpenLog opens (or creates) the log of subject in dir, recovering it as
// the package documentation describes. When the log holds corruption,
// OpenLog returns the log, readable up to the corruption and refusing
// appends, together with a *CorruptionError.
func OpenLog(dir, subject string, opts Options) (*Log, error) {
	resolved, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return openLog(dir, subject, &resolved, false)
}

// openLog opens the log in dir. closedClean says this process closed it
// successfully (everything synced) and nothing has written to it since, so
// the sync of what recovery finds can be skipped. It tells the Observer
// what it found exactly once, whichever way it returns: a log that cannot
// be opened is reported as failed, not left out.
func openLog(dir, subject string, opts *Options, closedClean bool) (opened *Log, err error) {
	var report Recovery
	defer func() {
		if opened == nil {
			report.Err = err
		}
		opts.Observer.Recovered(subject, report)
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logstore: create log dir: %w", err)
	}
	l := &Log{
		subject:  subject,
		dir:      dir,
		opts:     opts,
		closedCh: make(chan struct{}),
		kick:     make(chan struct{}, 1),
	}
	segments, openErr, err := recoverSegments(dir, opts, &report)
	if err != nil {
		return nil, err
	}
	report.Corrupt = openErr != nil
	if len(segments) == 0 && openErr != nil {
		// The very first segment is damaged: an empty log that refuses
		// appends, positioned where that segment starts.
		var corrupt *CorruptionError
		var base uint64
		if errors.As(openErr, &corrupt) {
			base = corrupt.Offset
		}
		l.segments.Store(&segments)
		l.firstOffset.Store(base)
		l.endOffset.Store(base)
		l.durable.Store(base)
		l.openErr = openErr
		return l, openErr
	}
	// What recovery found may still be only in the page cache (a writer
	// that died under SyncNone, or whose sync failed), and a torn tail was
	// zeroed in it: sync it before calling it durable. Not needed for a log
	// this store closed cleanly (Close synced it), unless a tail was cut,
	// nor for a new log (createSegment synced it).
	if len(segments) == 0 {
		seg, err := createSegment(dir, 0, opts)
		if err != nil {
			return nil, err
		}
		segments = []*segment{seg}
	} else if !closedClean || report.TornBytes > 0 {
		for _, seg := range segments {
			if err := seg.syncData(); err != nil {
				for _, s := range segments {
					s.release()
				}
				return nil, err
			}
		}
	}
	newest := segments[len(segments)-1]
	l.segments.Store(&segments)
	l.firstOffset.Store(segments[0].baseOffset)
	end := newest.baseOffset + newest.count.Load()
	l.endOffset.Store(end)
	l.durable.Store(end) // synced just above
	l.lastTimestamp = newest.lastTimestamp.Load()
	if len(segments) > 1 && newest.count.Load() == 0 {
		l.lastTimestamp = segments[len(segments)-2].lastTimestamp.Load()
	}
	l.openErr = openErr
	if openErr == nil {
		l.active = newest
		l.applyRetentionLocked()
		if opts.Sync != SyncNone {
			l.syncerDone = make(chan struct{})
			go l.runSyncer()
		}
	}
	return l, openErr
}

// recoverSegments opens every segment in dir, oldest first. A non-nil
// openErr means the log is corrupt: the segments returned end where the
// corruption starts and are all read-only.
//
// The steps, in order (the README repeats them):
//  1. List the .log files; delete an .idx without its .log (a rotation
//     or a retention that crashed half way).
//  2. If the newest .log has no valid header and nothing but zeros, look
//     at its index. When the index is missing or holds no entry (nothing
//     but zeros after its header), the segment's creation did not
//     complete (a crash while it was being created): delete both files.
//     When the index holds entries, records were written to the segment
//     (createSegment syncs the .log header before any record is appended,
//     and only an appended record writes an entry), so the .log was zeroed
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
func recoverSegments(dir string, opts *Options, report *Recovery) (segments []*segment, openErr, err error) {
	bases, err := listSegments(dir, opts)
	if err != nil {
		return nil, nil, err
	}
	// zeroed is the corruption of a newest segment zeroed after records
	// were written to it (step 2); it is reported once the segments before
	// it are open.
	var zeroed error
	if len(bases) > 0 {
		newest := bases[len(bases)-1]
		removed, corrupt, err := removeUnbornSegment(dir, newest, opts)
		if err != nil {
			return nil, nil, err
		}
		if removed {
			bases = bases[:len(bases)-1]
		}
		zeroed = corrupt
	}
	defer func() {
		if err != nil {
			for _, s := range segments {
				s.release()
			}
			segments = nil
		}
	}()
	for i, base := range bases {
		isNewest := i == len(bases)-1
		if isNewest && zeroed != nil {
			// Not opened: nothing in its .log can be served. The segments
			// before it were opened sealed, read-only, as for any
			// corruption.
			if len(segments) > 0 {
				prev := segments[len(segments)-1]
				if want := prev.baseOffset + prev.count.Load(); want != base {
					return segments, &CorruptionError{Path: filepath.Join(dir, segmentFileName(base, ".log")), Offset: want,
						Reason: fmt.Sprintf("segment starts at offset %d, the one before it ends at %d", base, want)}, nil
				}
			}
			return segments, zeroed, nil
		}
		var seg *segment
		if isNewest {
			seg, openErr, err = openNewestSegment(dir, base, opts, report)
		} else {
			seg, openErr, err = openSealedSegment(dir, base, opts, report)
		}
		if err != nil {
			return segments, nil, err
		}
		if seg != nil {
			if len(segments) > 0 {
				prev := segments[len(segments)-1]
				if want := prev.baseOffset + prev.count.Load(); want != seg.baseOffset {
					seg.release()
					return segments, &CorruptionError{Path: seg.logPath, Offset: want,
						Reason: fmt.Sprintf("segment starts at offset %d, the one before it ends at %d", seg.baseOffset, want)}, nil
				}
			}
			segments = append(segments, seg)
		}
		if openErr != nil {
			if seg != nil && seg.writable {
				// Serve it read-only: the log takes no appends.
				seg.writable = false
			}
			return segments, openErr, nil
		}
	}
	return segments, nil, nil
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

// parseSegmentName parses "00000000000000000042.log" or ".idx".
func parseSegmentName(name string) (uint64, string, bool) {
	ext := filepath.Ext(name)
	if ext != ".log" && ext != ".idx" {
		return 0, "", false
	}
	digits := strings.TrimSuffix(name, ext)
	if len(digits) != 20 {
		return 0, "", false
	}
	base, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return base, ext, true
}

// removeUnbornSegment deletes the newest segment when its creation never
// completed: no valid header, no byte other than zero, and an index that
// is missing or holds no entry. It says whether it did. A .log of zeros
// whose index holds entries had records (see step 2 on recoverSegments):
// it is left as it is and returned as corruption.
func removeUnbornSegment(dir string, base uint64, opts *Options) (removed bool, corrupt, err error) {
	logPath := filepath.Join(dir, segmentFileName(base, ".log"))
	indexPath := filepath.Join(dir, segmentFileName(base, ".idx"))
	f, err := os.Open(logPath)
	if err != nil {
		return false, nil, fmt.Errorf("logstore: open newest segment: %w", err)
	}
	header := make([]byte, fileHeaderSize)
	n, _ := io.ReadFull(f, header)
	if _, err := decodeFileHeader(header[:n], logMagic); err == nil {
		f.Close()
		return false, nil, nil
	}
	content, err := io.ReadAll(io.MultiReader(bytes.NewReader(header[:n]), f))
	f.Close()
	if err != nil {
		return false, nil, fmt.Errorf("logstore: read newest segment: %w", err)
	}
	if !allZero(content) {
		return false, nil, nil // a damaged header over data: corruption, reported on open
	}
	entries, err := countIndexEntries(indexPath)
	if err != nil {
		// Whether records were written cannot be told: delete nothing.
		return false, nil, err
	}
	if entries > 0 {
		return false, &CorruptionError{Path: logPath, Offset: base,
			Reason: fmt.Sprintf("segment file is zeroed (%d bytes) while its index holds %d entries: records were written to it", len(content), entries)}, nil
	}
	opts.Logger.Warn("logstore: removing segment whose creation did not complete", "path", logPath, "bytes", len(content))
	if err := os.Remove(logPath); err != nil {
		return false, nil, fmt.Errorf("logstore: remove unborn segment: %w", err)
	}
	if err := os.Remove(indexPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, nil, fmt.Errorf("logstore: remove unborn index: %w", err)
	}
	return true, nil, syncDir(dir)
}

// countIndexEntries counts the entry slots of an index file, after its
// header, that hold a byte other than zero (a last, partial slot counts
// too); a missing index holds none. Only an appended record writes an
// entry, so any such slot proves that the segment held records, whatever
// the header says: the header and the entries may sit in pages that
// reached the disk or not independently, since the newest segment's index
// is not synced.
func countIndexEntries(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("logstore: open index: %w", err)
	}
	defer f.Close()
	r := io.NewSectionReader(f, fileHeaderSize, math.MaxInt64-fileHeaderSize)
	buf := make([]byte, 4096*indexEntrySize) // whole entries, so no slot straddles two reads
	var entries int64
	for {
		n, err := io.ReadFull(r, buf)
		for at := 0; at < n; at += indexEntrySize {
			if !allZero(buf[at:min(at+indexEntrySize, n)]) {
				entries++
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return entries, nil
		}
		if err != nil {
			return 0, fmt.Errorf("logstore: read index %s: %w", path, err)
		}
	}
}

// openFiles opens a segment's .log and .idx (creating an empty .idx when
// it is missing) and checks the .log header.
func openFiles(dir string, base uint64, writable bool, opts *Options) (*segment, error) {
	s := &segment{
		baseOffset: base,
		logPath:    filepath.Join(dir, segmentFileName(base, ".log")),
		indexPath:  filepath.Join(dir, segmentFileName(base, ".idx")),
		writable:   writable,
		faults:     opts.faults,
		observer:   opts.Observer,
		logger:     opts.Logger,
	}
	s.refs.Store(1)
	var err error
	mode := os.O_RDONLY
	if writable {
		mode = os.O_RDWR
	}
	if s.logFile, err = os.OpenFile(s.logPath, mode, 0); err != nil {
		return nil, fmt.Errorf("logstore: open segment: %w", err)
	}
	if s.indexFile, err = os.OpenFile(s.indexPath, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("logstore: open index: %w", err)
	}
	logSize, err1 := fileSize(s.logFile)
	indexSize, err2 := fileSize(s.indexFile)
	if err := errors.Join(err1, err2); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.logAllocated.Store(logSize)
	s.indexAllocated.Store(indexSize)
	return s, nil
}

func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("logstore: stat %s: %w", f.Name(), err)
	}
	return fi.Size(), nil
}

// checkLogHeader verifies the mapped .log header against the file name.
func (s *segment) checkLogHeader() error {
	bytes := s.logBytes()
	base, err := decodeFileHeader(bytes, logMagic)
	if err == nil && base != s.baseOffset {
		err = fmt.Errorf("file header: base offset %d, file name says %d", base, s.baseOffset)
	}
	if err != nil {
		return &CorruptionError{Path: s.logPath, Offset: s.baseOffset, Reason: err.Error()}
	}
	return nil
}

// openSealedSegment opens a segment that is not the newest, read-only,
// trusting its index once the index passes the cheap checks of step 3.
func openSealedSegment(dir string, base uint64, opts *Options, report *Recovery) (*segment, error, error) {
	s, err := openFiles(dir, base, false, opts)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*segment, error, error) {
		s.closeFiles()
		return nil, nil, err
	}
	if s.logAllocated.Load() < fileHeaderSize {
		s.closeFiles()
		return nil, &CorruptionError{Path: s.logPath, Offset: base, Reason: "shorter than its header"}, nil
	}
	if s.logMap, err = mmap.MapRegion(s.logFile, int(s.logAllocated.Load()), mmap.RDONLY, 0, 0); err != nil {
		return fail(fmt.Errorf("logstore: map %s: %w", s.logPath, err))
	}
	if err := s.checkLogHeader(); err != nil {
		s.closeFiles()
		return nil, err, nil
	}
	if s.indexAllocated.Load() > 0 {
		if s.indexMap, err = mmap.MapRegion(s.indexFile, int(s.indexAllocated.Load()), mmap.RDONLY, 0, 0); err != nil {
			return fail(fmt.Errorf("logstore: map %s: %w", s.indexPath, err))
		}
	}
	if reason := s.checkIndex(); reason == "" {
		return s, nil, nil
	} else {
		opts.Logger.Warn("logstore: rebuilding index", "path", s.indexPath, "reason", reason)
	}
	count, _, badAt, reason := s.scanRecords()
	if err := s.rewriteIndex(dir, count, opts); err != nil {
		return fail(err)
	}
	report.IndexesRebuilt++
	if badAt >= 0 {
		// A sealed segment must be whole: any bad record in it is
		// corruption. The records before it stay readable.
		return s, &CorruptionError{Path: s.logPath, Position: badAt, Offset: base + count, Reason: reason}, nil
	}
	return s, nil, nil
}

// checkIndex runs the cheap checks of a sealed segment's index and, when
// they pass, sets count, payloadBytes and lastTimestamp from it. It returns
// why the index cannot be trusted, or "".
func (s *segment) checkIndex() string {
	if len(s.indexMap) < fileHeaderSize {
		return "index missing or shorter than its header"
	}
	if base, err := decodeFileHeader(s.indexMap, indexMagic); err != nil {
		return err.Error()
	} else if base != s.baseOffset {
		return fmt.Sprintf("index base offset %d, want %d", base, s.baseOffset)
	}
	logBytes := s.logBytes()
	var count uint64
	var payload int64
	var prev indexEntry
	for at := fileHeaderSize; at+indexEntrySize <= len(s.indexMap); at += indexEntrySize {
		e := readIndexEntry(s.indexMap[at : at+indexEntrySize])
		if e == (indexEntry{}) {
			break
		}
		if int64(e.position) < fileHeaderSize || int64(e.position) >= int64(len(logBytes)) ||
			(count > 0 && (e.position <= prev.position || e.timestamp < prev.timestamp)) {
			return fmt.Sprintf("entry %d out of order or out of bounds", count)
		}
		prev = e
		payload += int64(e.size)
		count++
	}
	if !allZero(s.indexMap[fileHeaderSize+count*indexEntrySize:]) {
		return "bytes after the last entry"
	}
	end := int64(fileHeaderSize)
	if count > 0 {
		view, status, reason := decodeRecord(logBytes[prev.position:])
		if status != decodeOK {
			return "last entry: " + reason
		}
		if view.offset != s.baseOffset+count-1 || view.timestamp != prev.timestamp {
			return "last entry does not match its record"
		}
		end = int64(prev.position) + int64(view.size)
	}
	if _, status, _ := decodeRecord(logBytes[end:]); status != decodeEnd {
		return "records after the last entry"
	}
	s.count.Store(count)
	s.payloadBytes.Store(payload)
	if count > 0 {
		s.firstTimestamp.Store(readIndexEntry(s.indexMap[fileHeaderSize:]).timestamp)
	}
	s.lastTimestamp.Store(prev.timestamp)
	s.writePos = end
	return ""
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
		if status == decodeOK && view.offset != s.baseOffset+count {
			status, why = decodeBad, fmt.Sprintf("record holds offset %d, want %d", view.offset, s.baseOffset+count)
		}
		if status == decodeOK && view.timestamp < last {
			status, why = decodeBad, "timestamp goes back"
		}
		if status == decodeBad {
			badAt, reason = position, why
			break
		}
		payload += int64(view.payloadSize())
		if count == 0 {
			s.firstTimestamp.Store(view.timestamp)
		}
		last = view.timestamp
		position += int64(view.size)
		count++
	}
	s.count.Store(count)
	s.payloadBytes.Store(payload)
	s.lastTimestamp.Store(last)
	s.writePos = position
	return count, position, badAt, reason
}

// rewriteIndex builds the index of the first count records from the .log
// and replaces the .idx with it atomically (temporary file, sync, rename,
// sync the directory), then maps the new file read-only.
func (s *segment) rewriteIndex(dir string, count uint64, opts *Options) error {
	buf := make([]byte, fileHeaderSize+count*indexEntrySize)
	encodeFileHeader(buf, indexMagic, s.baseOffset)
	s.forEachRecord(count, func(i uint64, position int64, view recordView) {
		putIndexEntry(buf[fileHeaderSize+i*indexEntrySize:], indexEntry{position: uint32(position), size: uint32(view.payloadSize()), timestamp: view.timestamp})
	})
	tmp := s.indexPath + ".tmp"
	if err := writeFileSync(tmp, buf); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.indexPath); err != nil {
		return fmt.Errorf("logstore: replace index: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if s.indexMap != nil {
		s.indexMap.Unmap()
		s.indexMap = nil
	}
	s.indexFile.Close()
	var err error
	if s.indexFile, err = os.OpenFile(s.indexPath, os.O_RDWR, 0); err != nil {
		return fmt.Errorf("logstore: open index: %w", err)
	}
	s.observer.DiskBytes(int64(len(buf)) - s.indexAllocated.Load())
	s.indexAllocated.Store(int64(len(buf)))
	if s.indexMap, err = mmap.MapRegion(s.indexFile, len(buf), mmap.RDONLY, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", s.indexPath, err)
	}
	return nil
}

// forEachRecord walks the first count records, which must be valid.
func (s *segment) forEachRecord(count uint64, fn func(i uint64, position int64, view recordView)) {
	bytes := s.logBytes()
	position := int64(fileHeaderSize)
	for i := uint64(0); i < count; i++ {
		view, _, _ := decodeRecord(bytes[position:])
		fn(i, position, view)
		position += int64(view.size)
	}
}

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

// openNewestSegment opens the newest segment read-write and runs step 4.
func openNewestSegment(dir string, base uint64, opts *Options, report *Recovery) (*segment, error, error) {
	s, err := openFiles(dir, base, true, opts)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*segment, error, error) {
		s.closeFiles()
		return nil, nil, err
	}
	if s.logAllocated.Load() < fileHeaderSize {
		s.closeFiles()
		return nil, &CorruptionError{Path: s.logPath, Offset: base, Reason: "shorter than its header"}, nil
	}
	if s.indexAllocated.Load() < pageSize {
		// A missing or short index: give it room for its header and entries.
		if err := s.grow(s.indexFile, s.indexAllocated.Load(), pageSize-s.indexAllocated.Load(), "restoring index"); err != nil {
			return fail(err)
		}
		s.indexAllocated.Store(pageSize)
	}
	if err := s.mapWritable(roundUpPage(opts.SegmentBytes)); err != nil {
		return fail(err)
	}
	if err := s.checkLogHeader(); err != nil {
		s.closeFiles()
		return nil, err, nil
	}
	count, end, badAt, reason := s.scanRecords()
	if badAt < 0 {
		badAt = end
	}
	bytes := s.logBytes()
	if tail := bytes[badAt:]; !allZero(tail) {
		minTimestamp := int64(math.MinInt64)
		if count > 0 {
			minTimestamp = s.lastTimestamp.Load()
		}
		at := findValidRecord(tail, base+count, minTimestamp)
		if at >= 0 && lostPageBefore(bytes, badAt, badAt+int64(at)) {
			opts.Logger.Warn("logstore: a page before valid records never reached the disk; treating everything after the last good record as a torn tail",
				"path", s.logPath, "position", badAt, "record_at", badAt+int64(at))
			at = -1
		}
		if at != -1 {
			if reason == "" {
				reason = "zeros where a record should be"
			}
			if err := s.mapIndexRebuilt(count); err != nil {
				return fail(err)
			}
			where := fmt.Sprintf("with a valid record after it at byte %d", badAt+int64(at))
			if at == searchTooCostly {
				where = "followed by bytes too costly to prove a torn tail"
			}
			return s, &CorruptionError{Path: s.logPath, Position: badAt, Offset: base + count,
				Reason: reason + ", " + where}, nil
		}
		cut := lastNonZero(tail) + 1
		opts.Logger.Warn("logstore: cutting torn tail", "path", s.logPath, "offset", base+count, "position", badAt, "bytes", cut)
		clear(tail[:cut])
		report.TornBytes = int64(cut) // synced by openLog with the rest
	}
	if err := s.mapIndexRebuilt(count); err != nil {
		return fail(err)
	}
	return s, nil, nil
}

// mapIndexRebuilt makes the writable index of the newest segment match its
// first count records: entries rewritten where they differ, entries ahead
// of the log zeroed, header restored.
func (s *segment) mapIndexRebuilt(count uint64) error {
	if err := s.ensureIndexEntries(count); err != nil {
		return err
	}
	changed := false
	if base, err := decodeFileHeader(s.indexMap, indexMagic); err != nil || base != s.baseOffset {
		encodeFileHeader(s.indexMap, indexMagic, s.baseOffset)
		changed = true
	}
	s.forEachRecord(count, func(i uint64, position int64, view recordView) {
		want := indexEntry{position: uint32(position), size: uint32(view.payloadSize()), timestamp: view.timestamp}
		if s.indexEntryAt(i) != want {
			s.putIndexEntry(i, want)
			changed = true
		}
	})
	if rest := s.indexMap[fileHeaderSize+count*indexEntrySize : s.indexAllocated.Load()]; !allZero(rest) {
		clear(rest)
		changed = true
	}
	if changed {
		return s.syncIndex()
	}
	return nil
}

// ensureIndexEntries grows the index file to hold count entries.
func (s *segment) ensureIndexEntries(count uint64) error {
	need := int64(fileHeaderSize + (count+1)*indexEntrySize)
	if allocated := s.indexAllocated.Load(); need > allocated {
		grown := min(roundUpPage(need), int64(len(s.indexMap)))
		if err := s.grow(s.indexFile, allocated, grown-allocated, "restoring index"); err != nil {
			return err
		}
		s.indexAllocated.Store(grown)
	}
	return nil
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
		if status == decodeOK && view.offset >= minOffset {
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
