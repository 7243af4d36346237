package sidecar

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
	"github.com/voik/voik/sidecar/group"
	"github.com/voik/voik/sidecar/lease"
)

// leadership is one epoch of this member's lead: its capture, its
// account of what the in-sync set holds (group.Commit), and the acks
// waiting for a commit.
type leadership struct {
	m       *member
	epoch   uint64
	capture *capture
	cancel  context.CancelFunc
	done    chan struct{} // the in-sync review has stopped
	lookNow chan struct{} // a follower left: review the in-sync set at once

	mu       sync.Mutex
	ended    bool
	commit   *group.Commit
	own      runTracker // the runs this leader journaled, durable or not
	waiting  ackWaiters
	known    map[string]lease.Member // every member named in sync or heard from
	lastPull map[string]time.Time
	retired  map[string]bool // members an operator retired: out of the in-sync set whatever its size
	// inSyncSet is closed (and replaced) whenever review applies a new
	// in-sync set: what waits for one (hearRetire) waits on it.
	inSyncSet chan struct{}
	heads     []headSample // the leader's durable end over the last leases
	since     time.Time

	markedMu sync.Mutex
	marked   map[string]uint64 // per subject, the start this leader last journaled
}

// headSample is the leader's durable journal end at a time.
type headSample struct {
	at  time.Time
	end uint64
}

// startLeadership sets up the lead of epoch: it drops records no pointer
// names (appended but never journaled), starts the epoch at the
// journal's end, opens the account with the stored in-sync set, and
// captures.
func (m *member) startLeadership(ctx context.Context, epoch uint64) error {
	named, err := group.ReadNamed(m.journal, m.base.Get())
	if err != nil {
		return err
	}
	dropped, err := named.DropUnnamed(m.s.store)
	if err != nil {
		return err
	}
	if dropped > 0 {
		m.logger.Warn("dropped records that were never journaled", "records", dropped)
	}
	if err := m.settleTail(ctx); err != nil {
		return err
	}
	if latest, ok := m.epochs.Latest(); !ok || latest.Epoch < epoch {
		if err := m.epochs.Assign(epoch, m.journal.End()); err != nil {
			return err
		}
	} else if latest.Epoch > epoch {
		return fmt.Errorf("epoch %d is older than epoch %d held here", epoch, latest.Epoch)
	}
	state := m.elector.Observed().State
	inSync := make([]string, 0, len(state.InSync))
	l := &leadership{m: m, epoch: epoch, known: map[string]lease.Member{}, lastPull: map[string]time.Time{}, since: time.Now(), done: make(chan struct{}),
		lookNow: make(chan struct{}, 1), marked: map[string]uint64{}, retired: map[string]bool{}, inSyncSet: make(chan struct{})}
	for _, member := range state.InSync {
		inSync = append(inSync, member.String())
		l.known[member.String()] = member
	}
	committed, _ := m.view.committed()
	end := m.journal.End()
	// Handed the lead, this member counts committed what its predecessor
	// had: it may not have heard of the last commits yet, and until the
	// in-sync set reports to it (which, without the predecessor, may take
	// a restart) readers given those offsets would find them out of range.
	counted := max(committed, min(m.elector.HandedCommitted(epoch), end))
	l.commit, err = group.NewCommit(m.s.cfg.Replicas, m.key, inSync, end, counted)
	if errors.Is(err, group.ErrNoMajority) {
		m.logger.Warn("leading with an in-sync set below a majority: nothing commits (acks wait, then 503) until members catch up", "in_sync", strings.Join(inSync, ","))
	} else if err != nil {
		return err
	}
	l.own.next = end
	l.dropPredecessor(state)
	if c := l.commit.Committed(); c > committed {
		l.onCommit(c)
	}
	m.lead.Store(l)
	reviewCtx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	go l.reviewInSync(reviewCtx)
	if err := l.startCapture(); err != nil {
		m.endLeadership(l, "cannot capture")
		return err
	}
	if m.groupSub, err = m.s.apiNC.Subscribe(m.s.cfg.APIPrefix+".GROUP."+m.name, m.answerGroup); err != nil {
		m.logger.Error("cannot answer GROUP", "err", err)
	}
	if m.groupsSub, err = m.s.apiNC.Subscribe(group.GroupsSubject(m.name), m.s.api.answerGroups); err != nil {
		m.logger.Error("cannot answer the GROUPS its followers pass on", "err", err)
	}
	if m.leaveSub, err = m.replNC.Subscribe(group.LeaveSubject(m.name), l.hearLeave); err != nil {
		m.logger.Error("cannot hear followers that leave; they are taken out of sync a lease after they stop", "err", err)
	}
	if m.retireSub, err = m.replNC.Subscribe(group.RetireSubject(m.name), func(msg *nats.Msg) { go l.hearRetire(msg) }); err != nil {
		m.logger.Error("cannot take retirements (voik retire)", "err", err)
	}
	if err := m.replNC.Publish(group.LeaderSubject(m.name), []byte(m.self.Instance)); err != nil {
		m.logger.Warn("cannot tell the others this member leads; they see it at their next look", "err", err)
	}
	m.logger.Info("leading: capturing", "epoch", epoch, "journal_end", end, "committed", l.commit.Committed(), "in_sync", strings.Join(l.commit.InSync(), ","))
	return nil
}

