package logstore

// Durability: the syncer that makes appended records durable under the
// sync policy (group commit), the sticky error of a failed sync, and the
// waits for records to be appended or durable.

import (
	"context"
	"time"
)

// stickySyncErr is the error of the sync that failed, or nil.
func (l *Log) stickySyncErr() error {
	if p := l.syncErr.Load(); p != nil {
		return *p
	}
	return nil
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

// syncOnce makes everything appended so far durable. The active segment
// is the only one that can hold records not yet synced (rotation syncs
// the segment it seals); one swapped in and not yet committed is
// committed, which syncs it.
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
	if l.syncSegment(seg) != nil {
		return // failSync has recorded it
	}
	// A truncation (truncate.go) may have dropped seg meanwhile and
	// lowered the end offset below target: records appended since at
	// those offsets are not the ones this sync wrote. It decides under
	// writeMu, as the truncation does.
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if !seg.dropped.Load() {
		l.markDurable(target)
	}
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

// syncLocked makes every record appended so far durable: the segments
// sealed under SyncNone without a sync, then the active one (committed
// first if it was swapped in and is not yet). The caller holds writeMu.
func (l *Log) syncLocked() error {
	if l.active == nil { // opened read-only after corruption: nothing to sync
		return nil
	}
	if err := l.stickySyncErr(); err != nil {
		return err
	}
	target := l.endOffset.Load()
	for _, seg := range *l.segments.Load() {
		if err := l.syncUnsyncedLocked(seg); err != nil {
			return err
		}
	}
	if err := l.syncSegment(l.active); err != nil {
		return err
	}
	l.markDurable(target)
	return nil
}

// syncSegment makes the .log of seg durable: with a sync, or by
// committing it when it was swapped in and is not committed yet (the
// commit syncs it). A failure is recorded by failSync.
func (l *Log) syncSegment(seg *segment) error {
	if !seg.committed.Load() {
		synced, err := l.commit(seg)
		if err != nil || synced {
			return err
		}
	}
	if err := seg.syncData(); err != nil {
		l.failSync(err)
		return err
	}
	return nil
}

// syncUnsyncedLocked syncs seg if it was sealed without a sync (under
// SyncNone) and is not yet: its records and its index. A failure is
// sticky (failSync). The caller holds writeMu.
func (l *Log) syncUnsyncedLocked(seg *segment) error {
	if !seg.unsynced {
		return nil
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
	return nil
}
