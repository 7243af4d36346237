// Package lease is a replication group's leadership lease: who leads, in
// which epoch, and which members are in sync, kept as one value in a
// compare-and-set register (a JetStream key-value entry: KV) and changed
// only by compare-and-set on its revision.
//
// # The lease rule
//
// The register's entries carry no time that anyone trusts. As in
// client-go's leader election, a candidate takes the lead only after it has
// seen the entry's revision unchanged for Lease on its own monotonic clock,
// counting from when it first saw that revision, and then only by a
// compare-and-set on that revision. The holder renews by compare-and-set
// every RetryPeriod, and holds the lead until RenewDeadline (< Lease) after
// it sent the last write it knows succeeded.
//
// Safety: a write is sent before it is applied, and a candidate sees it only
// after it is applied, so the holder's deadline (send + RenewDeadline) comes
// before the earliest takeover (seen + Lease) by at least Lease -
// RenewDeadline; that margin absorbs the two clocks' rates and scheduling. A
// takeover that races a renewal fails its compare-and-set.
//
// # Epochs
//
// The epoch of a leadership is the revision of the compare-and-set that
// took it (a takeover, the group's creation, or a handover), never of a
// renewal. That write cannot know its own revision, so it stores Epoch 0,
// meaning "the revision of this entry"; the leader's next write stores the
// epoch explicitly, and every later write of the same leadership keeps it.
// State.EpochAt resolves the rule. Revisions only grow, so epochs strictly
// increase across changes of leader.
//
// # Membership
//
// Only a member of the stored in-sync set (instance and data dir identity
// both) may take the lead: a member whose disk was wiped has a new data dir
// identity and cannot lead until the leader adds it back. The leader
// changes the set with Elector.SetInSync.
package lease

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Member is a member of a group: an instance (VOIK_INSTANCE) with the
// identity of its data dir, which changes when the dir is wiped.
type Member struct {
	Instance  string `json:"instance"`
	DataDirID string `json:"data_dir_id"`
}

func (m Member) String() string { return m.Instance + "/" + m.DataDirID }

// State is the value of a group's key.
type State struct {
	// Leader is the instance that holds, or is handed, the lead; empty
	// when nobody leads (released).
	Leader string `json:"leader"`
	// Epoch is the leadership's epoch; 0 means the revision of the entry
	// that holds it (see EpochAt).
	Epoch uint64 `json:"epoch"`
	// InSync is the in-sync set. A leader is always in it.
	InSync []Member `json:"in_sync"`
	// HandedBy is the instance that handed the lead to Leader; set only
	// by a handover, cleared by the new leader's first write. Only such an
	// entry lets its Leader take the lead at once.
	HandedBy string `json:"handed_by,omitempty"`
	// Committed, with HandedBy, is the journal offset below which the
	// member that handed over had committed every record. Its Leader,
	// in sync, holds all of that, and counts it committed from its first
	// moment as leader instead of after its first commit: a reader who
	// was given an offset up to there never finds it out of range.
	// Cleared, with HandedBy, by the new leader's first write.
	Committed uint64 `json:"committed,omitempty"`
}

// EpochAt is the epoch of the leadership s records when s is the entry at
// revision rev.
func (s State) EpochAt(rev uint64) uint64 {
	if s.Epoch == 0 {
		return rev
	}
	return s.Epoch
}

// InSyncHas says whether m (instance and data dir) is in the in-sync set.
func (s State) InSyncHas(m Member) bool { return slices.Contains(s.InSync, m) }

func (s State) inSyncInstance(instance string) bool {
	return slices.ContainsFunc(s.InSync, func(m Member) bool { return m.Instance == instance })
}

func (s State) clone() State {
	s.InSync = slices.Clone(s.InSync)
	return s
}

// Marshal encodes s as the register's value (JSON).
func (s State) Marshal() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a struct of strings and numbers
	}
	return b
}

// Unmarshal decodes a register value.
func Unmarshal(b []byte) (State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("lease: bad group state %q: %w", b, err)
	}
	return s, nil
}
