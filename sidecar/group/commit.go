// Package group holds the parts of a replication group (PROTOCOL.md
// section 8) that are decisions rather than I/O: what is committed, and
// where a rejoining member truncates. The leader's lease lives in package
// lease; the journal and the copying over NATS use these.
package group

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// Commit is the leader's account of what the group holds. Every member
// reports the journal offset below which it holds every record durably
// (its durable end); a record is committed once every member of the
// in-sync set holds it, and the in-sync set always holds the leader and
// never fewer than a majority of the group's members: while it would,
// nothing commits (acks wait, then get 503).
//
// The in-sync set itself lives in the lease's key-value entry. Commit
// only proposes changes to it (Lagging, CaughtUp); the caller writes the
// new set there first and then applies it (SetInSync), so that the
// committed offset never moves without a member the stored set still
// names, nor with one it does not name yet.
type Commit struct {
	replicas  int
	leader    string
	inSync    []string          // sorted
	durable   map[string]uint64 // every member that has reported, in sync or not
	committed uint64
	frozen    bool // Freeze: reports are taken, the committed offset stays
}

// Freeze keeps the committed offset where it is, while reports are still
// taken: for the time it takes to store a grown in-sync set, so that the
// offset does not move without a member the stored set already names.
func (c *Commit) Freeze() { c.frozen = true }

// Thaw lets the committed offset move again, and moves it.
func (c *Commit) Thaw() {
	c.frozen = false
	c.advance()
}

// ErrNoMajority: an in-sync set smaller than a majority of the group.
var ErrNoMajority = errors.New("group: in-sync set below a majority")

// Majority is how many members make a majority of replicas.
func Majority(replicas int) int { return replicas/2 + 1 }

// NewCommit starts the account of a leader that holds its journal
// durably up to durableEnd, with the in-sync set stored in the lease and
// the committed offset it knows (never moved back). With an in-sync set
// below a majority it returns the account and ErrNoMajority: nothing
// commits until the set grows.
func NewCommit(replicas int, leader string, inSync []string, durableEnd, committed uint64) (*Commit, error) {
	c := &Commit{replicas: replicas, leader: leader, durable: map[string]uint64{leader: durableEnd}, committed: committed}
	if err := c.SetInSync(inSync); err != nil {
		if errors.Is(err, ErrNoMajority) {
			return c, err
		}
		return nil, err
	}
	return c, nil
}

// Committed is the journal offset below which every record is committed.
func (c *Commit) Committed() uint64 { return c.committed }

// InSync is the in-sync set, sorted.
func (c *Commit) InSync() []string { return slices.Clone(c.inSync) }

// Durable is what member last reported holding durably, and whether it
// has reported.
func (c *Commit) Durable(member string) (uint64, bool) {
	end, ok := c.durable[member]
	return end, ok
}

// Report records that member holds the journal durably below end, and
// returns the committed offset, which it may have moved. A member's
// report never moves back (a late, reordered one is ignored).
func (c *Commit) Report(member string, end uint64) uint64 {
	if held, ok := c.durable[member]; !ok || end > held {
		c.durable[member] = end // a member with nothing yet is known, and may catch up
	}
	c.advance()
	return c.committed
}

// advance moves the committed offset to the least durable end in the
// in-sync set, if that is further; with the set below a majority it does
// not move.
func (c *Commit) advance() {
	if c.frozen || len(c.inSync) < Majority(c.replicas) {
		return
	}
	least := uint64(0)
	for i, member := range c.inSync {
		end := c.durable[member] // one that has not reported holds nothing yet
		if i == 0 || end < least {
			least = end
		}
	}
	c.committed = max(c.committed, least)
}

// SetInSync applies an in-sync set that the lease's entry now holds: it
// must hold the leader, and at least a majority of the group.
func (c *Commit) SetInSync(members []string) error {
	set := slices.Clone(members)
	slices.Sort(set)
	set = slices.Compact(set)
	if !slices.Contains(set, c.leader) {
		return fmt.Errorf("group: in-sync set %v without its leader %s", set, c.leader)
	}
	if len(set) < Majority(c.replicas) {
		c.inSync = set
		return fmt.Errorf("%w: %d of %d members, %d needed", ErrNoMajority, len(set), c.replicas, Majority(c.replicas))
	}
	c.inSync = set
	c.advance()
	return nil
}

// Lagging proposes the in-sync members to drop (the leader aside): those
// that do not hold what the leader held durably a lease ago (ago), and
// those that have gone silent (not pulled for a lease) while holding less
// than the leader does now. The caller writes the smaller set to the
// lease before SetInSync; the set never shrinks below a majority, so the
// proposal is cut to what would keep one (the furthest behind dropped
// first).
func (c *Commit) Lagging(ago uint64, silent func(member string) bool) []string {
	head := c.durable[c.leader]
	var behind []string
	for _, member := range c.inSync {
		end := c.durable[member]
		if member != c.leader && (end < ago || (end < head && silent(member))) {
			behind = append(behind, member)
		}
	}
	slices.SortStableFunc(behind, func(a, b string) int {
		return cmp.Compare(c.durable[a], c.durable[b]) // furthest behind first
	})
	room := len(c.inSync) - Majority(c.replicas)
	return behind[:max(0, min(len(behind), room))]
}

// CaughtUp proposes the members outside the in-sync set that hold every
// committed record durably: they may join it (written to the lease
// first), after which a record commits only once they hold it too.
func (c *Commit) CaughtUp() []string {
	var ready []string
	for member, end := range c.durable {
		if !slices.Contains(c.inSync, member) && end >= c.committed {
			ready = append(ready, member)
		}
	}
	slices.Sort(ready)
	return ready
}
