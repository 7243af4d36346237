package group

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
)

func openBase(t *testing.T) *BaseFile {
	t.Helper()
	b, err := OpenBase(filepath.Join(t.TempDir(), "base"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Trimming the journal folds what it deletes into the base, durably: the
// base and what is left of the journal name what the whole journal did,
// and so they do after a reopen.
func TestTrimJournalFoldsWhatItDeletesIntoTheBase(t *testing.T) {
	m := newRetainingMember(t, true)
	m.lead(t, rand.New(rand.NewPCG(9, 10)), 1500)
	m.commitStarts(t)
	base := openBase(t)
	whole, err := ReadNamed(m.journal, base.Get())
	if err != nil {
		t.Fatal(err)
	}
	first, err := TrimJournal(m.journal, base, m.journal.End()-200)
	if err != nil || first == 0 || first > m.journal.End()-200 || base.Get().At != first {
		t.Fatalf("trimmed to %d (base at %d), %v; want a journal start in (0, %d]", first, base.Get().At, err, m.journal.End()-200)
	}
	reopened, err := OpenBase(base.path)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*Base{"the base": base.Get(), "the base reopened": reopened.Get()} {
		named, err := ReadNamed(m.journal, b)
		if err != nil || !reflect.DeepEqual(named.ends, whole.ends) {
			t.Fatalf("%s and the trimmed journal name %v (%v), the whole journal named %v", name, named.ends, err, whole.ends)
		}
	}
}

// A member whose journal ends below its leader's first journal offset
// is told so, takes a snapshot (each log copied up to a committed
// journal offset, from where the leader's retention left it), and then
// copies the journal on: it ends with the leader's records and what its
// journal names is what the leader's names.
func TestAMemberBehindTheLeadersJournalCatchesUpByASnapshot(t *testing.T) {
	nc := startNATS(t, 64<<10) // small replies: pages and reads come in many pieces
	rng := rand.New(rand.NewPCG(11, 12))
	leader, leaderBase := newRetainingMember(t, true), openBase(t)
	epochs := openEpochs(t)
	if err := epochs.Assign(1, 0); err != nil {
		t.Fatal(err)
	}
	source := &Source{Store: leader.store, Journal: leader.journal, Epochs: epochs, MaxPayload: int(nc.MaxPayload()), Base: leaderBase,
		Leading:   func() (uint64, bool) { return 1, true },
		Report:    func(string, uint64) (uint64, bool) { return leader.journal.End(), true },
		Committed: func() (uint64, <-chan struct{}) { return leader.journal.End(), nil }}
	sub, err := source.Serve(nc, PullSubject("g", "leader"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	leader.lead(t, rng, 1500)
	leader.commitStarts(t)
	if first, err := TrimJournal(leader.journal, leaderBase, leader.journal.End()-200); err != nil || first == 0 {
		t.Fatalf("trim: journal from %d, %v", first, err)
	}

	follower, followerBase := newRetainingMember(t, false), openBase(t)
	sink := NewSink(follower.store, follower.journal, openEpochs(t), "follower")
	sink.Base = followerBase
	ctx := context.Background()
	subject := PullSubject("g", "leader")
	if _, _, err := sink.Pull(ctx, nc, subject, 64<<10, 0); !errors.Is(err, ErrBehind) {
		t.Fatalf("pull from 0 past a trimmed journal: %v, want ErrBehind", err)
	}
	at, copied, err := sink.Snapshot(ctx, nc, subject, 64<<10)
	if err != nil || copied == 0 || at != leader.journal.End() {
		t.Fatalf("snapshot: at %d, %d records, %v; want at %d", at, copied, err, leader.journal.End())
	}
	leader.lead(t, rng, 100)
	leader.commitStarts(t)
	for pulls := 0; follower.journal.End() < leader.journal.End(); pulls++ {
		if _, _, err := sink.Pull(ctx, nc, subject, 64<<10, 0); err != nil || pulls > 1000 {
			t.Fatalf("pull %d after the snapshot: %v", pulls, err)
		}
	}
	sink.Settle()
	follower.commitStarts(t) // the markers copied after the snapshot
	wantLogs, _ := leader.contents(t)
	if gotLogs, _ := follower.contents(t); !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the logs differ after the snapshot and the copy")
	}
	want, err := ReadNamed(leader.journal, leaderBase.Get())
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadNamed(follower.journal, followerBase.Get())
	if err != nil || !reflect.DeepEqual(got.ends, want.ends) {
		t.Fatalf("the follower's base and journal name %v (%v), the leader's %v", got.ends, err, want.ends)
	}
	if sink.Durable() != follower.journal.End() {
		t.Fatalf("durable %d, journal end %d", sink.Durable(), follower.journal.End())
	}
}