// dropPredecessor takes the member that led before out of the in-sync
// set at once, when the set keeps a majority without it: it lost its
// lease, most likely by dying, and waiting a lease to find that out
// would double the time to the first commit. If it lives, it catches up
// and is added back.
func (l *leadership) dropPredecessor(state lease.State) {
	prev := l.m.otherLeader.Load()
	if prev == nil || len(state.InSync)-1 < group.Majority(l.m.s.cfg.Replicas) {
		return
	}
	var keep []lease.Member
	var keys []string
	for _, member := range state.InSync {
		if member.Instance != *prev {
			keep = append(keep, member)
			keys = append(keys, member.String())
		}
	}
	if len(keep) == len(state.InSync) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.m.s.cfg.Lease/2)
	defer cancel()
	if err := l.m.elector.SetInSync(ctx, keep); err != nil {
		l.m.logger.Warn("cannot take the previous leader out of the in-sync set", "previous", *prev, "err", err)
		return
	}
	l.commit.SetInSync(keys)
	l.m.logger.Info("in-sync set changed: the previous leader is out until it catches up", "previous", *prev, "in_sync", strings.Join(keys, ","))
}

// settleTail waits until the records this member copied as a follower
// are durable: the new leader counts its whole journal as its own.
func (m *member) settleTail(ctx context.Context) error {
	m.sink.Settle() // what the follower's sync worker still had in hand
	from, end := m.sink.Durable(), m.journal.End()
	if from >= end {
		return nil
	}
	pointers, err := m.journal.Read(from, int(end-from))
	if err != nil {
		return err
	}
	last := map[string]uint64{}
	for _, p := range pointers {
		if !p.Start {
			last[p.Subject] = max(last[p.Subject], p.Offset)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for subject, offset := range last {
		if err := m.s.store.WaitDurable(wctx, subject, offset); err != nil {
			return err
		}
	}
	return m.journal.Log().WaitDurable(wctx, end-1)
}

func (l *leadership) startCapture() error {
	s := l.m.s
	c := s.newCapture()
	c.group = l
	c.startAckWorkers()
	if err := c.subscribe(s.captureNC, s.filters, s.cfg.PendingMsgs, int(s.cfg.PendingBytes)); err != nil {
		c.stopAckWorkers()
		return err
	}
	l.capture = c
	s.setCapture(c)
	return s.captureNC.Flush()
}

// endLeadership stops capture, answers the acks still waiting 503 (their
// records may yet commit under the next leader: a retry with the same
// Nats-Msg-Id is told so), and stops answering as leader.
func (m *member) endLeadership(l *leadership, reason string) {
	if !m.lead.CompareAndSwap(l, nil) {
		return
	}
	m.logger.Warn("no longer leading", "epoch", l.epoch, "reason", reason)
	m.view.wake() // followers waiting in a long poll here: go and find the new leader
	for _, sub := range []**nats.Subscription{&m.groupSub, &m.groupsSub, &m.leaveSub, &m.retireSub} {
		if *sub != nil {
			(*sub).Unsubscribe()
			*sub = nil
		}
	}
	l.cancel()
	<-l.done
	if c := l.capture; c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.drain(ctx, m.s.captureNC)
		cancel()
	}
	l.mu.Lock()
	l.ended = true
	l.waiting.failAll(messages.Errorf(messages.CodeUnavailable, "the leader lost the lead (%s) before this record was committed; retry with the same Nats-Msg-Id", reason))
	l.mu.Unlock()
	if c := l.capture; c != nil {
		waitGroup(&c.acks, 5*time.Second)
		c.stopAckWorkers()
		m.s.setCapture(nil)
	}
}

// waitGroup waits for wg, at most d.
func waitGroup(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// finish stops capture and waits, at most d, for everything journaled to
// be committed: what SIGTERM does before handing over.
func (l *leadership) finish(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if l.capture != nil {
		l.capture.drain(ctx, l.m.s.captureNC)
		waitGroup(&l.capture.acks, d)
	}
	end := l.m.journal.End()
	for {
		committed, moved := l.m.view.committed()
		if committed >= end {
			return
		}
		select {
		case <-moved:
		case <-ctx.Done():
			l.m.logger.Warn("shutting down with records not yet committed", "committed", committed, "journal_end", end)
			return
		}
	}
}

// successor is the in-sync follower furthest ahead, or "".
func (l *leadership) successor() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	best, bestEnd := "", uint64(0)
	for _, key := range l.commit.InSync() {
		member, ok := l.known[key]
		if key == l.m.key || !ok {
			continue
		}
		if end, _ := l.commit.Durable(key); best == "" || end > bestEnd {
			best, bestEnd = member.Instance, end
		}
	}
	return best
}

// journal implements groupLog.
func (l *leadership) journal(subject string, first uint64, n int) (journalSpan, error) {
	if _, ok := l.m.leading(); !ok || l.m.lead.Load() != l {
		return journalSpan{}, errors.New("not the leader")
	}
	pointers := make([]group.Pointer, n)
	for i := range pointers {
		pointers[i] = group.Pointer{Subject: subject, Offset: first + uint64(i)}
	}
	start, err := l.m.journal.Append(pointers)
	if err != nil {
		return journalSpan{}, err
	}
	l.m.journal.Log().RequestSync()
	return journalSpan{start: start, end: start + uint64(n)}, nil
}

func (l *leadership) journalEnd() uint64 { return l.m.journal.End() }

// markStart journals a start marker: this leader's retention limits
// would start the log of subject at first (logstore's OnRetention, called
// with the subject's log locked: it only journals, once for each new
// start). Every member deletes by it once it is committed (dropper). The
// marker counts in the leader's durable end like the pointers.
func (l *leadership) markStart(subject string, first uint64) {
	if _, ok := l.m.leading(); !ok || l.m.lead.Load() != l {
		return // the next leader's retention proposes the same
	}
	l.markedMu.Lock()
	if first <= max(l.marked[subject], l.m.view.start(subject)) {
		l.markedMu.Unlock()
		return
	}
	l.marked[subject] = first
	l.markedMu.Unlock()
	start, err := l.m.journal.Mark(subject, first)
	if err != nil {
		l.m.logger.Error("cannot journal where retention starts a log; stepping down", "subject", subject, "first_offset", first, "err", err)
		l.broken(err)
		return
	}
	l.m.journal.Log().RequestSync()
	go func() {
		if err := l.durable(journalSpan{start: start, end: start + 1}); err != nil {
			l.broken(err)
		}
	}()
}

func (l *leadership) broken(err error) {
	l.m.elector.StepDown(err.Error())
	l.m.poke()
}

// durable implements groupLog: span's records are durable; once its
// pointers are, the leader counts it.
func (l *leadership) durable(span journalSpan) error {
	if err := l.m.journal.Log().WaitDurable(context.Background(), span.end-1); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reportLocked(l.m.key, l.own.mark(span))
	return nil
}

// report takes a member's durable journal end (a follower's pull) and
// returns the committed offset.
func (l *leadership) report(key string, end uint64) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.known[key]; !ok {
		if m, ok := parseMember(key); ok {
			l.known[key] = m
		}
	}
	l.lastPull[key] = time.Now()
	delete(l.retired, key) // it came back after all: a follower like any
	return l.reportLocked(key, end), slices.Contains(l.commit.InSync(), key)
}

