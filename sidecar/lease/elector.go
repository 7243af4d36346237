package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the elector's clock. Its readings must carry a monotonic
// reading (time.Now's do) or be monotonic themselves (a test's fake).
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Role is what a member is to its group.
type Role int

// Roles, as GET /group names them.
const (
	Candidate Role = iota // nobody else is named leader, and this member does not hold the lead
	Follower              // another member is named leader
	Leader                // this member holds the lead
)

func (r Role) String() string {
	switch r {
	case Leader:
		return "leader"
	case Follower:
		return "follower"
	}
	return "candidate"
}

// Change is a change of role, of the leader named, or of epoch.
type Change struct {
	Role   Role
	Leader string // the instance named leader in the last state seen; "" if none
	Epoch  uint64 // that leadership's epoch; 0 if none is known
	Reason string
}

// Config configures an Elector.
type Config struct {
	// Self is this member: instance and data dir identity.
	Self Member
	// Lease is how long a candidate must see the revision unchanged
	// before it takes over (VOIK_LEASE).
	Lease time.Duration
	// RenewDeadline is how long the holder holds the lead after sending
	// a write that succeeded; 0: 2/3 of Lease. Lease - RenewDeadline is
	// the safety margin.
	RenewDeadline time.Duration
	// RetryPeriod is how often the holder renews and a candidate looks;
	// 0: 1/3 of Lease. After a failed renewal the holder retries four
	// times as often until RenewDeadline.
	RetryPeriod time.Duration
	// Bootstrap lets this member create the group's state, with itself
	// as leader and the only member in sync, when the register has none.
	// The caller decides who may (a member whose data is the group's).
	Bootstrap bool
	// Clock is the monotonic clock; nil: time.Now.
	Clock Clock
	// OnChange, if set, is called with every change, in order, one at
	// a time, with no lock of the elector held: it may call any method.
	// It runs on the goroutine that caused the change (Run's, or the
	// caller of StepDown, HandOver or SetInSync). Held, not OnChange, is
	// the authority before an ack: a lease can lapse between rounds.
	OnChange func(Change)
}

// Observation is the group state this member last read or wrote.
type Observation struct {
	State    State
	Revision uint64    // 0: no state
	Epoch    uint64    // State.EpochAt(Revision); 0 with no state
	Seen     time.Time // when this member first saw Revision, on its clock
	Err      error     // the last round's register error, if it failed
}

// held is a leadership this member holds.
type held struct {
	epoch    uint64
	rev      uint64 // revision of the last write of it known to have succeeded
	state    State  // as the next write stores it: Epoch explicit, HandedBy and Committed empty
	deadline time.Time
	handed   uint64 // the committed offset of the handover that began this leadership; 0: none
}

// Elector campaigns for and holds a group's lead in a Register, following
// the lease rule in the package comment. Run drives it; Held says before
// every ack whether the lead is still held.
type Elector struct {
	reg   Register
	cfg   Config
	clock Clock

	lead atomic.Pointer[held] // nil: not leading

	yielded atomic.Bool   // stepped down for others: no taking back its own lead at once
	look    chan struct{} // Look: run a round now

	mu          sync.Mutex // one register conversation at a time; guards below
	lastWritten uint64     // revision of this elector's last successful write
	resigned    bool       // handed over: campaigns no more

	obsMu sync.Mutex
	obs   Observation

	evMu       sync.Mutex
	last       Change
	queue      []Change
	delivering bool
}

