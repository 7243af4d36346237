package logstore

// Appending: the writer's path, from a record handed to Append or
// AppendBatch to its publication to readers.

import (
	"fmt"
	"time"
)

// Append stores one record and returns its offset and timestamp. A zero
// timestamp means now; a timestamp below the previous record's is raised
// to it, so timestamps never decrease within a log. Under SyncAlways the
// record is durable when Append returns; otherwise use WaitDurable.
func (l *Log) Append(timestamp int64, headers Headers, data []byte) (uint64, int64, error) {
	offset, timestamp, err := l.appendRecord(timestamp, headers, data)
	if err != nil {
		return 0, 0, err
	}
	return offset, timestamp, l.published(offset)
}

// appendRecord writes and publishes one record under writeMu.
func (l *Log) appendRecord(timestamp int64, headers Headers, data []byte) (uint64, int64, error) {
	headersLen := encodedHeadersSize(headers)
	size := int64(recordSize(headersLen, len(data)))

	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.appendableLocked(); err != nil {
		return 0, 0, err
	}
	if err := l.fitsLocked(size); err != nil {
		return 0, 0, err
	}
	seg := l.active
	if err := seg.ensureSpace(size, 1); err != nil {
		return 0, 0, err
	}
	timestamp = stamp(timestamp, l.lastTimestamp, l.opts.Now)
	offset := l.endOffset.Load()
	if err := seg.writeRecord(seg.writePos, size, offset, timestamp, headers, headersLen, data); err != nil {
		return 0, 0, err
	}
	seg.indexLocked(offset, timestamp, PayloadSize(headers, data), size)
	l.publishLocked(seg, offset+1, timestamp)
	return offset, timestamp, nil
}

// Entry is one record for AppendBatch.
type Entry struct {
	// Timestamp is as for Append: zero means now, and one below the
	// previous record's is raised to it. AppendBatch sets it to the
	// timestamp stored.
	Timestamp int64
	Headers   Headers
	Data      []byte
}

// batchPieces bounds the records of one write: at most two iovecs each,
// and the kernel takes at most 1024 (IOV_MAX) in one pwritev.
const batchPieces = 1024

// inlineData is the largest record data AppendBatch copies next to the
// record's head rather than giving the kernel its own iovec: for small
// records an iovec costs more than the copy.
const inlineData = 512

// AppendBatch stores entries in order, with the same result as calling
// Append for each, but copies as many as fit in the active segment with
// one pwritev: a writer that has several records at hand (capture under
// load) pays one system call for them and no page faults. Small records
// written one by one go through the mapping instead (Append).
//
// It returns the offset of the first entry and how many were stored. When
// that is fewer than len(entries), err says why entries[n] was not; none
// after it was tried. Entries stored are published to readers; under
// SyncAlways they are durable when it returns, unless err is not nil with
// n == len(entries): all were stored, and their sync failed.
func (l *Log) AppendBatch(entries []Entry) (first uint64, n int, err error) {
	first, n, err = l.appendBatch(entries)
	if n == 0 {
		return first, 0, err
	}
	if syncErr := l.published(first + uint64(n) - 1); syncErr != nil {
		return first, n, syncErr
	}
	return first, n, err
}

// AppendAt stores entries as exact copies of another log's records: the
// first at offset, which must be this log's end offset (else an
// *EndError, ErrNotAtEnd), each with its own timestamp, stored as given
// (one that is not above zero, or below the record's before it, is
// ErrTimestampOrder: a copy never changes a timestamp, where Append
// would raise it). A replica appends what its leader sent this way, so
// that both logs hold the same records at the same offsets.
//
// It returns how many were stored, in order from the first; the error,
// when n < len(entries), is about entries[n], as for AppendBatch; when
// n == len(entries) it says their sync failed under SyncAlways.
func (l *Log) AppendAt(offset uint64, entries []Entry) (n int, err error) {
	n, err = l.appendAt(offset, entries)
	if n == 0 {
		return 0, err
	}
	if syncErr := l.published(offset + uint64(n) - 1); syncErr != nil {
		return n, syncErr
	}
	return n, err
}

func (l *Log) appendAt(offset uint64, entries []Entry) (int, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.appendableLocked(); err != nil {
		return 0, err
	}
	if end := l.endOffset.Load(); offset != end {
		return 0, &EndError{Offset: offset, End: end}
	}
	// The timestamps are checked first, so that stamp (which raises a
	// timestamp below the last, and fills in a zero) finds nothing to do.
	last, valid := l.lastTimestamp, len(entries)
	for i := range entries {
		if ts := entries[i].Timestamp; ts <= 0 || ts < last {
			valid = i
			break
		}
		last = entries[i].Timestamp
	}
	_, n, err := l.appendBatchLocked(entries[:valid])
	if err == nil && n < len(entries) {
		err = fmt.Errorf("%w: offset %d has timestamp %d, the record before it %d",
			ErrTimestampOrder, offset+uint64(n), entries[n].Timestamp, l.lastTimestamp)
	}
	return n, err
}

// appendBatch writes and publishes entries under writeMu, as many at a
// time as one pwritev takes.
func (l *Log) appendBatch(entries []Entry) (first uint64, n int, err error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.appendBatchLocked(entries)
}

// appendBatchLocked is appendBatch for a caller that holds writeMu.
func (l *Log) appendBatchLocked(entries []Entry) (first uint64, n int, err error) {
	first = l.endOffset.Load()
	if err := l.appendableLocked(); err != nil {
		return first, 0, err
	}
	for n < len(entries) {
		k, err := l.writeBatchLocked(entries[n:])
		n += k
		if err != nil {
			return first, n, err
		}
	}
	return first, n, nil
}

