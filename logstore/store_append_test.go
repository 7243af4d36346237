package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestStoreVerbs: what each verb of the store does for a subject in each
// state it can be in.
func TestStoreVerbs(t *testing.T) {
	const (
		none    = "no.log"  // nothing ever stored
		stored  = "has.log" // three records
		damaged = "damaged" // first segment's header broken: a log with nothing readable
	)
	setup := func(t *testing.T) (*Store, string) {
		dir := t.TempDir()
		s := openTestStore(t, dir, testOptions())
		for _, subject := range []string{stored, damaged} {
			for i := 0; i < 3; i++ {
				if _, _, err := storeAppend(s, subject, 0, nil, storeData(subject, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, subjectDirName(damaged), segmentFileName(0, ".log"))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return openTestStore(t, dir, testOptions()), dir
	}
	// A verb's outcome: its error, and what it saw or did.
	type outcome struct {
		err  error
		seen string
	}
	verbs := map[string]func(s *Store, subject string) outcome{
		"Append": func(s *Store, subject string) outcome {
			entries := []Entry{{Data: []byte("new")}}
			first, n, err := s.Append(subject, entries)
			return outcome{err, fmt.Sprintf("first %d n %d", first, n)}
		},
		"Append batch": func(s *Store, subject string) outcome {
			entries := []Entry{{Data: []byte("a")}, {Data: []byte("b")}}
			first, n, err := s.Append(subject, entries)
			return outcome{err, fmt.Sprintf("first %d n %d", first, n)}
		},
		"View": func(s *Store, subject string) outcome {
			var seen string
			err := s.View(subject, func(l *Log) error {
				seen = fmt.Sprintf("end %d corrupt %v", l.EndOffset(), errors.Is(l.Err(), ErrCorrupt))
				return nil
			})
			return outcome{err, seen}
		},
		"WaitDurable": func(s *Store, subject string) outcome {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return outcome{s.WaitDurable(ctx, subject, 2), ""}
		},
		"Acquire": func(s *Store, subject string) outcome {
			l, err := s.Acquire(subject)
			if err != nil {
				return outcome{err, ""}
			}
			defer s.Release(l)
			return outcome{nil, fmt.Sprintf("end %d", l.EndOffset())}
		},
		"RequestSync": func(s *Store, subject string) outcome {
			s.RequestSync(subject) // never fails, never blocks
			return outcome{}
		},
	}
	for _, c := range []struct {
		verb, subject string
		closed        bool // the store is closed first
		want          outcome
		has           bool // Has(subject) after
	}{
		{"Append", none, false, outcome{nil, "first 0 n 1"}, true},
		{"Append", stored, false, outcome{nil, "first 3 n 1"}, true},
		{"Append", damaged, false, outcome{ErrCorrupt, "first 0 n 0"}, true},
		{"Append", "", false, outcome{ErrInvalidSubject, "first 0 n 0"}, false},
		{"Append", none, true, outcome{ErrClosed, "first 0 n 0"}, false},
		{"Append batch", none, false, outcome{nil, "first 0 n 2"}, true},
		{"Append batch", stored, false, outcome{nil, "first 3 n 2"}, true},
		{"View", none, false, outcome{ErrNotFound, ""}, false},
		{"View", stored, false, outcome{nil, "end 3 corrupt false"}, true},
		{"View", damaged, false, outcome{nil, "end 0 corrupt true"}, true},
		{"View", "a\x00b", false, outcome{ErrInvalidSubject, ""}, false},
		{"View", stored, true, outcome{ErrClosed, ""}, true},
		{"WaitDurable", none, false, outcome{ErrNotFound, ""}, false},
		{"WaitDurable", stored, false, outcome{nil, ""}, true},
		{"WaitDurable", damaged, false, outcome{ErrOutOfRange, ""}, true},
		{"WaitDurable", stored, true, outcome{ErrClosed, ""}, true},
		{"Acquire", none, false, outcome{ErrNotFound, ""}, false},
		{"Acquire", stored, false, outcome{nil, "end 3"}, true},
		{"Acquire", damaged, false, outcome{nil, "end 0"}, true},
		{"RequestSync", none, false, outcome{}, false},
		{"RequestSync", stored, false, outcome{}, true},
		{"RequestSync", stored, true, outcome{}, true},
	} {
		name := fmt.Sprintf("%s %q", c.verb, c.subject)
		if c.closed {
			name += " closed"
		}
		t.Run(name, func(t *testing.T) {
			s, _ := setup(t)
			if c.closed {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			got := verbs[c.verb](s, c.subject)
			if (c.want.err == nil) != (got.err == nil) || c.want.err != nil && !errors.Is(got.err, c.want.err) {
				t.Fatalf("error %v, want %v", got.err, c.want.err)
			}
			if got.seen != c.want.seen {
				t.Fatalf("saw %q, want %q", got.seen, c.want.seen)
			}
			if s.Has(c.subject) != c.has {
				t.Fatalf("Has %v after, want %v", !c.has, c.has)
			}
		})
	}
}

// TestStoreAppendSetsTimestampsAndStopsAtARefusedEntry: Store.Append
// stamps each entry it stores, as Log.AppendBatch does, and stops at an
// entry it refuses, saying why.
func TestStoreAppendSetsTimestampsAndStopsAtARefusedEntry(t *testing.T) {
	s := openTestStore(t, t.TempDir(), testOptions())
	entries := []Entry{{Timestamp: 100, Data: []byte("a")}, {Timestamp: 50, Data: []byte("b")}, {Data: make([]byte, 32<<10)}, {Data: []byte("d")}}
	first, n, err := s.Append("stamped", entries)
	if first != 0 || n != 2 || !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("first %d, %d stored, %v; want 0, 2, ErrRecordTooLarge", first, n, err)
	}
	if entries[0].Timestamp != 100 || entries[1].Timestamp != 100 {
		t.Fatalf("timestamps %d %d, want 100 100 (never going back)", entries[0].Timestamp, entries[1].Timestamp)
	}
	one := []Entry{{Data: []byte("e")}}
	if first, n, err := s.Append("stamped", one); first != 2 || n != 1 || err != nil || one[0].Timestamp < 100 {
		t.Fatalf("one more: first %d, %d stored, %v, timestamp %d", first, n, err, one[0].Timestamp)
	}
	if first, n, err := s.Append("stamped", nil); first != 0 || n != 0 || err != nil {
		t.Fatalf("nothing: first %d, %d stored, %v", first, n, err)
	}
}

// TestStoreWaitDurableFollowsAnEvictedLog: an ack may wait for a record
// of a log that was evicted after the append. The eviction synced it:
// WaitDurable returns at once, without opening the log again. While the
// log is open, WaitDurable waits for the sync.
func TestStoreWaitDurableFollowsAnEvictedLog(t *testing.T) {
	obs := newRecordingObserver()
	opts := testOptions()
	opts.MaxOpenLogs = 1
	opts.Sync = SyncInterval
	opts.SyncInterval = time.Hour // nothing is synced but by Sync or Close
	opts.Observer = obs
	s := openTestStore(t, t.TempDir(), opts)
	for _, subject := range []string{"evicted", "evicted"} {
		if _, _, err := storeAppend(s, subject, 0, nil, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitDurable(short, "evicted", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDurable of a record not synced: %v, want the context's deadline", err)
	}
	if _, _, err := storeAppend(s, "other", 0, nil, []byte("y")); err != nil { // evicts "evicted"
		t.Fatal(err)
	}
	opens, _ := obs.outcomes()
	if err := s.WaitDurable(context.Background(), "evicted", 1); err != nil {
		t.Fatalf("WaitDurable after the eviction: %v", err)
	}
	if after, _ := obs.outcomes(); after["clean"] != opens["clean"] {
		t.Fatalf("WaitDurable opened the evicted log again: %v, then %v", opens, after)
	}
}

// TestStoreNewSubjectInvisibleUntilItsFirstRecordIsDurable: while a new
// subject's log is being made, nothing of the subject can be seen (Has,
// Subjects, Acquire, View, WaitDurable, the Created signal) until its
// directory has its name, and by then its first record is durable: the
// .log was synced after the record was written and before the rename. A
// long poll waiting on Created finds the record when it wakes.
func TestStoreNewSubjectInvisibleUntilItsFirstRecordIsDurable(t *testing.T) {
	const subject = "brand.new"
	data := []byte("the first record")
	var recordSynced atomic.Bool
	var s *Store
	var checked atomic.Bool
	opts := testOptions()
	opts.faults = &faultHooks{
		sync: func(path string) error {
			if strings.Contains(path, ".new-") && strings.HasSuffix(path, segmentFileName(0, ".log")) {
				// What this sync makes durable is what the file holds now.
				if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, data) {
					recordSynced.Store(true)
				}
			}
			return nil
		},
		path: func(op, path string) error {
			if op != "rename" || !strings.Contains(filepath.Base(path), ".new-") {
				return nil
			}
			checked.Store(true)
			if !recordSynced.Load() {
				t.Error("the subject's directory is given its name before its first record is synced")
			}
			if s.Has(subject) || len(s.Subjects()) != 0 {
				t.Errorf("visible before its directory has its name: %q", s.Subjects())
			}
			for verb, err := range map[string]error{
				"Acquire":     func() error { _, err := s.Acquire(subject); return err }(),
				"View":        s.View(subject, func(*Log) error { return nil }),
				"WaitDurable": s.WaitDurable(context.Background(), subject, 0),
			} {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("%s before the rename: %v, want ErrNotFound", verb, err)
				}
			}
			return nil
		},
	}
	s = openTestStore(t, t.TempDir(), opts)
	created := s.Created()
	woken := make(chan string)
	go func() {
		<-created
		var got string
		s.View(subject, func(l *Log) error {
			records, err := l.Read(0, 10)
			got = fmt.Sprint(len(records), err)
			if err == nil && len(records) == 1 {
				got = string(records[0].Data)
			}
			return nil
		})
		woken <- got
	}()
	if _, _, err := storeAppend(s, subject, 0, nil, data); err != nil {
		t.Fatal(err)
	}
	if !checked.Load() {
		t.Fatal("the rename hook never ran")
	}
	if got := <-woken; got != string(data) {
		t.Fatalf("woken by Created, the long poll read %q", got)
	}
}

// TestStoreFailedFirstRecordLeavesNothing: whatever stops a new
// subject's first record (the record itself, a full disk at its
// directory or its first segment, a failed sync, a failed rename), the
// append says so and nothing of the subject is left: not listed, no
// directory, no space counted, no Created signal. Once the cause is gone
// the subject is made as if it never failed.
func TestStoreFailedFirstRecordLeavesNothing(t *testing.T) {
	const subject = "will.fail"
	for _, c := range []struct {
		name  string
		hooks func(failing *atomic.Bool) *faultHooks
		data  []byte
		want  error
	}{
		{"record too large", func(*atomic.Bool) *faultHooks { return nil }, make([]byte, 32<<10), ErrRecordTooLarge},
		{"full disk at its directory", func(failing *atomic.Bool) *faultHooks {
			return &faultHooks{path: func(op, _ string) error {
				if op == "mkdir" && failing.Load() {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, []byte("x"), ErrNoSpace},
		{"full disk at its first segment", func(failing *atomic.Bool) *faultHooks {
			return &faultHooks{preallocate: func(*os.File, int64, int64) error {
				if failing.Load() {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, []byte("x"), ErrNoSpace},
		{"sync of the first record fails", func(failing *atomic.Bool) *faultHooks {
			var syncs atomic.Int64
			return &faultHooks{sync: func(path string) error {
				// The header's sync passes, the record's fails.
				if failing.Load() && strings.HasSuffix(path, ".log") && syncs.Add(1) > 1 {
					return errors.New("EIO")
				}
				return nil
			}}
		}, []byte("x"), ErrSyncFailed},
		{"rename fails", func(failing *atomic.Bool) *faultHooks {
			return &faultHooks{path: func(op, _ string) error {
				if op == "rename" && failing.Load() {
					return syscall.EIO
				}
				return nil
			}}
		}, []byte("x"), syscall.EIO},
	} {
		t.Run(c.name, func(t *testing.T) {
			var failing atomic.Bool
			failing.Store(true)
			obs := newRecordingObserver()
			opts := testOptions()
			opts.Observer = obs
			opts.faults = c.hooks(&failing)
			dir := t.TempDir()
			s := openTestStore(t, dir, opts)
			created := s.Created()
			first, n, err := s.Append(subject, []Entry{{Data: c.data}, {Data: []byte("second")}})
			if n != 0 || !errors.Is(err, c.want) {
				t.Fatalf("append: first %d, %d stored, %v; want none and %v", first, n, err, c.want)
			}
			if s.Has(subject) || len(s.Subjects()) != 0 || s.OpenLogs() != 0 {
				t.Fatalf("left %q, %d open", s.Subjects(), s.OpenLogs())
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("left %d entries in the data dir", len(entries))
			}
			select {
			case <-created:
				t.Fatal("signalled as created")
			default:
			}
			obs.mu.Lock()
			if obs.diskBytes != 0 {
				t.Errorf("the observer counts %d bytes of segment files, none are left", obs.diskBytes)
			}
			obs.mu.Unlock()
			failing.Store(false)
			if _, _, err := storeAppend(s, subject, 0, nil, []byte("fits")); err != nil {
				t.Fatalf("append once the cause is gone: %v", err)
			}
			storeReadOne(t, s, subject, "fits")
		})
	}
}

// storeReadOne checks that the log of subject holds exactly one record,
// data.
func storeReadOne(t *testing.T, s *Store, subject, data string) {
	t.Helper()
	err := s.View(subject, func(l *Log) error {
		records, err := l.Read(0, 2)
		if err == nil && (len(records) != 1 || string(records[0].Data) != data) {
			err = fmt.Errorf("records %v, want only %q", records, data)
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
}

// TestStoreConcurrentFirstAppends: appenders racing to make the same new
// subject make one log, with every record in it once.
func TestStoreConcurrentFirstAppends(t *testing.T) {
	s := openTestStore(t, t.TempDir(), testOptions())
	const appenders, each = 8, 20
	var wg sync.WaitGroup
	for a := 0; a < appenders; a++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, _, err := storeAppend(s, "raced", 0, nil, []byte(fmt.Sprintf("%d.%d", a, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err := s.View("raced", func(l *Log) error {
		records, err := l.Read(0, appenders*each+1)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, r := range records {
			seen[string(r.Data)] = true
		}
		if len(records) != appenders*each || len(seen) != len(records) {
			return fmt.Errorf("%d records, %d distinct; want %d", len(records), len(seen), appenders*each)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoreRefusedFirstRecordLeavesNoSubject: a new subject whose first
// record is refused leaves no log behind (Subjects, Has, Acquire, the
// Created signal a long poll waits on, the data dir, a reopened store),
// also when it came first in a batch; a batch whose first record was
// stored makes the log, with that record; and a refused subject can be
// created afterwards.
func TestStoreRefusedFirstRecordLeavesNoSubject(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, testOptions())
	tooLarge := make([]byte, 32<<10) // segments hold 16 KiB
	created := s.Created()
	for _, c := range []struct {
		subject string
		entries []Entry
	}{
		{"too.large", []Entry{{Data: tooLarge}}},
		{"batch.refused", []Entry{{Data: tooLarge}, {Data: []byte("after it")}}},
	} {
		if _, n, err := s.Append(c.subject, c.entries); n != 0 || !errors.Is(err, ErrRecordTooLarge) {
			t.Fatalf("%s: %d stored, %v; want none and ErrRecordTooLarge", c.subject, n, err)
		}
		if s.Has(c.subject) || len(s.Subjects()) != 0 || s.OpenLogs() != 0 {
			t.Fatalf("refused first record of %s left %q, %d open", c.subject, s.Subjects(), s.OpenLogs())
		}
		if _, err := s.Acquire(c.subject); !errors.Is(err, ErrNotFound) {
			t.Fatalf("acquire %s: %v, want ErrNotFound", c.subject, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("refused first record of %s left %d entries in the data dir", c.subject, len(entries))
		}
	}
	select {
	case <-created:
		t.Fatal("a subject whose first record was refused was signalled as created")
	default:
	}
	// The first record of a batch stored, the second refused: the log
	// exists with the first.
	if first, n, err := s.Append("has.one", []Entry{{Data: []byte("x")}, {Data: tooLarge}}); first != 0 || n != 1 || !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("has.one: first %d, %d stored, %v; want 0, 1, ErrRecordTooLarge", first, n, err)
	}
	if err := s.View("has.one", func(l *Log) error {
		records, err := l.Read(0, 2)
		if err == nil && (len(records) != 1 || string(records[0].Data) != "x") {
			err = fmt.Errorf("records %v", records)
		}
		return err
	}); err != nil {
		t.Fatalf("has.one: %v", err)
	}
	// Created again once refused.
	if _, _, err := storeAppend(s, "too.large", 0, nil, []byte("fits")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openTestStore(t, dir, testOptions())
	if got := reopened.Subjects(); !slices.Equal(got, []string{"has.one", "too.large"}) {
		t.Fatalf("after reopening: %q", got)
	}
}

// TestStoreRefusedAppendNeverDeletesALogFoundOnDisk: a log opened from
// disk that reads as empty because its first segment is corrupt still
// holds data; a refused append must not delete it.
func TestStoreRefusedAppendNeverDeletesALogFoundOnDisk(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, testOptions())
	for i := 0; i < 200; i++ {
		if _, _, err := storeAppend(s, "damaged", 0, nil, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dir, subjectDirName("damaged"))
	first := filepath.Join(logDir, segmentFileName(0, ".log"))
	b, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff // the first segment's magic
	if err := os.WriteFile(first, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, testOptions())
	l, err := s.Acquire("damaged")
	if err != nil {
		t.Fatal(err)
	}
	if l.EndOffset() != 0 || l.Err() == nil {
		t.Fatalf("end offset %d, err %v: want a corrupt log that reads as empty", l.EndOffset(), l.Err())
	}
	s.Release(l)
	if _, _, err := storeAppend(s, "damaged", 0, nil, []byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a corrupt log's append: %v, want ErrCorrupt", err)
	}
	if entries, err := os.ReadDir(logDir); err != nil || len(entries) < 4 {
		t.Fatalf("the corrupt log's directory: %d entries, %v; want it untouched", len(entries), err)
	}
	if !s.Has("damaged") {
		t.Fatal("the corrupt log is no longer listed")
	}
}

// TestStoreNewSubjectWhoseFirstSegmentFailsLeavesNoLog: a full disk at a
// new subject's first segment leaves no empty log behind either.
func TestStoreNewSubjectWhoseFirstSegmentFailsLeavesNoLog(t *testing.T) {
	opts := testOptions()
	opts.faults = &faultHooks{preallocate: func(*os.File, int64, int64) error {
		return fmt.Errorf("%w: injected", ErrNoSpace)
	}}
	dir := t.TempDir()
	s := openTestStore(t, dir, opts)
	if _, _, err := storeAppend(s, "new.subject", 0, nil, []byte("x")); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("append with the disk full: %v, want ErrNoSpace", err)
	}
	if s.Has("new.subject") || len(s.Subjects()) != 0 {
		t.Fatalf("subjects %q after a failed first segment", s.Subjects())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("%d entries left in the data dir", len(entries))
	}
}

// TestStoreCreatedSignalsNewSubjects: the channel from Created closes when
// a subject gets its log, not before, and not for appends to a known one.
func TestStoreCreatedSignalsNewSubjects(t *testing.T) {
	s := openTestStore(t, t.TempDir(), testOptions())
	if _, _, err := storeAppend(s, "known", 0, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	created := s.Created()
	if _, _, err := storeAppend(s, "known", 0, nil, []byte("y")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-created:
		t.Fatal("an append to a known subject signalled a new one")
	default:
	}
	if _, _, err := storeAppend(s, "newcomer", 0, nil, []byte("z")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-created:
	default:
		t.Fatal("a new subject was not signalled")
	}
	if !s.Has("newcomer") {
		t.Fatal("signalled before the subject is known")
	}
}
