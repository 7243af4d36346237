package logstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Log is the append-only log of one subject: a sequence of segments named
// by their base offsets.
//
// Concurrency. One writer at a time: Append, rotation, retention and Close
// hold writeMu. Readers never take it. They load the immutable segment list
// and the end offset (the high-water mark) from atomics, take a reference
// on the segment they read, and look only at records below the end offset.
// The writer stores a record and its index entry before it publishes the
// new end offset, so a reader never sees a partial record. A segment that
// retention deletes stays mapped until the last reader releases it.
type Log struct {
	subject string
	dir     string
	opts    *Options

	// Published to readers.
	segments    atomic.Pointer[[]*segment] // oldest first; replaced, never modified
	firstOffset atomic.Uint64
	endOffset   atomic.Uint64 // records below it are complete and readable
	durable     atomic.Uint64 // records below it are durable (fdatasync returned)

	writeMu sync.Mutex
	// Guarded by writeMu.
	active        *segment
	lastTimestamp int64
	closed        bool
	// openErr is corruption found when the log was opened: the log serves
	// what comes before it and refuses appends.
	openErr error

	// syncErr is the sticky error of a failed sync (nil while all is well).
	syncErr atomic.Pointer[error]

	// signalMu guards the two broadcast channels. A channel is made by the
	// first waiter and closed (then dropped) by the next append or sync, so
	// an append with nobody waiting costs an atomic load.
	signalMu   sync.Mutex
	appended   chan struct{}
	synced     chan struct{}
	hasWaiters atomic.Bool
	closedCh   chan struct{}

	kick       chan struct{} // wakes the syncer
	lazyArmed  atomic.Bool   // a lazy sync is scheduled (SyncBatch)
	syncerDone chan struct{}

	// Guarded by writeMu: AppendBatch's buffers, kept between calls.
	batchHeads  []byte
	batchPieces [][]byte
	batchLens   []int
}

// Subject is the subject this log stores.
func (l *Log) Subject() string { return l.subject }

// FirstOffset is the lowest offset still held.
func (l *Log) FirstOffset() uint64 { return l.firstOffset.Load() }

// EndOffset is the offset the next record will get.
func (l *Log) EndOffset() uint64 { return l.endOffset.Load() }

// DurableOffset is the end of the durable prefix: every record below it has
// been made durable by fdatasync (or by Close).
func (l *Log) DurableOffset() uint64 { return l.durable.Load() }

// Err reports corruption found when the log was opened, or a failed sync;
// a log with such an error refuses appends.
func (l *Log) Err() error {
	l.writeMu.Lock()
	openErr := l.openErr
	l.writeMu.Unlock()
	if openErr != nil {
		return openErr
	}
	return l.stickySyncErr()
}

