package logstore

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
)

// readAll reads every record of l.
func readAll(t *testing.T, l *Log) []Record {
	t.Helper()
	records, err := l.Read(l.FirstOffset(), int(l.EndOffset()-l.FirstOffset()))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return records
}

// entriesOf turns records into the entries a replica appends.
func entriesOf(records []Record) []Entry {
	entries := make([]Entry, len(records))
	for i, r := range records {
		entries[i] = Entry{Timestamp: r.Timestamp, Headers: r.Headers, Data: r.Data}
	}
	return entries
}

// logSegmentBases lists the base offsets of l's segments.
func logSegmentBases(l *Log) []uint64 {
	var bases []uint64
	for _, s := range *l.segments.Load() {
		bases = append(bases, s.baseOffset)
	}
	return bases
}

// A replica that appends a leader's records with AppendAt, in batches of
// any size, holds the same records at the same offsets with the same
// timestamps (equal ones included, which Append would also keep, and
// none raised), headers and data; with the same options it even rotates
// at the same offsets. It survives a reopen the same.
func TestAppendAtCopiesALogExactly(t *testing.T) {
	forEachSyncPolicy(t, func(t *testing.T, dir string, opts Options) {
		source := openTestLog(t, filepath.Join(dir, "source"), opts)
		for i := 0; i < 300; i++ {
			ts := int64(1_000_000 + i/7) // runs of equal timestamps, as a batch of capture has
			if _, _, err := source.Append(ts, headersFor(i), payload(i)); err != nil {
				t.Fatal(err)
			}
		}
		want := readAll(t, source)
		copyDir := filepath.Join(dir, "copy")
		replica := openTestLog(t, copyDir, opts)
		for at, size := 0, 1; at < len(want); size = size*2 + 1 {
			batch := want[at:min(at+size, len(want))]
			n, err := replica.AppendAt(uint64(at), entriesOf(batch))
			if err != nil || n != len(batch) {
				t.Fatalf("AppendAt(%d, %d entries): %d, %v", at, len(batch), n, err)
			}
			at += n
		}
		if got := readAll(t, replica); !reflect.DeepEqual(got, want) {
			t.Fatalf("the copy differs from its source")
		}
		if got, want := logSegmentBases(replica), logSegmentBases(source); !reflect.DeepEqual(got, want) {
			t.Fatalf("segments at %v, the source's at %v", got, want)
		}
		replica.Close()
		reopened := openTestLog(t, copyDir, opts)
		if got := readAll(t, reopened); !reflect.DeepEqual(got, want) {
			t.Fatalf("the copy differs from its source after a reopen")
		}
	})
}

// An exact append anywhere but the end would leave a gap or overwrite:
// it is refused whole, with both offsets.
func TestAppendAtRefusesAnOffsetOtherThanTheEnd(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	appendN(t, l, 0, 5)
	for _, offset := range []uint64{0, 4, 6, 1 << 40} {
		n, err := l.AppendAt(offset, []Entry{{Timestamp: 1 << 60, Data: []byte("x")}})
		var endErr *EndError
		if n != 0 || !errors.Is(err, ErrNotAtEnd) || !errors.As(err, &endErr) || endErr.Offset != offset || endErr.End != 5 {
			t.Fatalf("AppendAt(%d) on a log ending at 5: %d, %v", offset, n, err)
		}
	}
	if l.EndOffset() != 5 {
		t.Fatalf("end offset %d after refused appends", l.EndOffset())
	}
	checkRecords(t, l, 0, 5)
}

