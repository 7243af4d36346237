package logstore

// The index of a segment (.idx, format.go): written by the writer next to
// each record, checked cheaply or rebuilt from the .log by recovery, and
// used by readers to find a record by offset or by time. It is derived
// data: the .log is the truth, and every use of the index is checked
// against it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sort"

	"github.com/edsrzf/mmap-go"
)

// indexCapacity is the largest index a log of logCapacity bytes can need:
// one entry per smallest possible record.
func indexCapacity(logCapacity int64) int64 {
	return roundUpPage(fileHeaderSize + (logCapacity-fileHeaderSize)/recordHeaderSize*indexEntrySize + indexEntrySize)
}

// indexEntryAt returns the index entry of the i-th record of the segment.
func (s *segment) indexEntryAt(i uint64) indexEntry {
	at := fileHeaderSize + i*indexEntrySize
	return readIndexEntry(s.indexMap[at : at+indexEntrySize])
}

func (s *segment) putIndexEntry(i uint64, e indexEntry) {
	at := fileHeaderSize + i*indexEntrySize
	putIndexEntry(s.indexMap[at:at+indexEntrySize], e)
}

// indexLocked records the record at offset, of size bytes framed and
// payload bytes of headers and data, just written at writePos: its index
// entry, and the segment's counts. The caller holds the log's writer lock.
func (s *segment) indexLocked(offset uint64, timestamp int64, payload int, size int64) {
	s.putIndexEntry(offset-s.baseOffset, indexEntry{position: uint32(s.writePos), size: uint32(payload), timestamp: timestamp})
	s.writePos += size
	s.payloadBytes.Add(int64(payload))
	if offset == s.baseOffset {
		s.firstTimestamp.Store(timestamp)
	}
}

// ---- recovery ----