func (l *leadership) reportLocked(key string, end uint64) uint64 {
	before := l.commit.Committed()
	c := l.commit.Report(key, end)
	if c > before {
		l.onCommit(c)
	}
	return c
}

// onCommit makes records up to c readable and sends the acks they
// waited for, if the lease still holds.
func (l *leadership) onCommit(c uint64) {
	m := l.m
	if err := m.view.advance(c); err != nil {
		m.logger.Error("cannot read the journal to serve committed records", "err", err)
	}
	m.checkpoint(false)
	var answer *messages.Error
	if epoch, ok := m.elector.Valid(); !ok || epoch != l.epoch {
		answer = messages.Errorf(messages.CodeUnavailable, "the leader's lease lapsed before the ack; retry with the same Nats-Msg-Id")
	}
	now := time.Now()
	for l.waiting.Len() > 0 && l.waiting.items[0].at <= c {
		w := heap.Pop(&l.waiting).(ackWaiter)
		m.gm.commitSeconds.Observe(now.Sub(w.since).Seconds())
		w.answer(answer)
	}
}

// afterCommit implements groupLog.
func (l *leadership) afterCommit(at uint64, answer func(*messages.Error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.ended:
		answer(messages.Errorf(messages.CodeUnavailable, "the leader lost the lead before this record was committed; retry with the same Nats-Msg-Id"))
	case l.commit.Committed() >= at:
		if epoch, ok := l.m.elector.Valid(); !ok || epoch != l.epoch {
			answer(messages.Errorf(messages.CodeUnavailable, "the leader's lease lapsed before the ack; retry with the same Nats-Msg-Id"))
			return
		}
		answer(nil)
	default:
		heap.Push(&l.waiting, ackWaiter{at: at, since: time.Now(), answer: answer})
	}
}