// New returns an elector for the register reg.
func New(reg Register, cfg Config) (*Elector, error) {
	if cfg.Self.Instance == "" || cfg.Self.DataDirID == "" {
		return nil, errors.New("lease: Self needs an instance and a data dir identity")
	}
	if cfg.Lease <= 0 {
		return nil, errors.New("lease: Lease must be positive")
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = cfg.Lease * 2 / 3
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = cfg.Lease / 3
	}
	if !(0 < cfg.RetryPeriod && cfg.RetryPeriod < cfg.RenewDeadline && cfg.RenewDeadline < cfg.Lease) {
		return nil, fmt.Errorf("lease: need 0 < RetryPeriod (%v) < RenewDeadline (%v) < Lease (%v)",
			cfg.RetryPeriod, cfg.RenewDeadline, cfg.Lease)
	}
	e := &Elector{reg: reg, cfg: cfg, clock: cfg.Clock, look: make(chan struct{}, 1)}
	if e.clock == nil {
		e.clock = systemClock{}
	}
	return e, nil
}

// HandedCommitted is the committed journal offset that the member which
// handed this member the lead of epoch wrote with the handover, or 0
// when this member does not hold that lead or took it otherwise. The
// new leader may count every record below it committed: it was in the
// in-sync set, so it holds them all.
func (e *Elector) HandedCommitted(epoch uint64) uint64 {
	if l := e.lead.Load(); l != nil && l.epoch == epoch {
		return l.handed
	}
	return 0
}

// Held reports whether this member holds the lead at now, a reading of
// the elector's clock, and in which epoch. It is cheap: check it before
// every ack.
func (e *Elector) Held(now time.Time) (epoch uint64, ok bool) {
	l := e.lead.Load()
	if l == nil || !now.Before(l.deadline) {
		return 0, false
	}
	return l.epoch, true
}

// Valid is Held at the clock's now.
func (e *Elector) Valid() (epoch uint64, ok bool) { return e.Held(e.clock.Now()) }

// Observed returns the group state this member last read or wrote.
func (e *Elector) Observed() Observation {
	e.obsMu.Lock()
	defer e.obsMu.Unlock()
	o := e.obs
	o.State = o.State.clone()
	return o
}

// Run campaigns and, while leading, renews, until ctx ends; then it
// steps down (without a write: the lease lapses) and returns ctx's error.
func (e *Elector) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.StepDown("elector stopped")
			return ctx.Err()
		case <-t.C:
		case <-e.look:
			t.Stop()
		}
		t.Reset(e.round(ctx))
	}
}

// Look makes Run look at the register now rather than at its next round:
// for a member that has heard the leader stop leading (its pulls say
// so), so that a handover to it, or the group's next state, is seen in
// one round trip.
func (e *Elector) Look() {
	select {
	case e.look <- struct{}{}:
	default:
	}
}

// StepDown gives up the lead at once, without a write: for when NATS is
// lost. Other members take over after the lease; this one may take it
// back at once if the entry is still its own last write.
func (e *Elector) StepDown(reason string) {
	if l := e.lead.Load(); l != nil {
		e.drop(l, "stepped down: "+reason)
	}
	e.deliver()
}

// Yield steps down as StepDown does, and leaves the lead to the others:
// this member takes it again only by the lease rule, and after two
// leases instead of one, so that another member goes first. For a leader
// that lost its NATS server: it may reconnect elsewhere at once, but what
// was published meanwhile never reached it.
func (e *Elector) Yield(reason string) {
	e.yielded.Store(true)
	e.StepDown(reason)
}

// HandOver gives the lead to the in-sync member instance to, which takes
// it at once, by compare-and-set ("" releases it to whichever in-sync
// member looks first), with committed, the journal offset below which
// this leader committed every record (see HandedCommitted). This member
// stops holding before the write and campaigns no more: it is for
// SIGTERM, after what was in flight is committed.
func (e *Elector) HandOver(ctx context.Context, to string, committed uint64) error {
	defer e.deliver()
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.lead.Load()
	if l == nil || !e.clock.Now().Before(l.deadline) {
		return ErrNotLeader
	}
	if to == e.cfg.Self.Instance || (to != "" && !l.state.inSyncInstance(to)) {
		return fmt.Errorf("lease: cannot hand over to %q: not another in-sync member", to)
	}
	e.resigned = true
	e.drop(l, "handing over to "+to)
	st := State{Leader: to, InSync: slices.Clone(l.state.InSync), HandedBy: e.cfg.Self.Instance, Committed: committed}
	rev, err := e.reg.Update(ctx, st.Marshal(), l.rev)
	if err != nil {
		e.setErr(err)
		return fmt.Errorf("lease: hand over to %q: %w", to, err)
	}
	e.lastWritten = rev
	e.observe(st, rev, e.clock.Now())
	e.note("handed over to " + to)
	return nil
}

