package logstore

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
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
// Background work (the syncer, durability.go; the pipeline that prepares
// and commits segments, rotation.go) never writes records: it syncs,
// creates and renames files.
type Log struct {
	subject string
	opts    *Options

	// Published to readers.
	segments    atomic.Pointer[[]*segment] // oldest first; replaced, never modified
	firstOffset atomic.Uint64
	endOffset   atomic.Uint64 // records below it are complete and readable
	durable     atomic.Uint64 // records below it are durable (fdatasync returned)

	writeMu sync.Mutex
	// Guarded by writeMu.
	dir           string // changes once, when a new subject's directory gets its name (relocateLocked)
	active        *segment
	lastTimestamp int64
	closed        bool
	// openErr is corruption found when the log was opened: the log serves
	// what comes before it and refuses appends.
	openErr error
	// placed: the log's directory has its final name, so the pipeline
	// may make files in it (a new subject's log is written in a
	// temporary directory first; see Store.Append).
	placed bool

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

	pipeline pipeline // the next segment, prepared ahead (rotation.go)

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

// OpenLog opens (or creates) the log of subject in dir, recovering it as
// the package documentation describes. When the log holds corruption,
// OpenLog returns the log, readable up to the corruption and refusing
// appends, together with a *CorruptionError.
func OpenLog(dir, subject string, opts Options) (*Log, error) {
	resolved, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return openLog(dir, subject, &resolved, false, true, 0)
}

// openLog opens the log in dir. closedClean says this process closed it
// successfully (everything synced) and nothing has written to it since, so
// the sync of what recovery finds can be skipped. placed says dir has its
// final name (see Log.placed). A dir with no segment gets a first one at
// offset base (0, or where a copy of another member's log starts). It
// tells the Observer what it found exactly once, whichever way it returns:
// a log that cannot be opened is reported as failed, not left out.
func openLog(dir, subject string, opts *Options, closedClean, placed bool, base uint64) (opened *Log, err error) {
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
		placed:   placed,
		closedCh: make(chan struct{}),
		kick:     make(chan struct{}, 1),
	}
	segments, openErr := recoverSegments(dir, opts, &report)
	var corrupt *CorruptionError
	if openErr != nil && !errors.As(openErr, &corrupt) {
		return nil, openErr
	}
	report.Corrupt = corrupt != nil
	if len(segments) == 0 && corrupt != nil {
		// The very first segment is damaged: an empty log that refuses
		// appends, positioned where that segment starts.
		l.segments.Store(&segments)
		l.firstOffset.Store(corrupt.Offset)
		l.endOffset.Store(corrupt.Offset)
		l.durable.Store(corrupt.Offset)
		l.openErr = openErr
		return l, openErr
	}
	segments, err = l.makeDurable(segments, closedClean, report.TornBytes > 0, base)
	if err != nil {
		return nil, err
	}
	// Every segment now has its <base> names (recovery named any that a
	// rotation had swapped in) and its header durable: committed, so the
	// first sync has nothing to rename and the pipeline may prepare the
	// next segment at once (without this, a log reopened under SyncNone
	// never prepared ahead, and rotated inline).
	for _, seg := range segments {
		seg.committed.Store(true)
	}
	newest := segments[len(segments)-1]
	l.segments.Store(&segments)
	l.firstOffset.Store(segments[0].baseOffset)
	end := newest.baseOffset + newest.count.Load()
	l.endOffset.Store(end)
	l.durable.Store(end) // synced by makeDurable
	l.lastTimestamp = newest.lastTimestamp.Load()
	if len(segments) > 1 && newest.count.Load() == 0 {
		l.lastTimestamp = segments[len(segments)-2].lastTimestamp.Load()
	}
	if corrupt != nil {
		l.openErr = openErr
		return l, openErr
	}
	l.writeMu.Lock()
	l.active = newest
	l.applyRetentionLocked()
	l.writeMu.Unlock()
	if opts.Sync != SyncNone {
		l.syncerDone = make(chan struct{})
		go l.runSyncer()
	}
	return l, nil
}

// makeDurable makes what recovery found durable before the log calls it
// so. It may still be only in the page cache (a writer that died under
// SyncNone, or whose sync failed), and a torn tail was zeroed in it: every
// segment is synced. Not needed for a log this store closed cleanly (Close
// synced it), unless a tail was cut, nor for a new log, whose first
// segment createSegment makes and syncs. It releases the segments when it
// fails.
func (l *Log) makeDurable(segments []*segment, closedClean, tailCut bool, base uint64) ([]*segment, error) {
	if len(segments) == 0 {
		seg, err := createSegment(l.dir, base, l.opts)
		if err != nil {
			return nil, err
		}
		return []*segment{seg}, nil
	}
	if closedClean && !tailCut {
		return segments, nil
	}
	for _, seg := range segments {
		if err := seg.syncData(); err != nil {
			for _, s := range segments {
				s.release()
			}
			return nil, err
		}
	}
	return segments, nil
}

// relocateLocked points the log at dir, the name its directory was just
// given, and lets the pipeline work in it. The store calls it once, for a
// new subject's log, before anyone else can see the log; the caller holds
// writeMu.
func (l *Log) relocateLocked(dir string) {
	l.dir = dir
	for _, seg := range *l.segments.Load() {
		paths := pathsIn(dir, seg.baseOffset)
		seg.paths.Store(&paths)
	}
	l.placed = true
}

// Close makes everything durable, wakes all waiters, and releases the
// files once no reader holds them. A segment being prepared is finished
// and deleted first.
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
	l.pipeline.close()
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
