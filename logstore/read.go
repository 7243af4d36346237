package logstore

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"sort"
)

// RecordView is a record as it lies in the mapped segment. Data and the
// encoded headers point into the mapping and are valid only during the
// callback that received the view; copy what must outlive it.
type RecordView struct {
	Offset    uint64
	Timestamp int64
	Data      []byte
	headers   []byte
}

// Headers decodes the record's headers; nil when it had none.
func (v RecordView) Headers() (Headers, error) { return decodeHeaders(v.headers) }

// HasHeaders says whether the record carries any headers, without decoding them.
func (v RecordView) HasHeaders() bool { return len(v.headers) > 0 }

// PayloadSize is the record's data plus header names and values.
func (v RecordView) PayloadSize() int { return len(v.Data) + headerPayloadBytes(v.headers) }

// Record returns a copy of the record that owns its memory.
func (v RecordView) Record() (Record, error) {
	headers, err := v.Headers()
	if err != nil {
		return Record{}, err
	}
	return Record{Offset: v.Offset, Timestamp: v.Timestamp, Headers: headers, Data: append([]byte(nil), v.Data...)}, nil
}

// Scan calls fn for each record from offset up to the end offset as it was
// when Scan started, in order, until fn returns false. It returns the offset
// after the last record passed to fn. Every record's checksum and offset
// are verified; a bad one stops the scan with a *CorruptionError.
//
// offset may equal the end offset (nothing to read); outside
// [first offset, end offset] Scan returns a *RangeError.
func (l *Log) Scan(offset uint64, fn func(RecordView) bool) (next uint64, err error) {
	end := l.endOffset.Load()
	next = offset
	for next < end {
		seg, err := l.acquireSegment(next, end)
		if err != nil {
			return next, err
		}
		more, err := scanSegment(seg, &next, end, fn)
		seg.release()
		if err != nil || !more {
			return next, err
		}
	}
	if offset > end {
		return next, &RangeError{Offset: offset, First: l.firstOffset.Load(), End: end}
	}
	return next, nil
}

// acquireSegment finds and references the segment holding offset. It
// retries when retention releases the segment under it, and gives up with
// ErrClosed once the log is closed (its segments are all released).
func (l *Log) acquireSegment(offset, end uint64) (*segment, error) {
	for {
		segments := *l.segments.Load()
		first := l.firstOffset.Load()
		if len(segments) > 0 {
			first = segments[0].baseOffset
		}
		if offset < first || offset > end || len(segments) == 0 {
			return nil, &RangeError{Offset: offset, First: first, End: end}
		}
		i := sort.Search(len(segments), func(i int) bool { return segments[i].baseOffset > offset }) - 1
		if segments[i].acquire() {
			return segments[i], nil
		}
		select {
		case <-l.closedCh:
			return nil, ErrClosed
		default:
		}
	}
}

// guardFault turns a memory fault on one of seg's mappings (its file was
// truncated under it, or the device failed) into ErrFault. Call it deferred,
// with the named error result of the function that reads the mapping.
func guardFault(seg *segment, err *error) {
	r := recover()
	if r == nil {
		return
	}
	fault, ok := r.(interface{ Addr() uintptr })
	if !ok {
		panic(r)
	}
	path := seg.fileMapping(fault.Addr())
	if path == "" {
		panic(r) // not ours: a bug in a callback, say
	}
	*err = fmt.Errorf("%w: %s at address %#x", ErrFault, path, fault.Addr())
}

// scanSegment reads records of seg from *next while they are below end.
// It turns a memory fault (a file truncated under its mapping) into
// ErrFault instead of a crash.
func scanSegment(seg *segment, next *uint64, end uint64, fn func(RecordView) bool) (more bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guardFault(seg, &err)
	count := seg.count.Load()
	last := min(end, seg.baseOffset+count)
	if *next >= last {
		return *next < end, nil
	}
	bytes := seg.logBytes()
	position := seg.locate(bytes, *next)
	for *next < last {
		if position < fileHeaderSize || position >= int64(len(bytes)) {
			return false, &CorruptionError{Path: seg.indexPath, Position: position, Offset: *next, Reason: "index points outside the segment"}
		}
		view, status, reason := decodeRecord(bytes[position:])
		if status != decodeOK {
			if status == decodeEnd {
				reason = "record missing"
			}
			return false, &CorruptionError{Path: seg.logPath, Position: position, Offset: *next, Reason: reason}
		}
		if view.offset != *next {
			return false, &CorruptionError{Path: seg.logPath, Position: position, Offset: *next, Reason: fmt.Sprintf("record holds offset %d", view.offset)}
		}
		*next++
		if !fn(RecordView{Offset: view.offset, Timestamp: view.timestamp, Data: view.data, headers: view.headers}) {
			return false, nil
		}
		position += int64(view.size)
	}
	return *next < end, nil
}

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
		if status != decodeOK || view.offset != s.baseOffset+uint64(len(positions)) {
			break
		}
		positions = append(positions, uint32(walk))
		walk += int64(view.size)
	}
	s.positions.Store(&rebuiltPositions{positions: positions, count: count})
	s.logger.Warn("logstore: index disagrees with its log; reading by positions rebuilt from the log",
		"path", s.indexPath, "offset", offset, "records", len(positions), "of", count)
	return positions
}

// Read returns up to max records from offset, copied out of the mapping.
func (l *Log) Read(offset uint64, max int) ([]Record, error) {
	if max <= 0 {
		return nil, nil
	}
	var records []Record
	var decodeErr error
	_, err := l.Scan(offset, func(v RecordView) bool {
		r, err := v.Record()
		if err != nil {
			decodeErr = err
			return false
		}
		records = append(records, r)
		return len(records) < max
	})
	if err == nil {
		err = decodeErr
	}
	return records, err
}

// OffsetAt returns the offset of the first record whose timestamp is at or
// after timestamp, or the end offset when there is none. It fails only
// with ErrFault, when an index file was truncated under its mapping.
func (l *Log) OffsetAt(timestamp int64) (uint64, error) {
	end := l.endOffset.Load()
	segments := *l.segments.Load()
	for i, seg := range segments {
		if !seg.acquire() {
			continue // deleted by retention: everything in it is older
		}
		offset, found, err := seg.offsetAt(timestamp, end, i == len(segments)-1)
		seg.release()
		if err != nil || found {
			return offset, err
		}
	}
	return end, nil
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