// checkIndex runs the cheap checks of a sealed segment's index (step 3 of
// recoverSegments) and, when they pass, sets count, payloadBytes and the
// timestamps from it. It returns why the index cannot be trusted, or "".
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
		if view.Offset != s.baseOffset+count-1 || view.Timestamp != prev.timestamp {
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

// forEachRecord walks the first count records of the .log, which must be
// valid.
func (s *segment) forEachRecord(count uint64, fn func(i uint64, position int64, view RecordView)) {
	bytes := s.logBytes()
	position := int64(fileHeaderSize)
	for i := uint64(0); i < count; i++ {
		view, _, _ := decodeRecord(bytes[position:])
		fn(i, position, view)
		position += int64(view.size)
	}
}

// entryOf is the index entry of a record found at position.
func entryOf(position int64, view RecordView) indexEntry {
	return indexEntry{position: uint32(position), size: uint32(view.PayloadSize()), timestamp: view.Timestamp}
}

// rewriteIndex builds the index of the first count records of a sealed
// segment from the .log and replaces the .idx with it atomically
// (temporary file, sync, rename, sync the directory), then maps the new
// file read-only.
func (s *segment) rewriteIndex(count uint64) error {
	buf := make([]byte, fileHeaderSize+count*indexEntrySize)
	encodeFileHeader(buf, indexMagic, s.baseOffset)
	s.forEachRecord(count, func(i uint64, position int64, view RecordView) {
		putIndexEntry(buf[fileHeaderSize+i*indexEntrySize:], entryOf(position, view))
	})
	indexPath := s.indexPath()
	tmp := indexPath + ".tmp"
	if err := writeFileSync(tmp, buf); err != nil {
		return err
	}
	if err := os.Rename(tmp, indexPath); err != nil {
		return fmt.Errorf("logstore: replace index: %w", err)
	}
	if err := syncDir(s.dir()); err != nil {
		return err
	}
	if s.indexMap != nil {
		s.indexMap.Unmap()
		s.indexMap = nil
	}
	s.indexFile.Close()
	var err error
	if s.indexFile, err = os.OpenFile(indexPath, os.O_RDWR, 0); err != nil {
		return fmt.Errorf("logstore: open index: %w", err)
	}
	s.observer.DiskBytes(int64(len(buf)) - s.indexAllocated.Load())
	s.indexAllocated.Store(int64(len(buf)))
	if s.indexMap, err = mmap.MapRegion(s.indexFile, len(buf), mmap.RDONLY, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", indexPath, err)
	}
	return nil
}

// mapIndexRebuilt makes the writable index of the newest segment match its
// first count records: entries rewritten where they differ, entries ahead
// of the log zeroed, header restored.
func (s *segment) mapIndexRebuilt(count uint64) error {
	if err := s.ensureIndexEntries(count+1, "restoring index"); err != nil {
		return err
	}
	changed := false
	if base, err := decodeFileHeader(s.indexMap, indexMagic); err != nil || base != s.baseOffset {
		encodeFileHeader(s.indexMap, indexMagic, s.baseOffset)
		changed = true
	}
	s.forEachRecord(count, func(i uint64, position int64, view RecordView) {
		if want := entryOf(position, view); s.indexEntryAt(i) != want {
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

// ensureIndexEntries grows the index file to hold entries entries, a page
// at a time; what says what for, in an error.
func (s *segment) ensureIndexEntries(entries uint64, what string) error {
	need := int64(fileHeaderSize + entries*indexEntrySize)
	if allocated := s.indexAllocated.Load(); need > allocated {
		grown := min(roundUpPage(need), int64(len(s.indexMap)))
		if err := s.grow(s.indexFile, allocated, grown-allocated, what); err != nil {
			return err
		}
		s.indexAllocated.Store(grown)
	}
	return nil
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

// ---- reads ----

// locate returns where the record at offset starts. The index says so in
// one lookup; the index is derived data, so when the record there is not
// the one wanted, the positions are rebuilt from the .log once (the
// records themselves are the truth) and used for every later read of the
// segment. It returns the index's position when the .log has no such
// record either, for the caller to report.
func (s *segment) locate(bytes []byte, offset uint64) int64 {
	i := offset - s.baseOffset
	rebuilt := s.positions.Load()
	if rebuilt != nil && i < uint64(len(rebuilt.positions)) {
		return int64(rebuilt.positions[i])
	}
	position := int64(s.indexEntryAt(i).position)
	if recordAt(bytes, position, offset) {
		return position // the caller verifies the checksum
	}
	if rebuilt == nil || rebuilt.count < s.count.Load() {
		// Walk again only if records came after the last walk: a walk
		// that stopped at a bad record would stop there again.
		if p := s.rebuildPositions(bytes, offset); i < uint64(len(p)) {
			return int64(p[i])
		}
	}
	return position
}

// rebuiltPositions is where each record of a segment starts, found by
// walking its .log, and the segment's count when the walk was made; the
// walk stops early at a record that is not valid.
type rebuiltPositions struct {
	positions []uint32
	count     uint64
}

// recordAt says whether a record that claims offset starts at position.
func recordAt(bytes []byte, position int64, offset uint64) bool {
	return position >= fileHeaderSize && position+recordHeaderSize <= int64(len(bytes)) &&
		binary.LittleEndian.Uint32(bytes[position:]) != 0 &&
		binary.LittleEndian.Uint64(bytes[position+8:]) == offset
}

// rebuildPositions walks the .log from its start and records where each
// valid record begins, up to the segment's count, unless another reader
// did so meanwhile. It logs each walk it makes.
func (s *segment) rebuildPositions(bytes []byte, offset uint64) []uint32 {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	count := s.count.Load()
	if p := s.positions.Load(); p != nil && (offset-s.baseOffset < uint64(len(p.positions)) || p.count >= count) {
		return p.positions
	}
	positions := make([]uint32, 0, count)
	walk := int64(fileHeaderSize)
	for uint64(len(positions)) < count && walk < int64(len(bytes)) {
		view, status, _ := decodeRecord(bytes[walk:])
		if status != decodeOK || view.Offset != s.baseOffset+uint64(len(positions)) {
			break
		}
		positions = append(positions, uint32(walk))
		walk += int64(view.size)
	}
	s.positions.Store(&rebuiltPositions{positions: positions, count: count})
	s.logger.Warn("logstore: index disagrees with its log; reading by positions rebuilt from the log",
		"path", s.indexPath(), "offset", offset, "records", len(positions), "of", count)
	return positions
}

// offsetAt binary-searches the segment's index for the first record below
// end with a timestamp at or after timestamp.
func (s *segment) offsetAt(timestamp int64, end uint64, newest bool) (offset uint64, found bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guardFault(s, &err)
	if s.baseOffset >= end {
		return 0, false, nil
	}
	count := s.count.Load()
	if s.baseOffset+count > end {
		count = end - s.baseOffset
	}
	if count == 0 || s.lastTimestamp.Load() < timestamp && !newest {
		return 0, false, nil
	}
	n := sort.Search(int(count), func(j int) bool { return s.indexEntryAt(uint64(j)).timestamp >= timestamp })
	if n < int(count) {
		return s.baseOffset + uint64(n), true, nil
	}
	return 0, false, nil
}
