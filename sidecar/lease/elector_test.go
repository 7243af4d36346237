package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// The unit tests run on a fake clock and the Fake register: rounds are
// called directly, time moves only when a test moves it.

const (
	testLease = 3 * time.Second // RenewDeadline 2 s, RetryPeriod 1 s
	step      = 10 * time.Millisecond
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_000_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// partition is one member's path to the shared register: it fails while
// err is set, without reaching the register.
type partition struct {
	r   Register
	mu  sync.Mutex
	err error
}

func (p *partition) set(err error) { p.mu.Lock(); p.err = err; p.mu.Unlock() }
func (p *partition) get() error    { p.mu.Lock(); defer p.mu.Unlock(); return p.err }

func (p *partition) Get(ctx context.Context) ([]byte, uint64, error) {
	if err := p.get(); err != nil {
		return nil, 0, err
	}
	return p.r.Get(ctx)
}

func (p *partition) Create(ctx context.Context, v []byte) (uint64, error) {
	if err := p.get(); err != nil {
		return 0, err
	}
	return p.r.Create(ctx, v)
}

func (p *partition) Update(ctx context.Context, v []byte, last uint64) (uint64, error) {
	if err := p.get(); err != nil {
		return 0, err
	}
	return p.r.Update(ctx, v, last)
}

// node is a member in a simulation.
type node struct {
	e       *Elector
	m       Member
	net     *partition
	next    time.Time
	stopped bool // crashed or paused: runs no rounds

	mu      sync.Mutex
	changes []Change
}

func (n *node) log() []Change {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Change(nil), n.changes...)
}

func (n *node) held(now time.Time) bool { _, ok := n.e.Held(now); return ok }

// sim is a group on one Fake and one fake clock. Every step checks the
// safety invariant: at most one member holds the lead.
type sim struct {
	t     *testing.T
	clk   *fakeClock
	fake  *Fake
	nodes []*node
}

func newSim(t *testing.T) *sim { return &sim{t: t, clk: newClock(), fake: NewFake()} }

func (s *sim) add(instance, dir string, bootstrap bool) *node {
	s.t.Helper()
	n := &node{m: Member{instance, dir}, net: &partition{r: s.fake}, next: s.clk.Now()}
	e, err := New(n.net, Config{
		Self: n.m, Lease: testLease, Bootstrap: bootstrap, Clock: s.clk,
		OnChange: func(c Change) { n.mu.Lock(); n.changes = append(n.changes, c); n.mu.Unlock() },
	})
	if err != nil {
		s.t.Fatal(err)
	}
	n.e = e
	s.nodes = append(s.nodes, n)
	return n
}

func (s *sim) check() {
	s.t.Helper()
	now := s.clk.Now()
	var holders []string
	for _, n := range s.nodes {
		if n.held(now) {
			holders = append(holders, n.m.String())
		}
	}
	if len(holders) > 1 {
		s.t.Fatalf("at %v, %d members hold the lead: %v", now.Sub(time.Unix(1_000_000_000, 0)), len(holders), holders)
	}
}

// round runs one round of n now.
func (s *sim) round(n *node) {
	s.t.Helper()
	d := n.e.round(context.Background())
	n.next = s.clk.Now().Add(d)
	s.check()
}

// run advances the clock by d in steps, running every member's rounds
// when they are due, and calls each (if not nil) after every step.
func (s *sim) run(d time.Duration, each func(now time.Time)) {
	s.t.Helper()
	end := s.clk.Now().Add(d)
	for s.clk.Now().Before(end) {
		for _, n := range s.nodes {
			if !n.stopped && !s.clk.Now().Before(n.next) {
				s.round(n)
			}
		}
		if each != nil {
			each(s.clk.Now())
		}
		s.clk.Advance(step)
		s.check()
	}
}

// stored is the state in the register now.
func (s *sim) stored() State {
	st, _ := s.fake.Load()
	return st
}

func (s *sim) holder() *node {
	now := s.clk.Now()
	for _, n := range s.nodes {
		if n.held(now) {
			return n
		}
	}
	return nil
}

func epochOf(t *testing.T, n *node, now time.Time) uint64 {
	t.Helper()
	ep, ok := n.e.Held(now)
	if !ok {
		t.Fatalf("%v does not hold the lead", n.m)
	}
	return ep
}

