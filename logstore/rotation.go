package logstore

// Rotation: sealing the active segment when the next record does not fit
// in it, and the pipeline that takes the slow part of starting the next
// one off the append path.
//
// Making a segment costs two file creations, two fallocates, two mappings,
// an fdatasync of its header and one of its directory. Like etcd's
// file_pipeline.go, the pipeline makes the next segment ahead, while the
// active one fills, and commits it in the background after it is swapped
// in; so the append that rotates only writes two headers into mappings
// that are ready. A segment made by the pipeline goes through three
// states:
//
//  1. Prepared (the pipeline's worker): .prepared.log and .prepared.idx
//     are created in the log's directory, preallocated and mapped. They
//     have no header yet: nothing in them is a record, and recovery
//     deletes them.
//  2. Swapped in (the writer, in rotateLocked): the headers are written
//     through the mappings and the segment becomes the active one under
//     its prepared names; appends go into it at once. A kill now leaves a
//     .prepared.log with a valid header, which recovery names (step 1 of
//     recoverSegments).
//  3. Committed (the worker, asked at the swap, or whoever needs it
//     first: the syncer, Sync, Close, the next rotation): the .log is
//     synced (its header and the records so far), the .idx and then the
//     .log are renamed to <base>.idx and <base>.log, and the directory is
//     synced. Only then is a record in it called durable, so a power cut
//     that loses the header or the renames loses no record that was.
//
// The writer asks for the next segment once the active one is half full
// and committed (so the prepared names are free again). A rotation that
// finds the segment still being prepared waits for it; one that finds
// none (preparing failed, or was never asked for) creates the next one
// itself, as createSegment always did. Close waits for the worker and
// deletes a prepared segment not used.

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
)

// pipeline is a log's segment pipeline: its worker, the work asked of it,
// and the segment it has ready. The worker runs only while there is work.
type pipeline struct {
	mu sync.Mutex
	// Guarded by mu.
	ready     *segment      // prepared, waiting for a rotation
	preparing chan struct{} // non-nil while the worker prepares one; closed when it is done
	prepareIn string        // asked: prepare a segment in this directory
	commit    *segment      // asked: commit this swapped-in segment
	running   chan struct{} // non-nil while the worker runs; closed when it ends
	closed    bool

	// Guarded by the log's writeMu: rotations that swapped in a prepared
	// segment, and that created one inline (tests read them).
	swapped, inline int
}

// rotateLocked seals the active segment and starts a new one at the end
// offset: a prepared one when the pipeline has it ready, else one made
// now. The sealed segment is synced first (under SyncNone it is only
// marked, for the next Sync or Close), so that every segment but the
// newest is durable and the syncer only ever syncs the newest. The
// caller holds writeMu.
func (l *Log) rotateLocked() error {
	if err := l.sealLocked(l.active); err != nil {
		return err
	}
	base := l.endOffset.Load()
	next := l.pipeline.take()
	if next != nil {
		next.start(base)
		l.pipeline.swapped++
	} else {
		var err error
		if next, err = createSegment(l.dir, base, l.opts); err != nil {
			return err
		}
		l.pipeline.inline++
	}
	l.active = next
	segments := append(slices.Clone(*l.segments.Load()), next)
	l.segments.Store(&segments)
	if !next.committed.Load() {
		l.askPipelineLocked("", next)
	}
	l.applyRetentionLocked()
	return nil
}

// sealLocked makes the active segment ready to be sealed: committed (a
// sealed segment always has its name), and synced with its index unless
// the policy is SyncNone. The caller holds writeMu.
func (l *Log) sealLocked(seg *segment) error {
	if l.opts.Sync == SyncNone {
		if _, err := l.commit(seg); err != nil {
			return err
		}
		seg.unsynced = true
		return nil
	}
	if err := l.syncSegment(seg); err != nil {
		return err
	}
	if err := seg.syncIndex(); err != nil {
		l.failSync(err)
		return err
	}
	return nil
}

// prepareAheadLocked is called by the writer after it writes to seg, the
// active segment: once seg is half full and committed, it asks the
// pipeline to prepare the segment to follow it. The caller holds writeMu.
func (l *Log) prepareAheadLocked(seg *segment) {
	if seg.prepareAsked || !l.placed || seg.writePos < seg.capacity()/2 || !seg.committed.Load() {
		return
	}
	seg.prepareAsked = true
	l.askPipelineLocked(l.dir, nil)
}

// askPipelineLocked asks the worker to prepare a segment in dir (unless
// dir is "") and to commit seg (unless it is nil), and starts the worker
// if it is not running. The caller holds writeMu.
func (l *Log) askPipelineLocked(dir string, seg *segment) {
	p := &l.pipeline
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if dir != "" {
		p.prepareIn = dir
	}
	if seg != nil {
		p.commit = seg
	}
	if p.running == nil {
		p.running = make(chan struct{})
		go l.runPipeline(p.running)
	}
}