// parseMember reads a member's key (lease.Member.String).
func parseMember(key string) (lease.Member, bool) {
	i := strings.LastIndexByte(key, '/')
	if i <= 0 || i == len(key)-1 {
		return lease.Member{}, false
	}
	return lease.Member{Instance: key[:i], DataDirID: key[i+1:]}, true
}

// reviewInSync shrinks the in-sync set by the members that fell behind
// and grows it by those that caught up, every quarter of a lease.
func (l *leadership) reviewInSync(ctx context.Context) {
	defer close(l.done)
	window := l.m.s.cfg.Lease
	tick := time.NewTicker(max(window/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.lookNow:
		}
		l.review(ctx, window)
	}
}

// hearLeave takes note of a follower that stops: it counts as silent from
// now, so review takes it out of the in-sync set as soon as the leader
// holds a record it does not (and the set keeps a majority), instead of a
// lease after its last pull.
func (l *leadership) hearLeave(msg *nats.Msg) {
	key := string(msg.Data)
	l.mu.Lock()
	_, known := l.known[key]
	if known {
		l.lastPull[key] = time.Time{}
	}
	l.mu.Unlock()
	if known {
		l.m.logger.Info("a follower is stopping: out of the in-sync set at the next record", "member", key)
		l.lookSoon()
	}
	msg.Respond(nil)
}