// SetInSync stores members as the in-sync set, keeping the lead and epoch.
// Only the leader may, and the set must hold it. Grow or shrink the set
// with it before the committed offset moves with or without a member.
func (e *Elector) SetInSync(ctx context.Context, members []Member) error {
	defer e.deliver()
	if !slices.Contains(members, e.cfg.Self) {
		return fmt.Errorf("lease: the in-sync set %v must hold the leader %v", members, e.cfg.Self)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for range 3 {
		l := e.lead.Load()
		if l == nil || !e.clock.Now().Before(l.deadline) {
			return ErrNotLeader
		}
		st := l.state.clone()
		st.InSync = slices.Clone(members)
		again, err := e.write(ctx, l, st)
		if !again {
			return err
		}
	}
	return ErrNotLeader
}

// round is one step of the loop: renew if leading, else look and perhaps
// take over. It returns when to run the next.
func (e *Elector) round(ctx context.Context) time.Duration {
	defer e.deliver()
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.lead.Load(); l != nil {
		now := e.clock.Now()
		if now.Before(l.deadline) {
			return e.renew(ctx, l)
		}
		e.drop(l, fmt.Sprintf("could not renew within %v: %v", e.cfg.RenewDeadline, e.Observed().Err))
	}
	return e.campaign(ctx)
}

func (e *Elector) renew(ctx context.Context, l *held) time.Duration {
	again, err := e.write(ctx, l, l.state)
	switch {
	case again:
		return 0
	case err == nil:
		return e.cfg.RetryPeriod
	}
	if l = e.lead.Load(); l == nil {
		return e.cfg.RetryPeriod / 4
	}
	// Try again soon, up to the deadline (when the next round steps down).
	return max(0, min(e.cfg.RetryPeriod/4, l.deadline.Sub(e.clock.Now())))
}

// write stores st over the lead's revision. On success the deadline counts
// from when the write was sent. It steps down at once when the entry is
// no longer this leadership's or the register is unreachable; other errors
// leave the lead to its deadline. again means it found its own write whose
// reply was lost, adopted its revision, and the caller should write again.
func (e *Elector) write(ctx context.Context, l *held, st State) (again bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, max(0, l.deadline.Sub(e.clock.Now())))
	defer cancel()
	sent := e.clock.Now()
	rev, err := e.reg.Update(cctx, st.Marshal(), l.rev)
	if err == nil {
		e.lastWritten = rev
		e.observe(st, rev, e.clock.Now())
		if !e.lead.CompareAndSwap(l, &held{epoch: l.epoch, rev: rev, state: st, deadline: sent.Add(e.cfg.RenewDeadline), handed: l.handed}) {
			return false, ErrNotLeader // stepped down meanwhile
		}
		return false, nil
	}
	e.setErr(err)
	switch {
	case errors.Is(err, ErrUnavailable):
		e.drop(l, "register unreachable: "+err.Error())
		return false, err
	case !errors.Is(err, ErrConflict):
		return false, err
	}
	v, rev, gerr := e.reg.Get(cctx)
	if gerr != nil {
		e.drop(l, fmt.Sprintf("lost the lead: revision %d is no longer current (%v)", l.rev, gerr))
		return false, ErrNotLeader
	}
	if rev < l.rev {
		// A stale read: it cannot tell who holds the entry now. Keep
		// the lead to its deadline and try again.
		return false, fmt.Errorf("%w; and a stale read (revision %d, ours %d)", err, rev, l.rev)
	}
	cur, derr := Unmarshal(v)
	if derr != nil {
		e.setErr(derr)
		e.drop(l, derr.Error())
		return false, ErrNotLeader
	}
	e.observe(cur, rev, e.clock.Now())
	// Only this leadership writes its epoch explicitly: a newer entry
	// with it, naming this member and no handover, is a write of ours
	// whose reply was lost. Adopt its revision, not its time.
	if rev > l.rev && cur.Leader == e.cfg.Self.Instance && cur.HandedBy == "" && cur.Epoch == l.epoch {
		st := cur.clone()
		if e.lead.CompareAndSwap(l, &held{epoch: l.epoch, rev: rev, state: st, deadline: l.deadline, handed: l.handed}) {
			e.lastWritten = rev
			return true, nil
		}
		return false, ErrNotLeader
	}
	e.drop(l, fmt.Sprintf("lost the lead: leader %q epoch %d at revision %d", cur.Leader, cur.EpochAt(rev), rev))
	return false, ErrNotLeader
}

