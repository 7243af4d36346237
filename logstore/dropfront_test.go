package logstore

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// dfSegmentBases opens a log of 600 records over many segments and
// returns it with its segments' bases.
func dfLog(t *testing.T, dir string, opts Options) (*Log, []uint64) {
	t.Helper()
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 600)
	bases := trBases(l)
	if len(bases) < 5 {
		t.Fatalf("only %d segments", len(bases))
	}
	return l, bases
}

func TestDropBeforeDeletesTheWholeSegmentsBelowTheOffset(t *testing.T) {
	dir := t.TempDir()
	l, bases := dfLog(t, dir, testOptions())
	for _, c := range []struct {
		offset, first uint64
		deleted       int
	}{
		{bases[0], bases[0], 0},                    // at the first offset: nothing
		{bases[2] + 3, bases[2], 2},                // inside a segment: the one holding it stays
		{bases[3], bases[3], 1},                    // at a segment's base: exactly there
		{bases[3] - 1, bases[3], 0},                // below the first offset now: nothing
		{599, bases[len(bases)-1], len(bases) - 4}, // the active segment is never whole below the end
	} {
		want := l.SegmentBase(c.offset)
		deleted, err := l.DropBefore(c.offset)
		if l.FirstOffset() != want {
			t.Fatalf("DropBefore(%d) made the log start at %d, SegmentBase said %d", c.offset, l.FirstOffset(), want)
		}
		if err != nil || deleted != c.deleted || l.FirstOffset() != c.first {
			t.Fatalf("DropBefore(%d): %d deleted, first %d, %v; want %d deleted, first %d", c.offset, deleted, l.FirstOffset(), err, c.deleted, c.first)
		}
		if _, err := l.Scan(c.first-1, func(RecordView) bool { return true }); c.first > 0 && !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("read below the first offset %d: %v", c.first, err)
		}
		checkRecords(t, l, int(c.first), 600)
	}
	if got := segmentBases(t, dir); !slices.Equal(got, bases[len(bases)-1:]) {
		t.Fatalf("segment files %v, want %v", got, bases[len(bases)-1:])
	}
	l.Close()
	l = openTestLog(t, dir, testOptions())
	if l.FirstOffset() != bases[len(bases)-1] || l.EndOffset() != 600 {
		t.Fatalf("reopened: first %d end %d", l.FirstOffset(), l.EndOffset())
	}
	appendN(t, l, 600, 1)
}

func TestDropBeforeAtOrPastTheEndStartsTheLogAfreshThere(t *testing.T) {
	for _, target := range []uint64{600, 1000} {
		dir := t.TempDir()
		l, _ := dfLog(t, dir, testOptions())
		long := make(chan bool)
		go func() { long <- l.WaitFor(t.Context(), target) }()
		if _, err := l.DropBefore(target); err != nil {
			t.Fatal(err)
		}
		if l.FirstOffset() != target || l.EndOffset() != target || l.DurableOffset() != target || l.Info().Segments != 1 {
			t.Fatalf("after DropBefore(%d): %+v durable %d", target, l.Info(), l.DurableOffset())
		}
		if _, err := l.Scan(target-1, func(RecordView) bool { return true }); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("read below the new start: %v", err)
		}
		if n, err := l.AppendAt(target, []Entry{{Timestamp: time.Now().UnixNano(), Data: []byte("next")}}); n != 1 || err != nil {
			t.Fatalf("AppendAt(%d) after the reset: %d, %v", target, n, err)
		}
		if !<-long {
			t.Fatalf("a long poll on offset %d was not woken by its record", target)
		}
		if got := segmentBases(t, dir); !slices.Equal(got, []uint64{target}) {
			t.Fatalf("segment files %v, want [%d]", got, target)
		}
		l.Close()
		l = openTestLog(t, dir, testOptions())
		if l.FirstOffset() != target || l.EndOffset() != target+1 {
			t.Fatalf("reopened: first %d end %d, want %d %d", l.FirstOffset(), l.EndOffset(), target, target+1)
		}
	}
}

