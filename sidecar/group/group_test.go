package group

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/voik/voik/logstore"
)

// A record commits once every in-sync member holds it durably, and only
// while the in-sync set is a majority; reports never move it back.
func TestCommitFollowsTheLeastDurableInSyncMember(t *testing.T) {
	c, err := NewCommit(3, "a", []string{"a", "b", "c"}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Report("b", 7); got != 0 {
		t.Fatalf("committed %d before c reported", got)
	}
	if got := c.Report("c", 5); got != 5 {
		t.Fatalf("committed %d, want 5 (c's end)", got)
	}
	if got := c.Report("c", 3); got != 5 {
		t.Fatalf("a late report moved the commit back to %d", got)
	}
	if got := c.Report("c", 12); got != 7 {
		t.Fatalf("committed %d, want 7 (b's end)", got)
	}
	// c leaves the in-sync set (written to the lease first): the commit
	// then follows a and b alone.
	if err := c.SetInSync([]string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if got := c.Report("b", 10); got != 10 {
		t.Fatalf("committed %d with {a, b} at 10", got)
	}
	// Below a majority nothing commits, whatever is reported.
	if err := c.SetInSync([]string{"a"}); !errors.Is(err, ErrNoMajority) {
		t.Fatalf("an in-sync set of one of three: %v", err)
	}
	c.Report("a", 20)
	if got := c.Committed(); got != 10 {
		t.Fatalf("committed %d with the in-sync set below a majority", got)
	}
	if err := c.SetInSync([]string{"b", "c"}); err == nil {
		t.Fatal("an in-sync set without its leader was taken")
	}
}

// The in-sync set shrinks by the members furthest behind, never below a
// majority, and grows by those holding everything committed.
func TestInSyncProposalsKeepAMajority(t *testing.T) {
	c, err := NewCommit(5, "a", []string{"a", "b", "c", "d", "e"}, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	for member, end := range map[string]uint64{"b": 99, "c": 10, "d": 50, "e": 20} {
		c.Report(member, end)
	}
	never := func(string) bool { return false }
	if got := c.Lagging(70, never); !reflect.DeepEqual(got, []string{"c", "e"}) {
		t.Fatalf("lagging %v, want the two furthest behind that a majority allows: [c e]", got)
	}
	if got := c.Lagging(0, func(m string) bool { return m == "b" }); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("lagging %v, want [b]: silent, and holding less than the leader", got)
	}
	if err := c.SetInSync([]string{"a", "b", "d"}); err != nil {
		t.Fatal(err)
	}
	if got := c.Committed(); got != 50 {
		t.Fatalf("committed %d with {a b d}, want 50", got)
	}
	if got := c.Lagging(70, never); len(got) != 0 {
		t.Fatalf("lagging %v: dropping any would leave fewer than 3 of 5", got)
	}
	c.Report("e", 60)
	if got := c.CaughtUp(); !reflect.DeepEqual(got, []string{"e"}) {
		t.Fatalf("caught up %v, want [e] (60 >= committed 50; c at 10 is not)", got)
	}
}

func ep(epoch, start uint64) logstore.EpochStart {
	return logstore.EpochStart{Epoch: epoch, Start: start}
}

func epochs(t *testing.T, name string, list ...logstore.EpochStart) *logstore.Epochs {
	t.Helper()
	e, err := logstore.OpenEpochs(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	for _, es := range list {
		if err := e.Assign(es.Epoch, es.Start); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// Every truncation scenario of KIP-101 and KIP-279, as the member that
// rejoins computes it from the leader's answer.
func TestTruncationPointByLeaderEpoch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		member    []logstore.EpochStart
		memberEnd uint64
		leader    []logstore.EpochStart
		leaderEnd uint64
		want      uint64
		ok        bool
	}{
		{
			// KIP-101 scenario 1: A wrote m1, m2 in epoch 0; B held m1 when
			// A died, led epoch 1 from offset 1 and wrote m3 there. A drops
			// m2 (its offset 1), which a high watermark of 2 would keep.
			name: "a leader's uncommitted tail", member: []logstore.EpochStart{ep(0, 0)}, memberEnd: 2,
			leader: []logstore.EpochStart{ep(0, 0), ep(1, 1)}, leaderEnd: 2, want: 1, ok: true,
		},
		{
			// KIP-101 scenario 2: both lost their unsynced tails in a power
			// cut; B came back first and led. Same rule, same answer.
			name: "after a power cut", member: []logstore.EpochStart{ep(0, 0)}, memberEnd: 2,
			leader: []logstore.EpochStart{ep(0, 0), ep(1, 1)}, leaderEnd: 3, want: 1, ok: true,
		},
		{
			name: "the same history keeps everything", member: []logstore.EpochStart{ep(0, 0), ep(4, 9)}, memberEnd: 15,
			leader: []logstore.EpochStart{ep(0, 0), ep(4, 9)}, leaderEnd: 20, want: 15, ok: true,
		},
		{
			name: "a member that fell behind keeps all it has", member: []logstore.EpochStart{ep(0, 0)}, memberEnd: 4,
			leader: []logstore.EpochStart{ep(0, 0), ep(2, 10)}, leaderEnd: 30, want: 4, ok: true,
		},
		{
			// KIP-279: the member led epoch 2 briefly and wrote 5..7 that
			// nobody copied; the leader never had epoch 2, and answers for
			// epoch 0, which ended at 5 there (epoch 3 began at 5).
			name: "an epoch the leader never had", member: []logstore.EpochStart{ep(0, 0), ep(2, 5)}, memberEnd: 8,
			leader: []logstore.EpochStart{ep(0, 0), ep(3, 5)}, leaderEnd: 10, want: 5, ok: true,
		},
		{
			// KIP-279 again, where the member's own older epoch ended first.
			name: "an older epoch that ended sooner here", member: []logstore.EpochStart{ep(1, 0), ep(2, 3)}, memberEnd: 6,
			leader: []logstore.EpochStart{ep(1, 0), ep(3, 4)}, leaderEnd: 9, want: 3, ok: true,
		},
		{
			name: "nothing in common", member: []logstore.EpochStart{ep(1, 0)}, memberEnd: 4,
			leader: []logstore.EpochStart{ep(5, 0)}, leaderEnd: 9, want: 0, ok: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			member, leader := epochs(t, "member", tc.member...), epochs(t, "leader", tc.leader...)
			latest, _ := member.Latest()
			held, leaderEnd, found := leader.EndOffsetFor(latest.Epoch, tc.leaderEnd)
			got, ok := TruncationPoint(member, tc.memberEnd, held, leaderEnd, found)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("truncate to %d (%v), want %d (%v)", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestCommitFrozenTakesReportsAndMovesOnThaw: while frozen (a grown
// in-sync set being stored) reports are kept and the committed offset
// stays; Thaw moves it by what was reported meanwhile.
func TestCommitFrozenTakesReportsAndMovesOnThaw(t *testing.T) {
	c, err := NewCommit(3, "a", []string{"a", "b"}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Freeze()
	if got := c.Report("b", 8); got != 0 {
		t.Fatalf("committed %d while frozen, want 0", got)
	}
	c.Thaw()
	if got := c.Committed(); got != 8 {
		t.Fatalf("committed %d after thaw, want 8", got)
	}
}
