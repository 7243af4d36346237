package sidecar

import (
	"context"
	"sync"
	"time"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/sidecar/group"
)

// visibility is what the API may serve of each log: all of it standalone;
// in a group only what is committed (PROTOCOL.md section 8), so that no
// reader is ever given a record that a failover could take back.
type visibility interface {
	// hidden says whether subject has nothing to serve yet (404) though
	// it may have a log.
	hidden(subject string) bool
	// first is the first offset of log that readers see.
	first(log *logstore.Log) uint64
	// end is the end offset of log that readers see.
	end(log *logstore.Log) uint64
	// waitFor returns once log's visible end is past offset, or ctx ends.
	waitFor(ctx context.Context, log *logstore.Log, offset uint64)
	// waitSubject returns once subject is not hidden and has a log, or
	// ctx ends.
	waitSubject(ctx context.Context, subject string)
	// lags says whether the visible ends may be behind what this member
	// is about to learn (a group member hears of commits a moment after
	// the leader acks them).
	lags() bool
	// catchUp waits, at most commitSettle, for log's visible end to
	// reach offset when it lags, and returns the end then.
	catchUp(ctx context.Context, log *logstore.Log, offset uint64) uint64
	// catchUpSubject waits likewise for subject to be visible, when this
	// member holds records of it.
	catchUpSubject(ctx context.Context, subject string)
}

// commitSettle bounds how long a group member waits for news of the
// commit of records it holds, a pull's round trip away when they were
// acked: so that a reader who has an ack finds its record on any member.
const commitSettle = time.Second

// wholeLogs is a standalone voik's visibility: every record stored.
type wholeLogs struct{ store *logstore.Store }

func (wholeLogs) hidden(string) bool             { return false }
func (wholeLogs) first(log *logstore.Log) uint64 { return log.FirstOffset() }
func (wholeLogs) end(log *logstore.Log) uint64   { return log.EndOffset() }
func (w wholeLogs) waitSubject(ctx context.Context, subject string) {
	for {
		created := w.store.Created()
		if w.store.Has(subject) {
			return
		}
		select {
		case <-created:
		case <-ctx.Done():
			return
		}
	}
}

func (wholeLogs) waitFor(ctx context.Context, log *logstore.Log, offset uint64) {
	log.WaitFor(ctx, offset)
}

// committedView is a group member's visibility: per subject, the end of
// its committed records, from the journal up to the committed offset
// this member knows, and where the leader's retention made it start
// (the journal's start markers). It only moves forward.
//
// A member deletes below a start marker only whole segments (Log.DropBefore):
// when its segments were cut at other offsets than the leader's, its log
// holds a few records below the marker, which readers are not shown, so
// that first_offset is the same on every member.
type committedView struct {
	journal *group.Journal
	holds   func(subject string) bool // whether the store has a log of subject
	// onStart is told each committed start that moved a subject's start:
	// the member deletes below it (dropper).
	onStart func(subject string, start uint64)

	advancing sync.Mutex // one advance at a time

	mu     sync.Mutex
	upTo   uint64            // journal offset below which every pointer is counted
	ends   map[string]uint64 // subject -> one past its highest committed offset
	starts map[string]uint64 // subject -> its first offset by the latest committed start marker
	moved  chan struct{}     // closed and replaced on every advance
}

// newCommittedView counts the base (all of it committed) and the
// journal after it up to upTo (what a checkpoint says was committed, at
// most the journal's end).
func newCommittedView(journal *group.Journal, base *group.Base, holds func(string) bool, onStart func(string, uint64), upTo uint64) (*committedView, error) {
	v := &committedView{journal: journal, holds: holds, onStart: onStart, ends: map[string]uint64{}, starts: map[string]uint64{}, moved: make(chan struct{})}
	v.rebase(base)
	return v, v.advance(min(upTo, journal.End()))
}

// rebase counts base as committed: what a trimmed journal no longer
// holds, or what a snapshot copied.
func (v *committedView) rebase(base *group.Base) {
	v.advancing.Lock()
	defer v.advancing.Unlock()
	v.mu.Lock()
	for subject, end := range base.Ends {
		v.ends[subject] = max(v.ends[subject], end)
	}
	moved := v.moveStartsLocked(base.Starts)
	v.upTo = max(v.upTo, base.At, v.journal.Log().FirstOffset())
	close(v.moved)
	v.moved = make(chan struct{})
	v.mu.Unlock()
	v.tellStarts(moved)
}

