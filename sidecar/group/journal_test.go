package group

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/voik/voik/logstore"
)

func testOptions() logstore.Options {
	return logstore.Options{
		SegmentBytes: 64 << 10, InitialSegmentBytes: 4 << 10,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// member is a store and its journal, in a directory of their own.
type member struct {
	store   *logstore.Store
	journal *Journal
}

func newMember(t testing.TB) *member {
	t.Helper()
	dir := t.TempDir()
	store, err := logstore.OpenStore(filepath.Join(dir, "data"), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	journal, err := OpenJournal(filepath.Join(dir, "journal"), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close(); store.Close() })
	return &member{store: store, journal: journal}
}

// lead appends n records across subjects as a leader's capture does:
// each to its subject's log, then its pointer to the journal.
func (m *member) lead(t *testing.T, rng *rand.Rand, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		subject := fmt.Sprintf("orders.%d", rng.IntN(13))
		var headers logstore.Headers
		if rng.IntN(3) == 0 {
			headers = logstore.Headers{"Nats-Msg-Id": {fmt.Sprint(i)}}
		}
		entries := []logstore.Entry{{Headers: headers, Data: make([]byte, rng.IntN(2000))}}
		first, _, err := m.store.Append(subject, entries)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.journal.Append([]Pointer{{Subject: subject, Offset: first}}); err != nil {
			t.Fatal(err)
		}
	}
}

// contents is every subject's records and the journal's pointers.
func (m *member) contents(t *testing.T) (map[string][]logstore.Record, []Pointer) {
	t.Helper()
	logs := map[string][]logstore.Record{}
	for _, subject := range m.store.Subjects() {
		err := m.store.View(subject, func(l *logstore.Log) error {
			records, err := l.Read(l.FirstOffset(), int(l.EndOffset()-l.FirstOffset()))
			logs[subject] = records
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	pointers, err := m.journal.Read(m.journal.Log().FirstOffset(), int(m.journal.End())+1)
	if err != nil {
		t.Fatal(err)
	}
	return logs, pointers
}

// A follower that copies its leader's journal in batches of any size,
// through Collect and Apply, holds the same records at the same offsets
// in every subject, and the same journal.
func TestAFollowerCopiesItsLeaderRecordForRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	leader, follower := newMember(t), newMember(t)
	for round := 0; round < 5; round++ {
		leader.lead(t, rng, 300)
		copyAll(t, rng, leader, follower)
	}
	wantLogs, wantJournal := leader.contents(t)
	gotLogs, gotJournal := follower.contents(t)
	if !reflect.DeepEqual(gotJournal, wantJournal) {
		t.Fatal("the journals differ")
	}
	if !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the subjects' logs differ")
	}
}

// A follower that stopped after appending a batch's records, before
// their pointers, applies the batch again without storing anything
// twice; records that no pointer names and that differ from the
// leader's are replaced.
func TestApplyIsIdempotentAndReplacesRecordsNoPointerNames(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	leader, follower := newMember(t), newMember(t)
	leader.lead(t, rng, 50)
	entries, err := Collect(leader.store, leader.journal, 0, 50, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries[:30] { // the records of the first 30, no pointers: the stop
		if _, err := applyRun(follower.store, []Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := Apply(follower.store, follower.journal, entries); err != nil || n != 50 {
		t.Fatalf("apply after the stop: %d, %v", n, err)
	}
	wantLogs, _ := leader.contents(t)
	if gotLogs, _ := follower.contents(t); !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the logs differ after applying a batch twice")
	}

	// A follower that stopped after appending records of a leader that
	// then died uncommitted: a new leader sends other records at those
	// offsets. No pointer names the old ones: they are replaced.
	other := newMember(t)
	for _, e := range entries[:10] {
		stale := e
		stale.Data = []byte("from a leader that never committed")
		if _, err := applyRun(other.store, []Entry{stale}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := Apply(other.store, other.journal, entries); err != nil || n != 50 {
		t.Fatalf("apply over records no pointer names: %d, %v", n, err)
	}
	if gotLogs, _ := other.contents(t); !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the records no pointer named were not replaced by the leader's")
	}
}

// Collect always returns at least one record, however small maxBytes, so
// that a copy moves on; and a batch that starts anywhere but the
// follower's journal end is refused.
func TestCollectMovesOnAndApplyStartsAtTheEnd(t *testing.T) {
	leader, follower := newMember(t), newMember(t)
	leader.lead(t, rand.New(rand.NewPCG(5, 6)), 5)
	entries, err := Collect(leader.store, leader.journal, 2, 10, 1)
	if err != nil || len(entries) != 1 || entries[0].Journal != 2 {
		t.Fatalf("collect with maxBytes 1: %+v, %v", entries, err)
	}
	if n, err := Apply(follower.store, follower.journal, entries); n != 0 || !errors.Is(err, logstore.ErrNotAtEnd) {
		t.Fatalf("apply at journal offset 2 to an empty journal: %d, %v", n, err)
	}
}

// A batch whose records of one subject skip an offset is not a copy of a
// journal; nothing of it is applied.
func TestApplyRefusesABatchWithAGapInASubject(t *testing.T) {
	follower := newMember(t)
	entries := []Entry{
		{Journal: 0, Subject: "a", Offset: 0, Timestamp: 1, Data: []byte("x")},
		{Journal: 1, Subject: "b", Offset: 0, Timestamp: 1, Data: []byte("y")},
		{Journal: 2, Subject: "a", Offset: 2, Timestamp: 1, Data: []byte("z")},
	}
	if n, err := Apply(follower.store, follower.journal, entries); n != 0 || err == nil {
		t.Fatalf("apply with a gap: %d, %v", n, err)
	}
	if follower.journal.End() != 0 || len(follower.store.Subjects()) != 0 {
		t.Fatal("something of a refused batch was applied")
	}
}

// Capture handlers stamp the records of different subjects, so a record
// journaled later may be older than one journaled before it: the journal
// stamps its pointers itself, and a follower copies those stamps.
func TestTheJournalTakesRecordsWhoseTimestampsDoNotAscend(t *testing.T) {
	leader, follower := newMember(t), newMember(t)
	for i, ts := range []int64{500, 300, 400, 100} {
		subject := fmt.Sprintf("s.%d", i)
		if _, err := leader.store.AppendAt(subject, 0, []logstore.Entry{{Timestamp: ts, Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := leader.journal.Append([]Pointer{{Subject: subject, Offset: 0}}); err != nil {
			t.Fatalf("journaling a record stamped %d after one stamped 500: %v", ts, err)
		}
	}
	entries, err := Collect(leader.store, leader.journal, 0, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Apply(follower.store, follower.journal, entries); err != nil || n != 4 {
		t.Fatalf("apply: %d, %v", n, err)
	}
	wantLogs, wantJournal := leader.contents(t)
	gotLogs, gotJournal := follower.contents(t)
	if !reflect.DeepEqual(gotJournal, wantJournal) || !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the copy differs")
	}
}

// newRetainingMember is a member whose store holds its retention (small
// segments, few records kept); with lead, it journals a start marker
// where the limits would start a log, once for each new start, as a
// leader does.
func newRetainingMember(t *testing.T, lead bool) *member {
	t.Helper()
	dir := t.TempDir()
	m := &member{}
	opts := testOptions()
	opts.SegmentBytes = logstore.MinSegmentBytes
	opts.Retention = logstore.Retention{MaxMessages: 10}
	opts.HoldRetention = true
	marked := map[string]uint64{}
	opts.OnRetention = func(subject string, first uint64) {
		if !lead || first <= marked[subject] {
			return
		}
		marked[subject] = first
		if _, err := m.journal.Mark(subject, first); err != nil {
			t.Error(err)
		}
	}
	var err error
	if m.journal, err = OpenJournal(filepath.Join(dir, "journal"), testOptions()); err != nil {
		t.Fatal(err)
	}
	if m.store, err = logstore.OpenStore(filepath.Join(dir, "data"), opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.store.Close(); m.journal.Close() })
	return m
}

// copyAll copies the leader's journal to the follower in batches of
// random sizes until the follower has it all.
func copyAll(t *testing.T, rng *rand.Rand, leader, follower *member) {
	t.Helper()
	for follower.journal.End() < leader.journal.End() {
		entries, err := Collect(leader.store, leader.journal, follower.journal.End(), 1+rng.IntN(100), 1+rng.IntN(64<<10))
		if err != nil || len(entries) == 0 {
			t.Fatalf("collect from %d: %d entries, %v", follower.journal.End(), len(entries), err)
		}
		if n, err := Apply(follower.store, follower.journal, entries); err != nil || n != len(entries) {
			t.Fatalf("apply %d entries: %d, %v", len(entries), n, err)
		}
	}
}

// commitStarts deletes in m's logs by every start marker of its journal,
// as a member does once they are committed.
func (m *member) commitStarts(t *testing.T) {
	t.Helper()
	b, err := (&Base{}).readJournal(m.journal, m.journal.End())
	if err != nil {
		t.Fatal(err)
	}
	if err := DropToStarts(m.store, b.Starts); err != nil {
		t.Fatal(err)
	}
}

// The leader's retention reaches every member through the journal: the
// leader proposes where its limits would start each log (a start
// marker), and every member, the leader too, deletes by it once it is
// committed. A follower that copies all along deletes exactly what the
// leader does; one that was far behind while the leader deleted, and one
// that starts empty after (bootstrap after retention), start each log
// where the leader's starts.
// Both then hold the leader's records from there on, at the same offsets,
// and the same journal.
func TestFollowersStartEveryLogWhereTheLeadersRetentionLeftIt(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	leader := newRetainingMember(t, true)
	along, behind, late := newRetainingMember(t, false), newRetainingMember(t, false), newRetainingMember(t, false)
	for round := 0; round < 5; round++ {
		leader.lead(t, rng, 300)
		copyAll(t, rng, leader, along)
		if round == 0 {
			copyAll(t, rng, leader, behind)
		}
		leader.commitStarts(t)
		along.commitStarts(t)
	}
	// behind holds the first round and then copies pointers whose
	// records the leader has deleted since: it must jump over them.
	for _, f := range []*member{behind, late} {
		copyAll(t, rng, leader, f)
		f.commitStarts(t)
	}
	wantLogs, wantJournal := leader.contents(t)
	markers := 0
	for _, p := range wantJournal {
		if p.Start {
			markers++
		}
	}
	if markers == 0 {
		t.Fatal("the leader's retention deleted nothing: the test proves nothing")
	}
	for name, f := range map[string]*member{"a follower copying all along": along, "a follower far behind": behind, "a follower starting late": late} {
		gotLogs, gotJournal := f.contents(t)
		if !reflect.DeepEqual(gotJournal, wantJournal) {
			t.Errorf("%s: the journals differ", name)
		}
		for subject, want := range wantLogs {
			got := gotLogs[subject]
			if len(got) == 0 || len(want) == 0 || got[0].Offset != want[0].Offset {
				t.Errorf("%s: %s starts at %v, the leader's at %v", name, subject, firstOf(got), firstOf(want))
			} else if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: the records of %s differ", name, subject)
			}
		}
	}
	t.Logf("%d start markers; the leader kept %d subjects", markers, len(wantLogs))
}

func firstOf(records []logstore.Record) any {
	if len(records) == 0 {
		return "nothing"
	}
	return records[0].Offset
}