func TestDropBeforeResetCutShortRefusesAppendsAndTheNextOpenFinishesIt(t *testing.T) {
	for _, c := range []struct {
		name string
		fail func(op, name string, bases []uint64) bool
	}{
		{"removing the oldest segment", func(op, name string, bases []uint64) bool {
			return op == "remove" && name == segmentFileName(bases[0], ".log")
		}},
		{"removing the newest index", func(op, name string, bases []uint64) bool {
			return op == "remove" && name == segmentFileName(bases[len(bases)-1], ".idx")
		}},
		{"removing the intent", func(op, name string, _ []uint64) bool {
			return op == "remove" && name == resetIntentName
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions()
			var bases atomic.Pointer[[]uint64]
			opts.faults = failPathAt(&bases, c.fail)
			l, b := dfLog(t, dir, opts)
			bases.Store(&b)
			if _, err := l.DropBefore(700); !errors.Is(err, ErrSyncFailed) {
				t.Fatalf("DropBefore: %v; want ErrSyncFailed", err)
			}
			if _, _, err := l.Append(0, nil, []byte("x")); !errors.Is(err, ErrSyncFailed) {
				t.Fatalf("append after a reset cut short: %v, want ErrSyncFailed", err)
			}
			l.Close()
			opts.faults = nil
			l = openTestLog(t, dir, opts)
			if l.FirstOffset() != 700 || l.EndOffset() != 700 || l.Err() != nil {
				t.Fatalf("reopened: first %d end %d, %v; want 700 700", l.FirstOffset(), l.EndOffset(), l.Err())
			}
			if got := segmentBases(t, dir); !slices.Equal(got, []uint64{700}) {
				t.Fatalf("segment files %v, want [700]", got)
			}
		})
	}
}

func TestDropBeforeWhoseIntentNeverGotItsNameChangesNothing(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	var failing atomic.Bool
	opts.faults = &faultHooks{path: func(op, path string) error {
		if failing.Load() && op == "rename" && filepath.Base(path) == resetTempName {
			return syscall.EIO
		}
		return nil
	}}
	l, bases := dfLog(t, dir, opts)
	failing.Store(true)
	if _, err := l.DropBefore(700); err == nil || errors.Is(err, ErrSyncFailed) {
		t.Fatalf("DropBefore: %v; want a plain error", err)
	}
	checkRecords(t, l, 0, 600)
	appendN(t, l, 600, 1) // appends go on
	l.Close()
	opts.faults = nil
	l = openTestLog(t, dir, opts)
	if l.FirstOffset() != 0 || l.EndOffset() != 601 || !slices.Equal(segmentBases(t, dir), bases) {
		t.Fatalf("reopened: first %d end %d, segments %v", l.FirstOffset(), l.EndOffset(), segmentBases(t, dir))
	}
}

// A store that holds its retention deletes nothing by its limits: it
// tells OnRetention where each log would start. Let go, it deletes, and
// tells where the log starts now.
func TestHeldRetentionDeletesNothingAndSaysWhereLogsWouldStart(t *testing.T) {
	opts := testOptions()
	opts.Retention = Retention{MaxMessages: 100}
	opts.HoldRetention = true
	var told []uint64
	opts.OnRetention = func(subject string, first uint64) {
		if subject == "held" {
			told = append(told, first)
		}
	}
	s, err := OpenStore(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 600 {
		if _, _, err := s.Append("held", []Entry{{Data: payload(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	first := func() uint64 {
		var f uint64
		s.View("held", func(l *Log) error { f = l.FirstOffset(); return nil })
		return f
	}
	told = nil
	if s.ApplyRetention() != 0 || first() != 0 || len(told) != 1 || told[0] == 0 {
		t.Fatalf("held retention: log from %d, told %v; want nothing deleted and one proposal", first(), told)
	}
	proposed := told[0]
	told = nil
	s.HoldRetention(false)
	if s.ApplyRetention() == 0 || first() != proposed {
		t.Fatalf("retention let go: log from %d, want %d (the proposal)", first(), proposed)
	}
	if !slices.Equal(told, []uint64{proposed}) {
		t.Fatalf("OnRetention told %v, the log starts at %d", told, first())
	}
}

// DropSegmentsBefore deletes whole segments below the offset, keeps the
// newest segment's records even past the end, and does not open a closed
// log that has no segment to lose.
func TestDropSegmentsBeforeOpensNoLogWithNothingToLose(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s, err := OpenStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 {
		if _, _, err := s.Append("many", []Entry{{Data: payload(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Append("one", []Entry{{Data: payload(0)}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenStore(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.DropSegmentsBefore("one", 1000); n != 0 || err != nil || s.OpenLogs() != 0 {
		t.Fatalf("a closed one-segment log: %d deleted, %v, %d logs opened; want none", n, err, s.OpenLogs())
	}
	n, err := s.DropSegmentsBefore("many", 1000) // past the end: all but the newest segment
	if err != nil || n == 0 {
		t.Fatalf("past the end: %d deleted, %v", n, err)
	}
	s.View("many", func(l *Log) error {
		if l.Info().Segments != 1 || l.EndOffset() != 600 || l.FirstOffset() == 0 {
			t.Fatalf("after: %+v; want the newest segment kept, end 600", l.Info())
		}
		records, err := l.Read(l.FirstOffset(), 600)
		if err != nil || len(records) != int(600-l.FirstOffset()) || !bytes.Equal(records[len(records)-1].Data, payload(599)) {
			t.Fatalf("reading what is kept: %d records, %v", len(records), err)
		}
		return nil
	})
}