// runPipeline is the worker: it commits what it was asked to commit, then
// prepares a segment if asked and none is ready, and exits when nothing
// is left to do.
func (l *Log) runPipeline(done chan struct{}) {
	defer close(done)
	p := &l.pipeline
	for {
		p.mu.Lock()
		commit, dir := p.commit, ""
		p.commit = nil
		if commit == nil { // commits first: the prepared names are free after
			dir, p.prepareIn = p.prepareIn, ""
			if p.ready != nil || p.closed {
				dir = "" // one is ready already, or nobody will take it
			}
		}
		if commit == nil && dir == "" {
			p.running = nil
			p.mu.Unlock()
			return
		}
		if commit != nil {
			p.mu.Unlock()
			l.commit(commit) // a failure is recorded by failSync
			continue
		}
		preparing := make(chan struct{})
		p.preparing = preparing
		p.mu.Unlock()
		seg, err := prepareSegment(dir, l.opts)
		if err != nil {
			l.opts.Logger.Warn("logstore: cannot prepare the next segment; the rotation will make it", "subject", l.subject, "err", err)
		}
		p.mu.Lock()
		if seg != nil && !p.closed && p.ready == nil {
			p.ready, seg = seg, nil
		}
		p.preparing = nil
		close(preparing)
		p.mu.Unlock()
		if seg != nil {
			seg.discard()
		}
	}
}

// take returns the prepared segment, or nil when none is ready. A
// segment being prepared is waited for: it is further along than one
// made now would be, and making one now beside it only slows both.
func (p *pipeline) take() *segment {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.ready == nil && p.preparing != nil {
		preparing := p.preparing
		p.mu.Unlock()
		<-preparing
		p.mu.Lock()
	}
	seg := p.ready
	p.ready = nil
	return seg
}

// close stops the pipeline: it waits for the worker and deletes the
// prepared segment, if one is ready.
func (p *pipeline) close() {
	p.mu.Lock()
	p.closed = true
	running := p.running
	p.mu.Unlock()
	if running != nil {
		<-running
	}
	if seg := p.take(); seg != nil {
		seg.discard()
	}
}

// prepareSegment makes a segment ahead of a rotation (state 1 above): its
// files created under the prepared names in dir, preallocated, mapped, and
// their first pages faulted in.
// Nothing is synced: until it is committed, nothing in it is durable, and
// recovery deletes it or names it by what it finds (the commit's one sync
// makes the allocation durable with the header).
func prepareSegment(dir string, opts *Options) (*segment, error) {
	paths := segmentPaths{log: filepath.Join(dir, preparedLogName), index: filepath.Join(dir, preparedIndexName)}
	s, err := openSegment(paths, 0, segmentCreate, opts)
	if err != nil {
		return nil, err
	}
	if err := s.allocate(opts, "preparing segment"); err != nil {
		s.discard()
		return nil, err
	}
	// The first store to the mapping of a new file costs the file system
	// milliseconds (ext4: measured at 2-3 ms), which would otherwise be
	// the swap's, writing the headers. Zeros: still nothing is written.
	s.logMap[0], s.indexMap[0] = 0, 0
	return s, nil
}

// commit gives seg, swapped in by a rotation, its name (state 3 above),
// unless it has it already; it says whether it synced the .log. A failure
// is recorded by failSync: the log then refuses appends and confirms no
// durability, as for any failed sync, and recovery names the segment.
func (l *Log) commit(seg *segment) (synced bool, err error) {
	seg.commitMu.Lock()
	defer seg.commitMu.Unlock()
	if seg.committed.Load() {
		return false, nil
	}
	if err := seg.syncData(); err != nil {
		l.failSync(err)
		return false, err
	}
	prepared := *seg.paths.Load()
	final := pathsIn(filepath.Dir(prepared.log), seg.baseOffset)
	// The index first: a kill between the two renames leaves <base>.idx
	// beside .prepared.log, which recovery names as it would have been.
	err = seg.faults.doRename(prepared.index, final.index)
	if err == nil {
		seg.paths.Store(&segmentPaths{log: prepared.log, index: final.index})
		err = seg.faults.doRename(prepared.log, final.log)
	}
	if err == nil {
		seg.paths.Store(&final)
		err = syncDir(filepath.Dir(final.log))
	}
	if err != nil {
		err = fmt.Errorf("%w: committing segment %s: %w", ErrSyncFailed, final.log, err)
		l.failSync(err)
		return true, err
	}
	seg.committed.Store(true)
	return true, nil
}