func (e *Elector) campaign(ctx context.Context) time.Duration {
	soon := e.cfg.RetryPeriod / 4
	cctx, cancel := context.WithTimeout(ctx, e.cfg.RetryPeriod)
	defer cancel()
	v, rev, err := e.reg.Get(cctx)
	now := e.clock.Now()
	self := e.cfg.Self
	if errors.Is(err, ErrNotFound) {
		e.observe(State{}, 0, now)
		e.note("the group has no state")
		if !e.cfg.Bootstrap || e.resigned {
			return e.cfg.RetryPeriod
		}
		st := State{Leader: self.Instance, InSync: []Member{self}}
		rev, err := e.reg.Create(cctx, st.Marshal())
		if err != nil {
			e.setErr(err)
			return soon
		}
		e.take(st, rev, rev, now, 0, "created the group")
		return e.cfg.RetryPeriod
	}
	if err != nil {
		e.setErr(err) // the revision seen keeps its time: an outage does not restart the count
		return e.cfg.RetryPeriod
	}
	st, err := Unmarshal(v)
	if err != nil {
		e.setErr(err) // nobody can lead on a value nobody can read
		return e.cfg.RetryPeriod
	}
	if rev < e.Observed().Revision || rev < e.lastWritten {
		// A direct get answered by a replica that lags: nothing to act
		// on (acting would regress to a leader already replaced).
		return soon
	}
	e.observe(st, rev, now)
	e.note(fmt.Sprintf("saw leader %q epoch %d at revision %d", st.Leader, st.EpochAt(rev), rev))
	if st.Leader != self.Instance {
		e.yielded.Store(false) // another took the lead: yielding is over
	}
	if e.resigned || !st.InSyncHas(self) { // unclean election is off
		return e.cfg.RetryPeriod
	}
	seen := e.Observed().Seen
	var reason string
	switch {
	case st.Leader == self.Instance && st.HandedBy != "" && st.Epoch == 0:
		// Handed to us: accept by writing the epoch, the handover's
		// revision, explicitly; hold from when that write was sent.
		next := State{Leader: self.Instance, Epoch: rev, InSync: slices.Clone(st.InSync)}
		sent := e.clock.Now()
		nrev, err := e.reg.Update(cctx, next.Marshal(), rev)
		if err != nil {
			e.setErr(err)
			return soon
		}
		e.take(next, rev, nrev, sent, st.Committed, "handed over by "+st.HandedBy)
		return e.cfg.RetryPeriod
	case st.Leader == self.Instance && rev == e.lastWritten && !e.yielded.Load():
		reason = "taking back our own lead"
	case st.Leader == "":
		reason = "nobody leads"
	case now.Sub(seen) >= e.patience():
		reason = fmt.Sprintf("lease of %q expired: revision %d unchanged for %v", st.Leader, rev, now.Sub(seen))
	default:
		return min(e.cfg.RetryPeriod, seen.Add(e.patience()).Sub(now))
	}
	next := State{Leader: self.Instance, InSync: slices.Clone(st.InSync)}
	sent := e.clock.Now()
	nrev, err := e.reg.Update(cctx, next.Marshal(), rev)
	if err != nil {
		e.setErr(err)
		return soon
	}
	e.take(next, nrev, nrev, sent, 0, reason)
	return e.cfg.RetryPeriod
}

