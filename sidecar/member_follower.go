package sidecar

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/sidecar/group"
)

// following is a follower's copy loop, running until cancelled.
type following struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (m *member) startFollowing(ctx context.Context) {
	fctx, cancel := context.WithCancel(ctx)
	f := &following{cancel: cancel, done: make(chan struct{})}
	m.follow = f
	m.following.Store(true)
	go func() {
		defer close(f.done)
		m.copyLoop(fctx)
	}()
}

func (m *member) stopFollowing() {
	if f := m.follow; f != nil {
		f.cancel()
		<-f.done
		m.follow = nil
		m.following.Store(false)
	}
}

// pollWait is how long a follower that has caught up waits in the
// leader for more: well inside the lease, so that a live follower is
// never taken for a silent one.
func (m *member) pollWait() time.Duration {
	return min(time.Second, m.s.cfg.Lease/3)
}

// copyLoop pulls from the leader the group's state names, applies what
// comes, and learns the committed offset; it truncates by leader epoch
// when told it diverged.
func (m *member) copyLoop(ctx context.Context) {
	warn := newThrottledLogger(m.logger)
	retry := max(m.s.cfg.Lease/8, 5*time.Millisecond)
	caughtUp := time.Now()
	for ctx.Err() == nil {
		obs := m.elector.Observed()
		leader := obs.State.Leader
		if leader == "" || leader == m.self.Instance {
			m.pullFailed.Store(time.Now().UnixNano()) // nobody to pull from: still trying
			waitOrDone(ctx, retry)                    // nobody else leads yet: the elector looks again
			continue
		}
		m.sink.Fence = obs.Epoch
		// A leader that dies in the middle of a pull never answers: give
		// up on it well inside a lease.
		sent := time.Now()
		if m.answers() {
			// A member that answers stays fresh while it keeps trying:
			// a pull in flight counts as one that failed when sent, so
			// that a leader that stops answering (paused) does not make
			// this member leave the API's queue group and join it again
			// with every pull that times out. A member that does not
			// answer (back from a pause of its own) waits for a pull's
			// outcome.
			m.pullFailed.Store(sent.UnixNano())
		}
		// Nor to one that stops leading: a pull it took in just as it
		// shut down is dropped with its subscription (changed cancels).
		pctx, cancel := context.WithTimeout(ctx, m.pollWait()+m.s.cfg.Lease/2)
		m.pulling.Store(&pull{from: leader, cancel: cancel})
		if m.elector.Observed().State.Leader != leader {
			cancel()
		}
		n, committed, err := m.sink.Pull(pctx, m.replNC, group.PullSubject(m.name, leader), int(m.replNC.MaxPayload()), m.pollWait())
		m.pulling.Store(nil)
		cancel()
		if committed > 0 {
			m.leaderCommitted.Store(committed)
			if verr := m.view.advance(min(committed, m.sink.Durable())); verr != nil {
				warn.Error("cannot read the journal to serve committed records", "err", verr)
			}
			m.checkpoint(false)
		}
		if err == nil {
			m.pulledInSync.Store(m.sink.InSync)
			m.pulledOK.Store(time.Now().UnixNano())
		} else {
			// When it was sent, not when it failed: a pull sent before
			// a pause that fails after it says nothing of now.
			m.pullFailed.Store(sent.UnixNano())
		}
		var diverged *group.DivergedError
		switch {
		case err == nil:
			if n == 0 {
				caughtUp = time.Now()
			} else {
				m.gm.pulled.Observe(float64(n))
			}
			m.gm.lagSeconds.Set(time.Since(caughtUp).Seconds())
		case errors.As(err, &diverged):
			m.truncate(diverged)
		case errors.Is(err, group.ErrBehind):
			m.snapshot(ctx, leader)
		case errors.Is(err, group.ErrNotLeader), errors.Is(err, nats.ErrNoResponders):
			// It stopped leading, or has not started (a handover, most
			// often): look at the group's state now rather than at the
			// elector's next round, and pull again once a member says
			// it leads.
			m.elector.Look()
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-m.leaderNews:
			}
			t.Stop()
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.Canceled):
			// The leader changed under the pull (changed): pull from the
			// new one now.
		default:
			warn.Warn("cannot copy from the leader", "leader", leader, "err", err)
			waitOrDone(ctx, retry)
		}
	}
}

// truncate cuts this member back to where it agrees with the leader: the
// records past it were never committed.
func (m *member) truncate(d *group.DivergedError) {
	point := d.Offset
	if !d.OK {
		point = m.journal.Log().FirstOffset()
	}
	if committed, _ := m.view.committed(); point < committed {
		m.logger.Error("refusing to truncate below the committed offset: the leader's answer contradicts what was committed here",
			"point", point, "committed", committed)
		return
	}
	end := m.journal.End()
	dropped, err := m.sink.Truncate(point)
	m.gm.truncated.Add(float64(dropped))
	if err != nil {
		m.logger.Error("truncating to the leader's log failed", "journal_offset", point, "err", err)
		return
	}
	m.logger.Warn("dropped records never committed: this member's log ran past the leader's",
		"records", dropped, "journal_from", point, "journal_end", end)
}

// snapshot copies the leader's logs up to a committed journal offset,
// when this member's journal ends below the leader's first: it was away
// longer than the leader keeps its journal (VOIK_JOURNAL_KEEP).
func (m *member) snapshot(ctx context.Context, leader string) {
	from := m.journal.End()
	m.logger.Warn("this member is further behind than the leader's journal goes: copying the leader's logs (a snapshot)", "leader", leader, "journal_end", from)
	began := time.Now()
	at, copied, err := m.sink.Snapshot(ctx, m.replNC, group.PullSubject(m.name, leader), int(m.replNC.MaxPayload()))
	if err != nil {
		m.logger.Error("snapshot failed; trying again", "leader", leader, "records", copied, "err", err)
		waitOrDone(ctx, m.s.cfg.Lease)
		return
	}
	m.view.rebase(m.base.Get())
	m.checkpoint(true)
	m.logger.Info("snapshot done: copying the journal from here", "journal_offset", at, "records", copied, "took", time.Since(began).Round(time.Millisecond))
}

// trimJournal deletes the journal's front now and then: the segments
// below the committed offset less VOIK_JOURNAL_KEEP records, kept for
// members catching up.
func (m *member) trimJournal(ctx context.Context) {
	tick := time.NewTicker(max(m.s.cfg.Lease, time.Second))
	defer tick.Stop()
	warn := newThrottledLogger(m.logger)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		committed, _ := m.view.committed()
		if committed <= m.s.cfg.JournalKeep {
			continue
		}
		if _, err := group.TrimJournal(m.journal, m.base, committed-m.s.cfg.JournalKeep); err != nil {
			warn.Warn("cannot trim the journal", "err", err)
		}
	}
}

// waitOrDone waits d or until ctx ends: a retry's pause.
func waitOrDone(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