// RetireReply answers voik retire: the member's data dirs retired, and
// whether they were in the in-sync set; or why not.
type RetireReply struct {
	Group     string   `json:"group"`
	Retired   []string `json:"retired,omitempty"`
	WasInSync bool     `json:"was_in_sync,omitempty"`
	InSync    []string `json:"in_sync,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// hearRetire retires a member an operator says is gone for good: the next
// review takes it out of the in-sync set even below a majority (it holds
// nothing new, so nothing commits with it either; without it, a
// replacement that catches up makes the majority), and the leader stops
// listing it. A member that still pulls is refused: stop it first. One
// that comes back later rejoins as a follower out of sync, as any would.
func (l *leadership) hearRetire(msg *nats.Msg) {
	instance := string(msg.Data)
	reply := RetireReply{Group: l.m.name}
	defer func() {
		b, _ := json.Marshal(reply)
		msg.Respond(b)
	}()
	window := l.m.s.cfg.Lease
	l.mu.Lock()
	var keys []string
	for key, member := range l.known {
		if member.Instance != instance {
			continue
		}
		switch {
		case key == l.m.key:
			reply.Error = "it leads: stop it (SIGTERM hands the lead over), then retire it"
		case time.Since(l.pullOrStart(key)) <= window:
			reply.Error = fmt.Sprintf("it pulled %v ago: it is alive; stop it before retiring it", time.Since(l.pullOrStart(key)).Round(time.Millisecond))
		}
		keys = append(keys, key)
	}
	if reply.Error == "" && len(keys) == 0 {
		reply.Error = fmt.Sprintf("the leader knows no member %s", messages.Quote(instance))
	}
	if reply.Error != "" {
		l.mu.Unlock()
		return
	}
	for _, key := range keys {
		l.retired[key] = true
		reply.WasInSync = reply.WasInSync || slices.Contains(l.commit.InSync(), key)
	}
	l.mu.Unlock()
	l.lookSoon()
	deadline := time.NewTimer(2 * window)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		inSync := l.commit.InSync()
		out := !slices.ContainsFunc(keys, func(k string) bool { return slices.Contains(inSync, k) })
		if out {
			for _, key := range keys {
				delete(l.known, key)
				delete(l.lastPull, key)
			}
		}
		changed := l.inSyncSet
		l.mu.Unlock()
		if out {
			slices.Sort(keys)
			reply.Retired, reply.InSync = keys, inSync
			l.m.logger.Warn("retired a member for good", "member", strings.Join(keys, ","), "in_sync", strings.Join(inSync, ","))
			return
		}
		select {
		case <-changed: // another set applied: look again
		case <-deadline.C:
			reply.Error = "the in-sync set could not be stored without it in time; try again"
			return
		}
	}
}

// lookSoon has the in-sync review look now rather than at its next tick.
func (l *leadership) lookSoon() {
	select {
	case l.lookNow <- struct{}{}:
	default:
	}
}

// review is one look. A member lags when it has not pulled for a lease,
// or does not hold what the leader held a lease ago; it catches up when
// it holds everything committed and pulled within the lease. The stored
// set changes first (a compare-and-set), then the account: the committed
// offset never moves with a member the stored set does not name (a
// shrunk set is applied after it is stored; until then the larger one
// counts), nor without one it names (while a grown set is being stored
// the offset is frozen). The lock is not held over the write: pulls go
// on meanwhile.
func (l *leadership) review(ctx context.Context, window time.Duration) {
	l.mu.Lock()
	drop, add, next, members := l.proposeInSync(window)
	if len(drop) == 0 && len(add) == 0 {
		l.mu.Unlock()
		return
	}
	if len(add) > 0 {
		l.commit.Freeze()
	}
	l.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, window/2)
	err := l.m.elector.SetInSync(wctx, members)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	before := l.commit.Committed()
	if err != nil {
		l.m.logger.Warn("cannot change the in-sync set", "drop", strings.Join(drop, ","), "add", strings.Join(add, ","), "err", err)
		if len(add) > 0 {
			// The grown set may be stored all the same (a lost reply):
			// committing without its new members could then lose records
			// a later leader is elected without. Leave the lead instead.
			l.m.elector.StepDown("the in-sync set may have changed under it: " + err.Error())
			l.m.poke()
			return
		}
	} else {
		l.commit.SetInSync(next)
		close(l.inSyncSet)
		l.inSyncSet = make(chan struct{})
		l.m.logger.Info("in-sync set changed", "in_sync", strings.Join(l.commit.InSync(), ","), "dropped", strings.Join(drop, ","), "added", strings.Join(add, ","))
	}
	l.commit.Thaw()
	if c := l.commit.Committed(); c > before {
		l.onCommit(c)
	}
}

// proposeInSync is the in-sync set review would store: who to drop, who
// to add, the set after, and its members as the lease names them.
func (l *leadership) proposeInSync(window time.Duration) (drop, add, next []string, members []lease.Member) {
	now := time.Now()
	head, _ := l.commit.Durable(l.m.key)
	l.heads = append(l.heads, headSample{at: now, end: head})
	for len(l.heads) > 1 && !l.heads[1].at.After(now.Add(-window)) {
		l.heads = l.heads[1:]
	}
	ago := uint64(0) // not a lease of history yet: nobody lags by it
	if !l.heads[0].at.After(now.Add(-window)) {
		ago = l.heads[0].end
	}
	inSync := l.commit.InSync()
	drop = l.commit.Lagging(ago, func(key string) bool { return now.Sub(l.pullOrStart(key)) > window })
	for _, key := range inSync {
		if l.retired[key] && !slices.Contains(drop, key) {
			drop = append(drop, key)
		}
	}
	for _, key := range l.commit.CaughtUp() {
		if _, ok := l.known[key]; ok && !l.retired[key] && now.Sub(l.pullOrStart(key)) <= window {
			add = append(add, key)
		}
	}
	next = slices.DeleteFunc(slices.Clone(inSync), func(k string) bool { return slices.Contains(drop, k) })
	next = append(next, add...)
	for _, key := range next {
		members = append(members, l.known[key])
	}
	return drop, add, next, members
}

// pullOrStart is when key last pulled, or when this leadership began.
func (l *leadership) pullOrStart(key string) time.Time {
	if t, ok := l.lastPull[key]; ok {
		return t
	}
	if key == l.m.key {
		return time.Now()
	}
	return l.since
}

// runTracker is where the leader's own durable journal end has got to:
// runs are marked durable in any order, and the end moves over those
// that are contiguous from it.
type runTracker struct {
	next uint64
	done map[uint64]uint64 // start -> end of runs durable past next
}

func (t *runTracker) mark(span journalSpan) uint64 {
	if span.start != t.next {
		if t.done == nil {
			t.done = map[uint64]uint64{}
		}
		t.done[span.start] = span.end
		return t.next
	}
	t.next = span.end
	for {
		end, ok := t.done[t.next]
		if !ok {
			return t.next
		}
		delete(t.done, t.next)
		t.next = end
	}
}

// ackWaiter is acks waiting for the commit of journal offset at - 1.
type ackWaiter struct {
	at     uint64
	since  time.Time
	answer func(*messages.Error)
}

// ackWaiters is a min-heap by at.
type ackWaiters struct{ items []ackWaiter }

func (h *ackWaiters) Len() int           { return len(h.items) }
func (h *ackWaiters) Less(i, j int) bool { return h.items[i].at < h.items[j].at }
func (h *ackWaiters) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *ackWaiters) Push(x any)         { h.items = append(h.items, x.(ackWaiter)) }
func (h *ackWaiters) Pop() any {
	last := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return last
}

func (h *ackWaiters) failAll(err *messages.Error) {
	for _, w := range h.items {
		w.answer(err)
	}
	h.items = nil
}

// answerGroup answers <prefix>.GROUP.<group> as the leader.
func (m *member) answerGroup(msg *nats.Msg) {
	l := m.lead.Load()
	if l == nil || msg.Reply == "" {
		return
	}
	epoch, _ := m.leading()
	reply := messages.GroupReply{Group: m.name, Leader: m.self.Instance, Epoch: epoch, Replicas: uint64(m.s.cfg.Replicas)}
	l.mu.Lock()
	head, _ := l.commit.Durable(m.key)
	inSync := l.commit.InSync()
	keys := make([]string, 0, len(l.known))
	for key := range l.known {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		end, _ := l.commit.Durable(key)
		role := "follower"
		if key == m.key {
			role = "leader"
		}
		reply.Members = append(reply.Members, messages.GroupMember{Instance: l.known[key].Instance, Role: role,
			InSync: slices.Contains(inSync, key), Lag: head - min(head, end)})
	}
	l.mu.Unlock()
	msg.Respond(messages.Encode(reply))
}
