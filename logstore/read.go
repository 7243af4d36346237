package logstore

import (
	"fmt"
	"runtime/debug"
	"sort"
)

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
	var prev *segment
	for next < end {
		seg, err := l.acquireSegment(next, end)
		if err != nil {
			return next, err
		}
		if prev != nil && prev.dropped.Load() {
			// A truncation dropped what follows prev (truncate.go): the
			// records there now are not the ones end counted. Stop where
			// the records read end, so that one Scan never mixes the log
			// before a truncation with the log after it.
			seg.release()
			return next, nil
		}
		more, err := scanSegment(seg, &next, end, fn)
		seg.release()
		if err != nil || !more {
			return next, err
		}
		prev = seg
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
		// Below end, only a truncation (truncate.go) leaves no record
		// here: the records end counted were dropped. Stop.
		return false, nil
	}
	bytes := seg.logBytes()
	position := seg.locate(bytes, *next)
	for *next < last {
		if position < fileHeaderSize || position >= int64(len(bytes)) {
			return false, &CorruptionError{Path: seg.indexPath(), Position: position, Offset: *next, Reason: "index points outside the segment"}
		}
		view, status, reason := decodeRecord(bytes[position:])
		if status != decodeOK {
			if status == decodeEnd {
				reason = "record missing"
			}
			return false, &CorruptionError{Path: seg.logPath(), Position: position, Offset: *next, Reason: reason}
		}
		if view.Offset != *next {
			return false, &CorruptionError{Path: seg.logPath(), Position: position, Offset: *next, Reason: fmt.Sprintf("record holds offset %d", view.Offset)}
		}
		*next++
		if !fn(view) {
			return false, nil
		}
		position += int64(view.size)
	}
	return *next < end, nil
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
