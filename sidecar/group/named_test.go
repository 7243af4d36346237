package group

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/voik/voik/logstore"
)

// A member that stopped between records and their pointers holds records
// no pointer names; before it leads it drops exactly those, in subjects
// the journal names and in one it names nothing of, and nothing else.
func TestDropUnnamedDropsExactlyTheRecordsNoPointerNames(t *testing.T) {
	m := newMember(t)
	m.lead(t, rand.New(rand.NewPCG(19, 20)), 60)
	wantLogs, wantJournal := m.contents(t)
	subject := m.journal.mustLast(t).Subject
	for range 3 { // appended, then the stop: no pointers
		if _, _, err := m.store.Append(subject, []logstore.Entry{{Data: []byte("unnamed")}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := m.store.Append("brand.new", []logstore.Entry{{Data: []byte("unnamed")}, {Data: []byte("unnamed")}}); err != nil {
		t.Fatal(err)
	}
	named, err := ReadNamed(m.journal, &Base{})
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := named.DropUnnamed(m.store)
	if err != nil || dropped != 5 {
		t.Fatalf("dropped %d, %v; want the 5 unnamed records", dropped, err)
	}
	gotLogs, gotJournal := m.contents(t)
	delete(gotLogs, "brand.new")
	if !reflect.DeepEqual(gotLogs, wantLogs) || !reflect.DeepEqual(gotJournal, wantJournal) {
		t.Fatal("DropUnnamed changed what the journal names")
	}
	err = m.store.View("brand.new", func(l *logstore.Log) error {
		if l.EndOffset() != l.FirstOffset() {
			t.Errorf("brand.new holds [%d, %d): none of it is named", l.FirstOffset(), l.EndOffset())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A group that starts on a data dir with records (a standalone voik's)
// names them all, so that a follower copies them, and none is dropped.
func TestNameAllMakesADataDirsRecordsTheGroups(t *testing.T) {
	leader, follower := newMember(t), newMember(t)
	for i := range 40 {
		subject := []string{"a", "b", "c"}[i%3]
		if _, _, err := leader.store.Append(subject, []logstore.Entry{{Data: payloadOf(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	named, err := ReadNamed(leader.journal, &Base{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := named.NameAll(leader.store, leader.journal); err != nil || n != 40 {
		t.Fatalf("named %d, %v; want 40", n, err)
	}
	if n, err := named.NameAll(leader.store, leader.journal); err != nil || n != 0 {
		t.Fatalf("naming again named %d, %v", n, err)
	}
	// As a member opening a standalone data dir does: a zero Named.
	other := newMember(t)
	if _, _, err := other.store.Append("a", []logstore.Entry{{Data: payloadOf(1)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := new(Named).NameAll(other.store, other.journal); err != nil || n != 1 {
		t.Fatalf("a zero Named named %d, %v; want 1", n, err)
	}
	if dropped, err := named.DropUnnamed(leader.store); err != nil || dropped != 0 {
		t.Fatalf("dropped %d, %v after naming all", dropped, err)
	}
	for follower.journal.End() < leader.journal.End() {
		entries, err := Collect(leader.store, leader.journal, follower.journal.End(), 100, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Apply(follower.store, follower.journal, entries); err != nil {
			t.Fatal(err)
		}
	}
	wantLogs, _ := leader.contents(t)
	if gotLogs, _ := follower.contents(t); !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the follower's copy of a named data dir differs")
	}
	reread, err := ReadNamed(leader.journal, &Base{})
	if err != nil || !reflect.DeepEqual(reread.ends, named.ends) {
		t.Fatalf("read again: %v, %v; kept: %v", reread.ends, err, named.ends)
	}
}

func payloadOf(i int) []byte { return []byte{byte(i), byte(i >> 8), 'x'} }

func (j *Journal) mustLast(t *testing.T) Pointer {
	t.Helper()
	pointers, err := j.Read(j.End()-1, 1)
	if err != nil || len(pointers) != 1 {
		t.Fatal(err)
	}
	return pointers[0]
}