// stickySyncErr is the error of the sync that failed, or nil.
func (l *Log) stickySyncErr() error {
	if p := l.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Append stores one record and returns its offset and timestamp. A zero
// timestamp means now; a timestamp below the previous record's is raised
// to it, so timestamps never decrease within a log. Under SyncAlways the
// record is durable when Append returns; otherwise use WaitDurable.
func (l *Log) Append(timestamp int64, headers Headers, data []byte) (uint64, int64, error) {
	offset, timestamp, err := l.appendLocked(timestamp, headers, data)
	if err != nil {
		return 0, 0, err
	}
	return offset, timestamp, l.published(offset)
}

// published follows appends up to last: it wakes readers waiting for new
// records and starts (SyncBatch) or waits for (SyncAlways) the sync.
func (l *Log) published(last uint64) error {
	if l.hasWaiters.Load() {
		l.broadcast(&l.appended)
	}
	switch l.opts.Sync {
	case SyncBatch:
		l.armLazySync()
	case SyncAlways:
		l.kickSyncer()
		return l.WaitDurable(context.Background(), last)
	}
	return nil
}

func (l *Log) appendLocked(timestamp int64, headers Headers, data []byte) (uint64, int64, error) {
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
	first, n, err = l.appendBatchLocked(entries)
	if n == 0 {
		return first, 0, err
	}
	if syncErr := l.published(first + uint64(n) - 1); syncErr != nil {
		return first, n, syncErr
	}
	return first, n, err
}

func (l *Log) appendBatchLocked(entries []Entry) (first uint64, n int, err error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
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
// entries[k].
func (l *Log) writeBatchLocked(entries []Entry) (int, error) {
	seg := l.active
	lens := l.batchLens[:0] // encoded header block of each record
	var size, headsSize int64
	k := 0
	for ; k < len(entries) && 2*(k+1) <= batchPieces; k++ {
		e := &entries[k]
		headersLen := encodedHeadersSize(e.Headers)
		recSize := int64(recordSize(headersLen, len(e.Data)))
		if k > 0 && (recSize > l.opts.maxRecordSize() || seg.writePos+size+recSize > seg.capacity()) {
			break // the next write starts with it
		}
		if k == 0 {
			if err := l.fitsLocked(recSize); err != nil {
				return 0, err
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
	if err := seg.ensureSpace(size, int64(k)); err != nil {
		return 0, err
	}

	// Encode every record's head into one buffer, with the data of small
	// records after it; larger data is written from where it is.
	if int64(cap(l.batchHeads)) < headsSize {
		l.batchHeads = make([]byte, headsSize)
	}
	heads := l.batchHeads[:headsSize]
	pieces := l.batchPieces[:0]
	offset := l.endOffset.Load()
	lastTimestamp := l.lastTimestamp
	var nowNanos int64 // one "now" for the batch
	now := func() time.Time {
		if nowNanos == 0 {
			nowNanos = l.opts.Now().UnixNano()
		}
		return time.Unix(0, nowNanos)
	}
	at, run := 0, 0 // heads[run:at] is the piece being built
	for i := range entries[:k] {
		e := &entries[i]
		e.Timestamp = stamp(e.Timestamp, lastTimestamp, now)
		lastTimestamp = e.Timestamp
		head := heads[at : at+recordHeaderSize+lens[i]]
		at += len(head)
		encodeRecordHead(head, offset+uint64(i), e.Timestamp, e.Headers, lens[i], e.Data)
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
	err := seg.writeVectors(pieces, seg.writePos, size)
	clear(pieces) // keep no reference to the caller's data
	l.batchPieces = pieces[:0]
	if err != nil {
		return 0, err
	}

	for i := range entries[:k] {
		e := &entries[i]
		seg.indexLocked(offset+uint64(i), e.Timestamp, PayloadSize(e.Headers, e.Data), int64(recordSize(lens[i], len(e.Data))))
	}
	l.publishLocked(seg, offset+uint64(k), lastTimestamp)
	return k, nil
}

// fitsLocked checks that a record of size bytes can be stored, and
// rotates to a new segment when the active one has no room for it.
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
// them from now on.
func (l *Log) publishLocked(seg *segment, end uint64, last int64) {
	seg.lastTimestamp.Store(last)
	seg.count.Store(end - seg.baseOffset)
	l.lastTimestamp = last
	l.endOffset.Store(end)
	if l.opts.Sync == SyncNone {
		l.durable.Store(end)
	}
}

func (l *Log) appendableLocked() error {
	if l.closed {
		return ErrClosed
	}
	if l.openErr != nil {
		return l.openErr
	}
	return l.stickySyncErr()
}

// rotateLocked seals the active segment and starts a new one at the end
// offset. The sealed segment is synced first (under SyncNone it is only
// marked, for the next Sync or Close), so that every segment but the
// newest is durable and the syncer only ever syncs the newest.
func (l *Log) rotateLocked() error {
	old := l.active
	if l.opts.Sync == SyncNone {
		old.unsynced = true
	} else {
		if err := old.syncData(); err != nil {
			l.failSync(err)
			return err
		}
		if err := old.syncIndex(); err != nil {
			l.failSync(err)
			return err
		}
	}
	next, err := createSegment(l.dir, l.endOffset.Load(), l.opts)
	if err != nil {
		return err
	}
	l.active = next
	segments := append(slices.Clone(*l.segments.Load()), next)
	l.segments.Store(&segments)
	l.applyRetentionLocked()
	return nil
}

// lazySyncDelay bounds how long, under SyncBatch, a record that nobody
// waits for stays unsynced. A waiter (WaitDurable) starts a sync at once;
// records without one are synced together at most this long after the
// first of them, so capture at full speed costs a few fdatasyncs a second
// instead of one after another.
const lazySyncDelay = 20 * time.Millisecond

// armLazySync makes sure a sync comes within lazySyncDelay.
func (l *Log) armLazySync() {
	if l.lazyArmed.CompareAndSwap(false, true) {
		time.AfterFunc(lazySyncDelay, func() {
			l.lazyArmed.Store(false)
			l.kickSyncer()
		})
	}
}

// RequestSync starts a sync now under SyncBatch (a waiter is coming) and
// returns without waiting for it; under other policies it does nothing.
func (l *Log) RequestSync() {
	if l.opts.Sync == SyncBatch {
		l.kickSyncer()
	}
}

// kickSyncer wakes the syncer without blocking; one pending wake-up is
// enough because a sync covers everything appended before it starts.
func (l *Log) kickSyncer() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// runSyncer is the group commit loop of SyncBatch, SyncAlways and
// SyncInterval. Each round syncs everything appended before it started;
// appends that arrive meanwhile wait for the next round, together.
func (l *Log) runSyncer() {
	defer close(l.syncerDone)
	var tick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		ticker := time.NewTicker(l.opts.SyncInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case <-l.closedCh:
			return
		case _, ok := <-l.kick:
			if !ok {
				return
			}
			if l.opts.Sync == SyncInterval {
				continue
			}
		case <-tick:
		}
		l.syncOnce()
	}
}

// syncOnce makes everything appended so far durable.
func (l *Log) syncOnce() {
	l.writeMu.Lock()
	if l.closed {
		l.writeMu.Unlock()
		return
	}
	target := l.endOffset.Load()
	seg := l.active
	seg.acquire() // the writer's list reference is held, so this succeeds
	l.writeMu.Unlock()
	defer seg.release()

	if target <= l.durable.Load() {
		return
	}
	if err := seg.syncData(); err != nil {
		l.failSync(err)
		return
	}
	l.markDurable(target)
}

func (l *Log) markDurable(target uint64) {
	for {
		current := l.durable.Load()
		if target <= current || l.durable.CompareAndSwap(current, target) {
			break
		}
	}
	l.broadcast(&l.synced)
}

// failSync records a failed sync. It is never retried: after a failed
// fdatasync the kernel may have dropped the dirty pages, and a later sync
// that succeeds proves nothing about them.
func (l *Log) failSync(err error) {
	if l.syncErr.CompareAndSwap(nil, &err) {
		l.opts.Logger.Error("logstore: sync failed; log refuses appends until reopened", "subject", l.subject, "err", err)
	}
	l.broadcast(&l.synced)
}

// broadcast wakes everyone waiting on *ch.
func (l *Log) broadcast(ch *chan struct{}) {
	l.signalMu.Lock()
	if *ch != nil {
		close(*ch)
		*ch = nil
	}
	if ch == &l.appended {
		l.hasWaiters.Store(false)
	}
	l.signalMu.Unlock()
}

// waitChannel returns the channel that the next broadcast on *ch closes.
// For appends it raises hasWaiters before the caller checks the end offset;
// Append stores the end offset before it reads hasWaiters, so one of the
// two always sees the other and no wake-up is lost.
func (l *Log) waitChannel(ch *chan struct{}) <-chan struct{} {
	l.signalMu.Lock()
	defer l.signalMu.Unlock()
	if *ch == nil {
		*ch = make(chan struct{})
	}
	if ch == &l.appended {
		l.hasWaiters.Store(true)
	}
	return *ch
}

// WaitDurable waits until the record at offset is durable under the sync
// policy, the context ends, or durability can no longer be promised (a
// failed sync: ErrSyncFailed). Under SyncNone a record is "durable" once
// appended. offset must be below the end offset.
func (l *Log) WaitDurable(ctx context.Context, offset uint64) error {
	if end := l.endOffset.Load(); offset >= end {
		return &RangeError{Offset: offset, First: l.firstOffset.Load(), End: end}
	}
	if l.opts.Sync == SyncBatch && l.durable.Load() <= offset {
		l.kickSyncer() // a waiter: group commit now, with whoever else waits
	}
	for {
		ch := l.waitChannel(&l.synced)
		if l.durable.Load() > offset {
			return nil
		}
		if err := l.stickySyncErr(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.closedCh:
			if l.durable.Load() > offset {
				return nil
			}
			return ErrClosed
		}
	}
}

// WaitFor waits until a record exists at offset (offset < end offset), the
// context ends, or the log is closed. It returns true when the record is
// there. Waiters are woken by the append itself, not by a timer.
func (l *Log) WaitFor(ctx context.Context, offset uint64) bool {
	for {
		ch := l.waitChannel(&l.appended)
		if l.endOffset.Load() > offset {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return l.endOffset.Load() > offset
		case <-l.closedCh:
			return l.endOffset.Load() > offset
		}
	}
}

// Closed returns a channel that is closed when the log closes.
func (l *Log) Closed() <-chan struct{} { return l.closedCh }

// Sync makes every record appended so far durable, whatever the policy.
func (l *Log) Sync() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.syncLocked()
}

func (l *Log) syncLocked() error {
	if l.active == nil { // opened read-only after corruption: nothing to sync
		return nil
	}
	if err := l.stickySyncErr(); err != nil {
		return err
	}
	target := l.endOffset.Load()
	for _, seg := range *l.segments.Load() {
		if !seg.unsynced {
			continue
		}
		err := seg.syncData()
		if err == nil {
			err = seg.syncIndex()
		}
		if err != nil {
			l.failSync(err)
			return err
		}
		seg.unsynced = false
	}
	if err := l.active.syncData(); err != nil {
		l.failSync(err)
		return err
	}
	l.markDurable(target)
	return nil
}

// Close makes everything durable, wakes all waiters, and releases the
// files once no reader holds them.
func (l *Log) Close() error {
	l.writeMu.Lock()
	if l.closed {
		l.writeMu.Unlock()
		return nil
	}
	var err error
	if l.active != nil {
		err = l.syncLocked()
		if err == nil {
			err = l.active.syncIndex()
		}
	}
	l.closed = true
	close(l.closedCh)
	segments := *l.segments.Load()
	l.writeMu.Unlock()

	if l.syncerDone != nil {
		<-l.syncerDone
	}
	l.broadcast(&l.appended)
	l.broadcast(&l.synced)
	for _, s := range segments {
		s.release()
	}
	return err
}

// Info is a summary of a log.
type Info struct {
	Subject        string
	FirstOffset    uint64
	EndOffset      uint64
	Bytes          int64 // data+header bytes held
	FirstTimestamp int64 // 0 when empty
	LastTimestamp  int64 // 0 when empty
	Segments       int
}

// Info summarises the log as it is now.
func (l *Log) Info() Info {
	segments := *l.segments.Load()
	info := Info{
		Subject:     l.subject,
		FirstOffset: l.firstOffset.Load(),
		EndOffset:   l.endOffset.Load(),
		Segments:    len(segments),
	}
	for _, s := range segments {
		info.Bytes += s.payloadBytes.Load()
	}
	for _, s := range segments {
		if s.count.Load() > 0 {
			if info.FirstTimestamp == 0 {
				info.FirstTimestamp = s.firstTimestamp.Load()
			}
			info.LastTimestamp = s.lastTimestamp.Load()
		}
	}
	return info
}

// removeSegmentFiles unlinks a segment's files; the mapping stays valid.
func removeSegmentFiles(s *segment) error {
	if err := os.Remove(s.logPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: delete segment: %w", err)
	}
	if err := os.Remove(s.indexPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: delete index: %w", err)
	}
	return nil
}

// ApplyRetention deletes the oldest segments while a retention limit is
// exceeded and returns how many it deleted.
func (l *Log) ApplyRetention() int {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.closed || l.openErr != nil {
		return 0
	}
	return l.applyRetentionLocked()
}

func (l *Log) applyRetentionLocked() int {
	limits := l.opts.Retention
	if limits == (Retention{}) {
		return 0
	}
	segments := *l.segments.Load()
	var totalBytes int64
	for _, s := range segments {
		totalBytes += s.payloadBytes.Load()
	}
	end := l.endOffset.Load()
	now := l.opts.Now().UnixNano()
	// A segment goes when every record in it is past a limit: older than
	// MaxAge, or with at least MaxBytes / MaxMessages newer than it. So a
	// log keeps at least its newest MaxMessages records and MaxBytes bytes,
	// and at most one segment more.
	drop := 0
	for i, s := range segments[:len(segments)-1] { // never the active segment
		newerBytes := totalBytes - s.payloadBytes.Load()
		newerMessages := end - segments[i+1].baseOffset
		expired := limits.MaxAge > 0 && s.lastTimestamp.Load() < now-int64(limits.MaxAge)
		tooBig := limits.MaxBytes > 0 && newerBytes >= limits.MaxBytes
		tooMany := limits.MaxMessages > 0 && newerMessages >= limits.MaxMessages
		if !expired && !tooBig && !tooMany {
			break
		}
		totalBytes = newerBytes
		drop++
	}
	if drop == 0 {
		return 0
	}
	kept := slices.Clone(segments[drop:])
	l.segments.Store(&kept)
	l.firstOffset.Store(kept[0].baseOffset)
	// Oldest first: a crash part way leaves a contiguous suffix behind.
	for _, s := range segments[:drop] {
		s.deleted.Store(true)
		if err := removeSegmentFiles(s); err != nil {
			l.opts.Logger.Error("logstore: retention", "subject", l.subject, "err", err)
		} else {
			l.opts.Observer.DiskBytes(-(s.logAllocated.Load() + s.indexAllocated.Load()))
		}
		s.release()
	}
	l.opts.Observer.RetentionDeleted(drop)
	if err := syncDir(l.dir); err != nil {
		l.opts.Logger.Error("logstore: retention", "subject", l.subject, "err", err)
	}
	l.opts.Logger.Debug("logstore: retention deleted segments", "subject", l.subject, "segments", drop, "first_offset", kept[0].baseOffset)
	return drop
}