// writeBatchLocked writes the longest prefix of entries that fits in the
// active segment (rotating first if not even one does) with one pwritev,
// and publishes it. It returns how many it stored; an error is about
// entries[k]. The caller holds writeMu.
func (l *Log) writeBatchLocked(entries []Entry) (int, error) {
	k, size, headsSize, err := l.measureBatchLocked(entries)
	if err != nil {
		return 0, err
	}
	seg := l.active
	if err := seg.ensureSpace(size, int64(k)); err != nil {
		return 0, err
	}
	offset := l.endOffset.Load()
	pieces, lastTimestamp := l.encodeBatchLocked(entries[:k], offset, headsSize)
	err = seg.writeVectors(pieces, seg.writePos, size)
	clear(pieces) // keep no reference to the caller's data
	l.batchPieces = pieces[:0]
	if err != nil {
		return 0, err
	}
	for i := range entries[:k] {
		e := &entries[i]
		seg.indexLocked(offset+uint64(i), e.Timestamp, PayloadSize(e.Headers, e.Data), int64(recordSize(l.batchLens[i], len(e.Data))))
	}
	l.publishLocked(seg, offset+uint64(k), lastTimestamp)
	return k, nil
}

// measureBatchLocked finds how many of entries the next write takes (k):
// as many as fit in the active segment and in one pwritev, the first of
// them after a rotation if it does not fit. It returns their bytes on
// disk, the bytes of the buffer their heads (and small data) are encoded
// into, and leaves the length of each one's header block in l.batchLens.
// An error is about entries[0]. The caller holds writeMu.
func (l *Log) measureBatchLocked(entries []Entry) (k int, size, headsSize int64, err error) {
	seg := l.active
	lens := l.batchLens[:0] // encoded header block of each record
	for ; k < len(entries) && 2*(k+1) <= batchPieces; k++ {
		e := &entries[k]
		headersLen := encodedHeadersSize(e.Headers)
		recSize := int64(recordSize(headersLen, len(e.Data)))
		if k > 0 && (recSize > l.opts.maxRecordSize() || seg.writePos+size+recSize > seg.capacity()) {
			break // the next write starts with it
		}
		if k == 0 {
			if err := l.fitsLocked(recSize); err != nil {
				return 0, 0, 0, err
			}
			seg = l.active
		}
		size += recSize
		headsSize += int64(recordHeaderSize + headersLen)
		if len(e.Data) <= inlineData {
			headsSize += int64(len(e.Data))
		}
		lens = append(lens, headersLen)
	}
	l.batchLens = lens
	return k, size, headsSize, nil
}

// encodeBatchLocked stamps entries (the first at offset) and encodes
// every record's head into one buffer, with the data of small records
// after it; larger data is written from where it is. It returns the
// pieces for pwritev and the last timestamp. The caller holds writeMu.
func (l *Log) encodeBatchLocked(entries []Entry, offset uint64, headsSize int64) (pieces [][]byte, lastTimestamp int64) {
	if int64(cap(l.batchHeads)) < headsSize {
		l.batchHeads = make([]byte, headsSize)
	}
	heads := l.batchHeads[:headsSize]
	pieces = l.batchPieces[:0]
	lastTimestamp = l.lastTimestamp
	var nowNanos int64 // one "now" for the batch
	now := func() time.Time {
		if nowNanos == 0 {
			nowNanos = l.opts.Now().UnixNano()
		}
		return time.Unix(0, nowNanos)
	}
	at, run := 0, 0 // heads[run:at] is the piece being built
	for i := range entries {
		e := &entries[i]
		e.Timestamp = stamp(e.Timestamp, lastTimestamp, now)
		lastTimestamp = e.Timestamp
		head := heads[at : at+recordHeaderSize+l.batchLens[i]]
		at += len(head)
		encodeRecordHead(head, offset+uint64(i), e.Timestamp, e.Headers, l.batchLens[i], e.Data)
		if len(e.Data) <= inlineData {
			at += copy(heads[at:], e.Data)
			continue
		}
		pieces = append(pieces, heads[run:at], e.Data)
		run = at
	}
	if at > run {
		pieces = append(pieces, heads[run:at])
	}
	return pieces, lastTimestamp
}

// fitsLocked checks that a record of size bytes can be stored, and
// rotates to a new segment when the active one has no room for it. The
// caller holds writeMu.
func (l *Log) fitsLocked(size int64) error {
	if size > l.opts.maxRecordSize() {
		return fmt.Errorf("%w: %d bytes with framing, a segment holds at most %d", ErrRecordTooLarge, size, l.opts.maxRecordSize())
	}
	if l.active.writePos+size > l.active.capacity() {
		return l.rotateLocked()
	}
	return nil
}

// stamp is a record's timestamp: now for zero, and never below last.
func stamp(timestamp, last int64, now func() time.Time) int64 {
	if timestamp == 0 {
		timestamp = now().UnixNano()
	}
	return max(timestamp, last)
}

// publishLocked raises the end offset to end, the records below it being
// written and indexed in seg, the newest with timestamp last: readers see
// them from now on. The caller holds writeMu.
func (l *Log) publishLocked(seg *segment, end uint64, last int64) {
	seg.lastTimestamp.Store(last)
	seg.count.Store(end - seg.baseOffset)
	l.lastTimestamp = last
	l.endOffset.Store(end)
	if l.opts.Sync == SyncNone {
		l.durable.Store(end)
	}
	l.prepareAheadLocked(seg)
}

// appendableLocked is why the log takes no append, or nil. The caller
// holds writeMu.
func (l *Log) appendableLocked() error {
	if l.closed {
		return ErrClosed
	}
	if l.openErr != nil {
		return l.openErr
	}
	return l.stickySyncErr()
}