// patience is how long a revision must stay unchanged before this member
// takes over: a lease, or two after it yielded, so that the others go
// first and it takes the lead back only when none of them does.
func (e *Elector) patience() time.Duration {
	if e.yielded.Load() {
		return 2 * e.cfg.Lease
	}
	return e.cfg.Lease
}

// take records a leadership of epoch won by the write of st (as stored) at
// rev, sent at sent; handed is the committed offset of the handover that
// gave it (0: none).
func (e *Elector) take(st State, epoch, rev uint64, sent time.Time, handed uint64, reason string) {
	e.yielded.Store(false)
	e.lastWritten = rev
	next := st.clone()
	next.Epoch, next.HandedBy, next.Committed = epoch, "", 0
	e.lead.Store(&held{epoch: epoch, rev: rev, state: next, deadline: sent.Add(e.cfg.RenewDeadline), handed: handed})
	e.observe(st, rev, e.clock.Now())
	e.note(fmt.Sprintf("took the lead, epoch %d: %s", epoch, reason))
}

// drop gives up the leadership l, if it is still the current one.
func (e *Elector) drop(l *held, reason string) {
	if e.lead.CompareAndSwap(l, nil) {
		e.note(reason)
	}
}

func (e *Elector) observe(st State, rev uint64, now time.Time) {
	e.obsMu.Lock()
	if rev != 0 && rev < e.obs.Revision {
		e.obsMu.Unlock()
		return // a stale read (a lagging replica): what was seen stands
	}
	if rev != e.obs.Revision || e.obs.Seen.IsZero() {
		e.obs = Observation{State: st.clone(), Revision: rev, Seen: now}
		if rev != 0 {
			e.obs.Epoch = st.EpochAt(rev)
		}
	}
	e.obs.Err = nil
	e.obsMu.Unlock()
}

func (e *Elector) setErr(err error) {
	e.obsMu.Lock()
	e.obs.Err = err
	e.obsMu.Unlock()
}

// note queues a Change if the role, leader or epoch differ from the last
// one queued.
func (e *Elector) note(reason string) {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	c := Change{Reason: reason}
	o := e.Observed()
	if l := e.lead.Load(); l != nil {
		c.Role, c.Leader, c.Epoch = Leader, e.cfg.Self.Instance, l.epoch
	} else if o.Revision != 0 {
		c.Leader, c.Epoch = o.State.Leader, o.Epoch
		if c.Leader != "" && c.Leader != e.cfg.Self.Instance {
			c.Role = Follower
		}
	}
	if c.Role == e.last.Role && c.Leader == e.last.Leader && c.Epoch == e.last.Epoch {
		return
	}
	e.last = c
	e.queue = append(e.queue, c)
}

// deliver hands queued changes to OnChange, in order, unless another
// goroutine is already doing so (it will deliver these too).
func (e *Elector) deliver() {
	e.evMu.Lock()
	if e.delivering {
		e.evMu.Unlock()
		return
	}
	e.delivering = true
	for len(e.queue) > 0 {
		c := e.queue[0]
		e.queue = e.queue[1:]
		e.evMu.Unlock()
		if e.cfg.OnChange != nil {
			e.cfg.OnChange(c)
		}
		e.evMu.Lock()
	}
	e.delivering = false
	e.evMu.Unlock()
}