// A copy never changes a timestamp: a zero (which Append reads as now) or
// one below the record before it is refused, with the entries after it;
// the valid ones before it are stored.
func TestAppendAtKeepsTimestampsOrRefusesThem(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stamps []int64
		stored int
	}{
		{"zero", []int64{10, 0, 12}, 1},
		{"below the one before", []int64{10, 11, 9, 12}, 2},
		{"below the log's last", []int64{4}, 0},
		{"negative", []int64{-1}, 0},
		{"equal ones are fine", []int64{5, 5, 5}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openTestLog(t, t.TempDir(), testOptions())
			if _, err := l.AppendAt(0, []Entry{{Timestamp: 5, Data: []byte("first")}}); err != nil {
				t.Fatal(err)
			}
			entries := make([]Entry, len(tc.stamps))
			for i, ts := range tc.stamps {
				entries[i] = Entry{Timestamp: ts, Data: payload(i)}
			}
			n, err := l.AppendAt(1, entries)
			if n != tc.stored || (tc.stored < len(tc.stamps)) != errors.Is(err, ErrTimestampOrder) {
				t.Fatalf("stored %d (want %d), err %v", n, tc.stored, err)
			}
			got := readAll(t, l)
			if len(got) != 1+tc.stored {
				t.Fatalf("%d records, want %d", len(got), 1+tc.stored)
			}
			for i, r := range got[1:] {
				if r.Timestamp != tc.stamps[i] {
					t.Fatalf("record %d has timestamp %d, was sent %d", r.Offset, r.Timestamp, tc.stamps[i])
				}
			}
		})
	}
}

// A replica that starts copying after retention deleted the front of the
// leader's log makes its log at the leader's first offset: offsets below
// it are out of range, as on the leader, and it survives a reopen.
func TestStoreAppendAtMakesANewLogStartAtTheOffset(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s := openTestStore(t, dir, opts)
	const base = 1_000_003
	entries := []Entry{{Timestamp: 7, Data: []byte("a")}, {Timestamp: 7, Data: []byte("b")}, {Timestamp: 9, Data: []byte("c")}}
	if n, err := s.AppendAt("orders.eu", base, entries); n != 3 || err != nil {
		t.Fatalf("AppendAt: %d, %v", n, err)
	}
	check := func(s *Store) {
		t.Helper()
		err := s.View("orders.eu", func(l *Log) error {
			if l.FirstOffset() != base || l.EndOffset() != base+3 {
				t.Errorf("log holds [%d, %d), want [%d, %d)", l.FirstOffset(), l.EndOffset(), base, base+3)
			}
			if _, err := l.Read(base-1, 1); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("read below the base: %v", err)
			}
			records := readAll(t, l)
			if len(records) != 3 || records[0].Offset != base || string(records[2].Data) != "c" || records[2].Timestamp != 9 {
				t.Errorf("records %+v", records)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check(s)
	// Once the log exists, only its end is a place to append at.
	if n, err := s.AppendAt("orders.eu", 0, entries); n != 0 || !errors.Is(err, ErrNotAtEnd) {
		t.Fatalf("AppendAt(0) on a log at %d: %d, %v", base, n, err)
	}
	// An ordinary append goes on from the end.
	if first, n, err := s.Append("orders.eu", []Entry{{Data: []byte("d")}}); first != base+3 || n != 1 || err != nil {
		t.Fatalf("Append after the copies: %d, %d, %v", first, n, err)
	}
	s.Close()
	s = openTestStore(t, dir, opts)
	err := s.View("orders.eu", func(l *Log) error {
		if l.FirstOffset() != base || l.EndOffset() != base+4 {
			t.Errorf("after a reopen the log holds [%d, %d)", l.FirstOffset(), l.EndOffset())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A new subject whose first copied record is refused leaves nothing, as
// a refused first Append does.
func TestStoreAppendAtRefusedFirstRecordLeavesNoSubject(t *testing.T) {
	s := openTestStore(t, t.TempDir(), testOptions())
	if n, err := s.AppendAt("orders.eu", 10, []Entry{{Timestamp: 0, Data: []byte("a")}}); n != 0 || !errors.Is(err, ErrTimestampOrder) {
		t.Fatalf("AppendAt: %d, %v", n, err)
	}
	if s.Has("orders.eu") {
		t.Fatal("a subject whose first record was refused exists")
	}
}