// group starts a group led by a first member ("a") with in-sync set
// a + others.
func group(t *testing.T, others ...string) (*sim, *node, []*node) {
	s := newSim(t)
	a := s.add("a", "dir-a", true)
	s.round(a)
	if !a.held(s.clk.Now()) {
		t.Fatalf("a did not create the group: %+v", a.e.Observed())
	}
	members := []Member{a.m}
	var ns []*node
	for _, o := range others {
		n := s.add(o, "dir-"+o, false)
		ns = append(ns, n)
		members = append(members, n.m)
	}
	if err := a.e.SetInSync(context.Background(), members); err != nil {
		t.Fatal(err)
	}
	return s, a, ns
}

func TestLeaseConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Self: Member{"a", ""}, Lease: time.Second},
		{Self: Member{"", "d"}, Lease: time.Second},
		{Self: Member{"a", "d"}},
		{Self: Member{"a", "d"}, Lease: time.Second, RenewDeadline: time.Second},
		{Self: Member{"a", "d"}, Lease: time.Second, RetryPeriod: 700 * time.Millisecond},
	} {
		if _, err := New(NewFake(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	e, err := New(NewFake(), Config{Self: Member{"a", "d"}, Lease: 3 * time.Second})
	if err != nil || e.cfg.RenewDeadline != 2*time.Second || e.cfg.RetryPeriod != time.Second {
		t.Fatalf("defaults: %+v %v", e.cfg, err)
	}
}

// The group's creator leads with the creation's revision as epoch; the
// stored entry says 0 until the first renewal writes it; renewals keep
// the lead and the epoch, change the revision, and keep every other
// member from taking over.
func TestLeaseRenewalsKeepIt(t *testing.T) {
	s, a, others := group(t, "b", "c")
	st, rev := s.fake.Load()
	epoch := epochOf(t, a, s.clk.Now())
	if epoch != 1 || st.Epoch != epoch || st.Leader != "a" || len(st.InSync) != 3 {
		t.Fatalf("after create and SetInSync: epoch %d, stored %+v at %d", epoch, st, rev)
	}
	if _, ok := a.e.Held(s.clk.Now().Add(a.e.cfg.RenewDeadline)); ok {
		t.Fatal("held beyond RenewDeadline without a renewal")
	}
	s.fake.Bump(100) // other groups' writes in the bucket
	revs := map[uint64]bool{}
	s.run(10*testLease, func(now time.Time) {
		if ep := epochOf(t, a, now); ep != epoch {
			t.Fatalf("epoch changed on renewal: %d -> %d", epoch, ep)
		}
		_, r := s.fake.Load()
		revs[r] = true
	})
	if len(revs) < 25 {
		t.Fatalf("only %d revisions in 10 leases: renewals every RetryPeriod expected", len(revs))
	}
	for _, n := range others {
		if o := n.e.Observed(); o.State.Leader != "a" || o.Epoch != epoch {
			t.Fatalf("%v observes %+v", n.m, o)
		}
		if l := n.log(); len(l) == 0 || l[len(l)-1].Role != Follower || l[len(l)-1].Leader != "a" {
			t.Fatalf("%v changes %+v", n.m, l)
		}
	}
}

// A candidate takes over only after it has seen the revision unchanged
// for the lease on its own clock, counting from when it first saw it, not
// from when it was written; a register outage meanwhile does not restart
// the count.
func TestLeaseTakeoverAfterUnchangedForLease(t *testing.T) {
	s, a, bs := group(t, "b")
	b := bs[0]
	a.stopped = true
	s.clk.Advance(10 * testLease) // the entry is old before b first looks
	s.round(b)
	firstSeen := s.clk.Now()
	if o := b.e.Observed(); !o.Seen.Equal(firstSeen) {
		t.Fatalf("seen %v, want %v", o.Seen, firstSeen)
	}
	b.net.set(errors.New("timeout"))
	s.run(testLease/2, nil)
	b.net.set(nil)
	s.run(testLease/2-step, nil)
	if b.held(s.clk.Now()) {
		t.Fatalf("b took over %v after first seeing the revision", s.clk.Now().Sub(firstSeen))
	}
	var took time.Time
	s.run(2*testLease, func(now time.Time) {
		if took.IsZero() && b.held(now) {
			took = now
		}
	})
	if took.IsZero() {
		t.Fatal("b never took over")
	}
	if d := took.Sub(firstSeen); d < testLease || d > testLease+step {
		t.Fatalf("b took over %v after first seeing the revision, want %v", d, testLease)
	}
	l := b.log()
	if c := l[len(l)-1]; c.Role != Leader || !strings.Contains(c.Reason, "lease of \"a\" expired") {
		t.Fatalf("last change %+v", c)
	}
}

// The safety argument: a holder that cannot renew stops holding before
// any candidate can take over, even when every write takes time and the
// candidate sees the holder's last write the moment it is applied.
func TestLeaseHolderStepsDownBeforeTakeover(t *testing.T) {
	s, a, bs := group(t, "b")
	b := bs[0]
	const latency = 150 * time.Millisecond
	s.fake.Hooks(func(op string) {
		if op == "update" {
			s.clk.Advance(latency) // sent, applied 150 ms later
		}
	}, nil)
	s.run(testLease, nil)
	// Cut a off just after a successful renewal; b looks at once, and at
	// every step after.
	var lost, took time.Time
	s.run(4*testLease, func(now time.Time) {
		if a.net.get() == nil && a.next.Sub(now) > a.e.cfg.RetryPeriod-2*step {
			a.net.set(errors.New("i/o timeout"))
		}
		if a.net.get() != nil && b.next.After(now) {
			b.next = now
		}
		if lost.IsZero() && !a.held(now) {
			lost = now
		}
		if took.IsZero() && b.held(now) {
			took = now
		}
	})
	if lost.IsZero() || took.IsZero() {
		t.Fatalf("a lost at %v, b took at %v", lost, took)
	}
	gap := took.Sub(lost)
	margin := a.e.cfg.Lease - a.e.cfg.RenewDeadline
	t.Logf("a stopped holding %v before b took over (margin %v, latency %v)", gap, margin, latency)
	if gap < margin {
		t.Fatalf("gap %v < margin %v", gap, margin)
	}
	// b saw a's last write when it was applied (latency after a sent
	// it) and its own takeover took latency too: the worst case ran.
	if gap > margin+2*latency+2*step {
		t.Fatalf("gap %v: b did not see a's last write at once", gap)
	}
	l := a.log()
	if c := l[len(l)-1]; c.Role == Leader || !strings.Contains(c.Reason, "could not renew") && !strings.Contains(c.Reason, "lost the lead") {
		t.Fatalf("a's last change %+v", c)
	}
}

// A holder that loses the register (NATS) steps down at once, not at its
// deadline; so does one told to (StepDown); and one whose revision
// changed under it.
func TestLeaseStepDownAtOnce(t *testing.T) {
	s, a, _ := group(t, "b")
	s.clk.Advance(time.Second)
	a.net.set(fmt.Errorf("%w: disconnected", ErrUnavailable))
	s.round(a)
	if a.held(s.clk.Now()) {
		t.Fatal("a holds the lead without NATS")
	}
	if c := a.log()[len(a.log())-1]; c.Role != Candidate || !strings.Contains(c.Reason, "unreachable") {
		t.Fatalf("change %+v", c)
	}
	// NATS back, nobody else wrote: a takes back its own lead at once,
	// in a new epoch.
	_, rev := s.fake.Load()
	a.net.set(nil)
	s.round(a)
	ep := epochOf(t, a, s.clk.Now())
	if ep != rev+1 {
		t.Fatalf("retaken in epoch %d after revision %d", ep, rev)
	}

	a.e.StepDown("NATS disconnected")
	if a.held(s.clk.Now()) {
		t.Fatal("a holds the lead after StepDown")
	}
	s.round(a)
	epochOf(t, a, s.clk.Now())

	st, _ := s.fake.Load()
	st.Leader, st.Epoch = "x", 0
	s.fake.Put(st) // someone wrote over a's lead
	s.clk.Advance(time.Second)
	s.round(a)
	if a.held(s.clk.Now()) {
		t.Fatal("a holds the lead after its revision changed")
	}
	if c := a.log()[len(a.log())-1]; c.Role != Follower || c.Leader != "x" || !strings.Contains(c.Reason, "lost the lead") {
		t.Fatalf("change %+v", c)
	}
}

// A holder that yields (it lost its NATS server) does not take its own
// lead back at once: another member takes it after the lease, and the
// one that yielded follows.
func TestLeaseYieldLeavesTheLeadToAnother(t *testing.T) {
	s, a, others := group(t, "b")
	b := others[0]
	a.e.Yield("lost its NATS server")
	s.round(a)
	if a.held(s.clk.Now()) {
		t.Fatal("a took its lead back at once after yielding")
	}
	s.round(b)
	s.clk.Advance(testLease / 2)
	s.round(a) // a looks again: still not its own to take back
	if a.held(s.clk.Now()) {
		t.Fatal("a took its lead back within the lease after yielding")
	}
	s.clk.Advance(testLease / 2)
	s.round(b)
	if !b.held(s.clk.Now()) {
		t.Fatalf("b did not take the lead a lease after a yielded: %+v", b.e.Observed())
	}
	s.round(a)
	if a.held(s.clk.Now()) {
		t.Fatal("a leads beside b")
	}
	// b yields in turn: a, which no longer yields, takes over after one
	// lease; b, which does, would only after two.
	b.e.Yield("test")
	s.round(b)
	s.round(a)
	s.clk.Advance(testLease + time.Millisecond)
	s.round(b)
	if b.held(s.clk.Now()) {
		t.Fatal("b took the lead back after one lease, though it had yielded")
	}
	s.round(a)
	if !a.held(s.clk.Now()) {
		t.Fatal("a did not take the lead a lease after b yielded")
	}
}

// A stale read (a lagging replica answers a direct get with an older
// revision) makes no leader step down and no follower go back to an
// older leader.
func TestLeaseStaleReadsChangeNothing(t *testing.T) {
	s, a, others := group(t, "b")
	b := others[0]
	s.round(b)
	oldState, oldRev := s.fake.Load()
	s.clk.Advance(time.Second)
	s.round(a) // a renews: a newer revision
	_, newRev := s.fake.Load()
	s.round(b)
	if b.e.Observed().Revision != newRev {
		t.Fatalf("b saw revision %d, want %d", b.e.Observed().Revision, newRev)
	}
	// A renewal whose reply is lost: the next one conflicts with a's own
	// write, and its look finds the stale entry.
	s.clk.Advance(time.Second)
	s.fake.LoseReplies(true)
	s.round(a)
	s.fake.LoseReplies(false)
	stale := oldState
	stale.Leader = "x"
	s.fake.ServeStale(stale, oldRev)
	s.clk.Advance(250 * time.Millisecond)
	s.round(a)
	if !a.held(s.clk.Now()) {
		t.Fatal("a stale read made the leader step down")
	}
	s.round(b)
	if obs := b.e.Observed(); obs.Revision != newRev || obs.State.Leader != "a" {
		t.Fatalf("b went back to %+v after a stale read", obs)
	}
	s.fake.ServeStale(State{}, 0)
}

// A renewal whose reply is lost leaves the lead to its deadline; the next
// renewal finds its own write, adopts the revision, and keeps the lead and
// epoch; the lost write does not extend the deadline.
func TestLeaseLostReply(t *testing.T) {
	s, a, _ := group(t, "b")
	ep := epochOf(t, a, s.clk.Now())
	s.clk.Advance(time.Second)
	s.fake.LoseReplies(true)
	s.round(a)
	s.fake.LoseReplies(false)
	_, lostRev := s.fake.Load()
	deadline := a.e.lead.Load().deadline
	s.clk.Advance(250 * time.Millisecond)
	s.round(a) // conflict: own write, adopted
	if l := a.e.lead.Load(); l == nil || l.rev != lostRev || !l.deadline.Equal(deadline) {
		t.Fatalf("after the conflict: %+v, want rev %d deadline %v", l, lostRev, deadline)
	}
	s.round(a) // renewed on the adopted revision
	if got := epochOf(t, a, s.clk.Now()); got != ep {
		t.Fatalf("epoch %d, want %d", got, ep)
	}
	if _, rev := s.fake.Load(); rev != lostRev+1 {
		t.Fatalf("revision %d, want %d", rev, lostRev+1)
	}
}

// Only members of the stored in-sync set take over: not an outsider, not
// a member whose data dir was wiped (same instance, new identity), and no
// member without Bootstrap creates a group.
func TestLeaseNotInSyncNeverTakesOver(t *testing.T) {
	s, a, bs := group(t, "b")
	a.stopped = true
	bs[0].stopped = true
	c := s.add("c", "dir-c", true)
	wiped := s.add("b", "dir-b-new", true)
	s.run(10*testLease, nil)
	if h := s.holder(); h != nil {
		t.Fatalf("%v took the lead", h.m)
	}
	if o := c.e.Observed(); o.State.Leader != "a" {
		t.Fatalf("c observes %+v", o)
	}
	bs[0].stopped = false
	s.run(2*testLease, nil)
	if h := s.holder(); h != bs[0] {
		t.Fatalf("holder %v, want b", h)
	}
	if wiped.held(s.clk.Now()) || c.held(s.clk.Now()) {
		t.Fatal("an outsider holds the lead")
	}

	e := newSim(t)
	n := e.add("x", "dir-x", false)
	e.run(5*testLease, nil)
	if n.held(e.clk.Now()) || n.e.Observed().Revision != 0 {
		t.Fatalf("a member without Bootstrap created the group: %+v", n.e.Observed())
	}
}

// Epochs strictly increase across changes of leader, whatever other keys
// do to revisions, and stay the same across renewals; every member
// observes the same epoch for a leadership.
func TestLeaseEpochs(t *testing.T) {
	s, a, bs := group(t, "b", "c")
	b, c := bs[0], bs[1]
	var epochs []uint64
	last := uint64(0)
	watch := func(now time.Time) {
		if h := s.holder(); h != nil {
			ep := epochOf(t, h, now)
			if ep != last {
				if ep < last {
					t.Fatalf("epoch went back: %d -> %d", last, ep)
				}
				epochs = append(epochs, ep)
				last = ep
			}
		}
	}
	order := []*node{a, b, c, a, b}
	for i, n := range order {
		// Only n runs: the others are paused, so n takes over.
		for _, o := range []*node{a, b, c} {
			o.stopped = o != n
		}
		s.fake.Bump(uint64(7 * i))
		s.run(3*testLease, watch)
		if s.holder() != n {
			t.Fatalf("round %d: holder %v, want %v", i, s.holder(), n.m)
		}
		st, rev := s.fake.Load()
		if st.Epoch != last || st.EpochAt(rev) != last {
			t.Fatalf("stored %+v at %d, epoch %d", st, rev, last)
		}
	}
	if len(epochs) != len(order) {
		t.Fatalf("epochs %v, want %d leaderships", epochs, len(order))
	}
	for _, n := range []*node{a, b, c} {
		var prev uint64
		for _, ch := range n.log() {
			if ch.Epoch < prev {
				t.Fatalf("%v: changes went back in epoch: %+v", n.m, n.log())
			}
			prev = ch.Epoch
		}
	}
	t.Logf("epochs %v", epochs)
}

// HandOver: the holder stops holding before its write; the member handed
// to takes the lead at once, in the handover's revision as epoch, and
// learns the committed offset handed with it (for that epoch only, kept
// across renewals, never stored after its first write); the others wait;
// the resigned member campaigns no more. Handing to a member not in sync
// is refused; handing to nobody lets any in-sync member take it at once.
func TestLeaseHandOver(t *testing.T) {
	s, a, bs := group(t, "b", "c")
	b, c := bs[0], bs[1]
	ctx := context.Background()
	if err := a.e.HandOver(ctx, "z", 0); err == nil || !a.held(s.clk.Now()) {
		t.Fatalf("handover to an outsider: %v, held %v", err, a.held(s.clk.Now()))
	}
	if err := a.e.HandOver(ctx, "b", 1801); err != nil {
		t.Fatal(err)
	}
	if a.held(s.clk.Now()) {
		t.Fatal("a holds after handing over")
	}
	st, hrev := s.fake.Load()
	if st.Leader != "b" || st.HandedBy != "a" || st.Epoch != 0 || st.Committed != 1801 {
		t.Fatalf("stored %+v", st)
	}
	s.round(c)
	if c.held(s.clk.Now()) {
		t.Fatal("c took a lead handed to b")
	}
	s.round(b)
	if ep := epochOf(t, b, s.clk.Now()); ep != hrev {
		t.Fatalf("b's epoch %d, want the handover's revision %d", ep, hrev)
	}
	if st, _ := s.fake.Load(); st.Epoch != hrev || st.HandedBy != "" || st.Leader != "b" || st.Committed != 0 {
		t.Fatalf("stored after accepting %+v", st)
	}
	if got := b.e.HandedCommitted(hrev); got != 1801 {
		t.Fatalf("b's handed committed offset %d, want 1801", got)
	}
	if got := b.e.HandedCommitted(hrev + 1); got != 0 {
		t.Fatalf("handed committed offset for another epoch: %d", got)
	}
	s.run(testLease, nil) // renewals
	if got, st := b.e.HandedCommitted(hrev), s.stored(); got != 1801 || st.Committed != 0 {
		t.Fatalf("after renewals: handed %d, stored %+v", got, st)
	}
	if ch := b.log()[len(b.log())-1]; ch.Role != Leader || !strings.Contains(ch.Reason, "handed over by a") {
		t.Fatalf("b's change %+v", ch)
	}
	b.stopped = true
	s.run(3*testLease, nil)
	if s.holder() != c {
		t.Fatalf("holder %v, want c (a resigned)", s.holder())
	}
	if got := c.e.HandedCommitted(epochOf(t, c, s.clk.Now())); got != 0 {
		t.Fatalf("c took an expired lease, yet has a handed committed offset %d", got)
	}

	// Release: no target, the first in-sync member to look takes it.
	ep := epochOf(t, c, s.clk.Now())
	if err := c.e.HandOver(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	b.stopped = false
	s.round(b)
	if got := epochOf(t, b, s.clk.Now()); got <= ep {
		t.Fatalf("epoch %d after %d", got, ep)
	}
}

// OnChange may call the elector (here: hand over as soon as leading)
// without deadlock, and sees changes in order.
func TestLeaseOnChangeReentrant(t *testing.T) {
	clk, fake := newClock(), NewFake()
	var e *Elector
	var got []Change
	e, err := New(fake, Config{Self: Member{"a", "d"}, Lease: testLease, Bootstrap: true, Clock: clk,
		OnChange: func(c Change) {
			got = append(got, c)
			if c.Role == Leader {
				if err := e.HandOver(context.Background(), "", 0); err != nil {
					t.Error(err)
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	e.round(context.Background())
	if len(got) < 2 || got[0].Role != Leader || got[len(got)-1].Role != Candidate || got[len(got)-1].Leader != "" {
		t.Fatalf("changes %+v", got)
	}
}

// Two candidates racing for the same expired lease, or to create the
// group: exactly one wins.
func TestLeaseRace(t *testing.T) {
	for range 50 {
		s, a, bs := group(t, "b", "c")
		a.stopped = true
		s.round(bs[0])
		s.round(bs[1])
		s.clk.Advance(testLease)
		race(t, s, bs)

		s = newSim(t)
		race(t, s, []*node{s.add("x", "dx", true), s.add("y", "dy", true), s.add("z", "dz", true)})
	}
}

func race(t *testing.T, s *sim, ns []*node) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Go(func() { n.e.round(context.Background()) })
	}
	wg.Wait()
	winners := 0
	for _, n := range ns {
		if n.held(s.clk.Now()) {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d winners", winners)
	}
}

// Look makes a running elector look at the register now: a member handed
// the lead takes it at once, not at its next round (here an hour away).
func TestLeaseLookTakesAHandoverAtOnce(t *testing.T) {
	fake := NewFake()
	a, err := New(fake, Config{Self: Member{"a", "dir-a"}, Lease: 3 * time.Hour, Bootstrap: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.round(ctx)
	b := Member{"b", "dir-b"}
	if err := a.SetInSync(ctx, []Member{a.cfg.Self, b}); err != nil {
		t.Fatal(err)
	}
	led := make(chan struct{}, 1)
	be, err := New(fake, Config{Self: b, Lease: 3 * time.Hour, OnChange: func(c Change) {
		if c.Role == Leader {
			led <- struct{}{}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	looked := make(chan struct{})
	go func() { defer close(looked); be.Run(ctx) }()
	eventually(t, func() bool { return be.Observed().State.Leader == "a" })
	if err := a.HandOver(ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	be.Look()
	select {
	case <-led:
	case <-time.After(10 * time.Second): // its next round without Look: an hour
		t.Fatal("b did not take the lead handed to it when told to look")
	}
	cancel()
	<-looked
}

// eventually polls cond for up to ten seconds.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