// moveStartsLocked raises the subjects' starts to starts and returns
// those that moved. The caller holds v.mu.
func (v *committedView) moveStartsLocked(starts map[string]uint64) map[string]uint64 {
	moved := map[string]uint64{}
	for subject, start := range starts {
		if start > v.starts[subject] {
			v.starts[subject] = start
			moved[subject] = start
		}
	}
	return moved
}

func (v *committedView) tellStarts(moved map[string]uint64) {
	if v.onStart == nil {
		return
	}
	for subject, start := range moved {
		v.onStart(subject, start)
	}
}

// start is subject's start by the committed markers (0: none).
func (v *committedView) start(subject string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.starts[subject]
}

// advance counts the journal's pointers up to to.
func (v *committedView) advance(to uint64) error {
	v.advancing.Lock()
	defer v.advancing.Unlock()
	v.mu.Lock()
	from := v.upTo
	v.mu.Unlock()
	if to <= from {
		return nil
	}
	ends, starts := map[string]uint64{}, map[string]uint64{}
	for at := from; at < to; {
		pointers, err := v.journal.Read(at, int(min(to-at, 4096)))
		if err != nil {
			return err
		}
		if len(pointers) == 0 {
			to = at // the journal ends sooner (truncated meanwhile): count what is there
			break
		}
		for _, p := range pointers {
			if p.Start {
				starts[p.Subject] = max(starts[p.Subject], p.Offset)
			} else {
				ends[p.Subject] = max(ends[p.Subject], p.Offset+1)
			}
		}
		at += uint64(len(pointers))
	}
	v.mu.Lock()
	for subject, end := range ends {
		v.ends[subject] = max(v.ends[subject], end)
	}
	moved := v.moveStartsLocked(starts)
	v.upTo = max(v.upTo, to)
	close(v.moved)
	v.moved = make(chan struct{})
	v.mu.Unlock()
	v.tellStarts(moved)
	return nil
}

// wake wakes whoever waits on the committed offset without moving it:
// the followers' long polls in this member, when it stops leading, so
// that they go and find the new leader now instead of at their timeout.
func (v *committedView) wake() {
	v.mu.Lock()
	close(v.moved)
	v.moved = make(chan struct{})
	v.mu.Unlock()
}

// committed is the committed journal offset counted, and a channel closed
// when it next moves.
func (v *committedView) committed() (uint64, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.upTo, v.moved
}

func (v *committedView) subjectEnd(subject string) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	end, ok := v.ends[subject]
	return end, ok
}

func (v *committedView) hidden(subject string) bool {
	_, ok := v.subjectEnd(subject)
	return !ok
}

func (v *committedView) first(log *logstore.Log) uint64 {
	return max(log.FirstOffset(), v.start(log.Subject()))
}

func (v *committedView) end(log *logstore.Log) uint64 {
	first := v.first(log)
	end, ok := v.subjectEnd(log.Subject())
	if !ok {
		return first
	}
	return max(min(end, log.EndOffset()), first)
}

func (v *committedView) waitFor(ctx context.Context, log *logstore.Log, offset uint64) {
	for {
		_, moved := v.committed()
		if v.end(log) > offset {
			return
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return
		case <-log.Closed():
			return
		}
	}
}

func (v *committedView) lags() bool { return true }

func (v *committedView) catchUp(ctx context.Context, log *logstore.Log, offset uint64) uint64 {
	settle, cancel := context.WithTimeout(ctx, commitSettle)
	defer cancel()
	if offset > 0 {
		v.waitFor(settle, log, offset-1)
	}
	return v.end(log)
}

func (v *committedView) catchUpSubject(ctx context.Context, subject string) {
	if !v.hidden(subject) || !v.holds(subject) {
		return // visible, or nothing held here to hear of
	}
	settle, cancel := context.WithTimeout(ctx, commitSettle)
	defer cancel()
	v.waitSubject(settle, subject)
}

func (v *committedView) waitSubject(ctx context.Context, subject string) {
	for {
		_, moved := v.committed()
		if !v.hidden(subject) {
			return
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return
		}
	}
}

func (wholeLogs) lags() bool { return false }

func (wholeLogs) catchUpSubject(context.Context, string) {}

func (wholeLogs) catchUp(_ context.Context, log *logstore.Log, _ uint64) uint64 {
	return log.EndOffset()
}
