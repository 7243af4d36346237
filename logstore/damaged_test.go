package logstore

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// This file checks that a damaged log gets an honest outcome: offsets are
// never given out twice, and a log that exists but cannot be served is
// seen (listed, counted by the Observer, its error returned), never taken
// for a subject with nothing stored.

const damagedSubject = "damaged.subject"

// damagedData is the i-th record of the damaged fixture: large enough
// that 300 of them fill several segments of testOptions.
func damagedData(i int) []byte {
	return []byte(fmt.Sprintf("%d:%s", i, strings.Repeat("x", 100+i%50)))
}

// damagedFixture is a closed store holding one log of n records (records
// of damagedData) in small segments.
type damagedFixture struct {
	root, dir string
	n         int
	bases     []uint64
}

func buildDamagedFixture(t *testing.T, n int) *damagedFixture {
	t.Helper()
	root := t.TempDir()
	s, err := OpenStore(root, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, _, err := storeAppend(s, damagedSubject, 0, nil, damagedData(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, subjectDirName(damagedSubject))
	return &damagedFixture{root: root, dir: dir, n: n, bases: segmentBases(t, dir)}
}

func (fx *damagedFixture) newest() uint64 { return fx.bases[len(fx.bases)-1] }

func (fx *damagedFixture) path(base uint64, ext string) string {
	return filepath.Join(fx.dir, segmentFileName(base, ext))
}

// damagedOptions are test options that report to a new recording observer.
func damagedOptions() (Options, *recordingObserver) {
	obs := newRecordingObserver()
	opts := testOptions()
	opts.Observer = obs
	return opts, obs
}

// checkOnlyOutcome fails unless the observer saw exactly n opens, all
// with outcome want.
func checkOnlyOutcome(t *testing.T, obs *recordingObserver, want string, n int) {
	t.Helper()
	got, _ := obs.outcomes()
	if !maps.Equal(got, map[string]int{want: n}) {
		t.Fatalf("observer saw outcomes %v, want %d %q", got, n, want)
	}
}

// TestZeroedSegmentWithIndexEntriesIsCorruption: a newest .log that holds
// nothing but zeros while its index holds entries had records (the .log
// header is synced before any record is appended), so it was zeroed after
// the fact: corruption at its base offset, never an unborn segment to
// delete, since deleting it would give its offsets out again.
func TestZeroedSegmentWithIndexEntriesIsCorruption(t *testing.T) {
	for _, c := range []struct {
		name    string
		records int // 300: several segments; 5: one
		damage  func(t *testing.T, fx *damagedFixture)
	}{
		{"newest of several zeroed in place, index intact", 300, func(t *testing.T, fx *damagedFixture) {
			rcvEdit(t, fx.path(fx.newest(), ".log"), func(b []byte) []byte { clear(b); return b })
		}},
		{"newest of several truncated to nothing, index intact", 300, func(t *testing.T, fx *damagedFixture) {
			rcvEdit(t, fx.path(fx.newest(), ".log"), func([]byte) []byte { return []byte{} })
		}},
		{"newest of several zeroed, index header zeroed but its entries intact", 300, func(t *testing.T, fx *damagedFixture) {
			rcvEdit(t, fx.path(fx.newest(), ".log"), func(b []byte) []byte { clear(b); return b })
			rcvEdit(t, fx.path(fx.newest(), ".idx"), func(b []byte) []byte { clear(b[:fileHeaderSize]); return b })
		}},
		{"the only segment zeroed in place, index intact", 5, func(t *testing.T, fx *damagedFixture) {
			rcvEdit(t, fx.path(fx.newest(), ".log"), func(b []byte) []byte { clear(b); return b })
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := buildDamagedFixture(t, c.records)
			if c.records > 5 && len(fx.bases) < 3 || c.records == 5 && len(fx.bases) != 1 {
				t.Fatalf("fixture: segments %v for %d records", fx.bases, c.records)
			}
			base := fx.newest()
			entries := uint64(fx.n) - base
			c.damage(t, fx)
			before := plSnapshot(t, fx.dir)

			check := func(t *testing.T, l *Log, err error, what string) {
				t.Helper()
				var ce *CorruptionError
				if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: %v, want a *CorruptionError", what, err)
				}
				if ce.Path != fx.path(base, ".log") || ce.Offset != base ||
					!strings.Contains(ce.Reason, "zeroed") || !strings.Contains(ce.Reason, fmt.Sprintf("index holds %d entries", entries)) {
					t.Fatalf("%s: corruption %s offset %d (%s); want %s offset %d, zeroed with %d index entries",
						what, ce.Path, ce.Offset, ce.Reason, fx.path(base, ".log"), base, entries)
				}
				if l == nil {
					t.Fatalf("%s: no log returned with %v", what, err)
				}
				if l.FirstOffset() != 0 || l.EndOffset() != base {
					t.Fatalf("%s: first %d end %d, want 0 %d: the records before the zeroed segment", what, l.FirstOffset(), l.EndOffset(), base)
				}
				checkRecordsData(t, l, int(base))
				if _, _, err := l.Append(0, nil, []byte("refused")); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: append: %v, want ErrCorrupt", what, err)
				}
				if l.EndOffset() != base || !errors.Is(l.Err(), ErrCorrupt) {
					t.Fatalf("%s: after a refused append: end %d, Err %v", what, l.EndOffset(), l.Err())
				}
			}

			opts, obs := damagedOptions()
			l, err := OpenLog(fx.dir, damagedSubject, opts)
			check(t, l, err, "OpenLog")
			t.Log(err)
			checkOnlyOutcome(t, obs, "corrupt", 1)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			plSameFiles(t, "after the open", plSnapshot(t, fx.dir), before)

			// Opening again finds the same: the offsets of the zeroed
			// segment are not given out again, and the end never moves
			// back below where it was.
			l2, err2 := OpenLog(fx.dir, damagedSubject, opts)
			check(t, l2, err2, "second OpenLog")
			if err2.Error() != err.Error() {
				t.Fatalf("second open: %v; first: %v", err2, err)
			}
			l2.Close()

			// Through the store: still listed, acquired as a corrupt log.
			s := openTestStore(t, fx.root, opts)
			if !s.Has(damagedSubject) || len(s.Subjects()) != 1 {
				t.Fatalf("subjects %q: the damaged log is not listed", s.Subjects())
			}
			sl, err := s.Acquire(damagedSubject)
			if err != nil {
				t.Fatalf("acquire: %v, want the corrupt log", err)
			}
			check(t, sl, sl.Err(), "Acquire")
			s.Release(sl) // a log found on disk is kept whatever it holds
			if _, _, err := storeAppend(s, damagedSubject, 0, nil, []byte("refused")); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("store append: %v, want ErrCorrupt", err)
			}
			checkOnlyOutcome(t, obs, "corrupt", 3)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			plSameFiles(t, "after the store", plSnapshot(t, fx.dir), before)
		})
	}
}

// checkRecordsData checks that l holds exactly the records [0, n) of
// damagedData.
func checkRecordsData(t *testing.T, l *Log, n int) {
	t.Helper()
	if n == 0 {
		return
	}
	records, err := l.Read(0, n+1)
	if err != nil || len(records) != n {
		t.Fatalf("read: %d records, %v; want %d", len(records), err, n)
	}
	for i, r := range records {
		if r.Offset != uint64(i) || string(r.Data) != string(damagedData(i)) {
			t.Fatalf("record %d: offset %d data %q", i, r.Offset, r.Data)
		}
	}
}

// TestOpenFailureIsReportedAsFailed: a log that cannot be opened at all is
// reported to the Observer as "failed", once per attempt, with the error;
// the store keeps listing it and answers every Acquire with the same
// error, which names the subject and the cause, never ErrNotFound.
func TestOpenFailureIsReportedAsFailed(t *testing.T) {
	for _, c := range []struct {
		name string
		// damage breaks the log of fx; it may return a path hook.
		damage func(t *testing.T, fx *damagedFixture) func(op, path string) error
		cause  error
	}{
		{"newest .log replaced by a directory", func(t *testing.T, fx *damagedFixture) func(op, path string) error {
			replaceWithDir(t, fx.path(fx.newest(), ".log"))
			return nil
		}, syscall.EISDIR},
		{"newest .idx replaced by a directory", func(t *testing.T, fx *damagedFixture) func(op, path string) error {
			replaceWithDir(t, fx.path(fx.newest(), ".idx"))
			return nil
		}, syscall.EISDIR},
		{"log directory cannot be listed (EIO)", func(t *testing.T, fx *damagedFixture) func(op, path string) error {
			return func(op, path string) error {
				if op == "open" && path == fx.dir {
					return syscall.EIO
				}
				return nil
			}
		}, syscall.EIO},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := buildDamagedFixture(t, 300)
			hook := c.damage(t, fx)

			opts, obs := damagedOptions()
			if hook != nil {
				opts.faults = &faultHooks{path: hook}
			}
			l, err := OpenLog(fx.dir, damagedSubject, opts)
			if l != nil || !errors.Is(err, c.cause) {
				t.Fatalf("OpenLog: log %v, %v; want no log and %v", l != nil, err, c.cause)
			}
			checkOnlyOutcome(t, obs, "failed", 1)
			if _, failures := obs.outcomes(); failures[0] != err {
				t.Fatalf("observer told %v, OpenLog returned %v", failures[0], err)
			}

			opts, obs = damagedOptions()
			if hook != nil {
				opts.faults = &faultHooks{path: hook}
			}
			s := openTestStore(t, fx.root, opts)
			var first error
			for i, create := range []bool{false, false, true} {
				var l *Log
				var err error
				if create { // an append opens it too
					_, _, err = storeAppend(s, damagedSubject, 0, nil, []byte("x"))
				} else {
					l, err = s.Acquire(damagedSubject)
				}
				if l != nil || !errors.Is(err, c.cause) || errors.Is(err, ErrNotFound) ||
					!strings.Contains(err.Error(), fmt.Sprintf("%q", damagedSubject)) {
					t.Fatalf("acquire %d (create %v): %v; want an error naming %q and %v", i, create, err, damagedSubject, c.cause)
				}
				if i == 0 {
					first = err
					t.Log(err)
				} else if err.Error() != first.Error() {
					t.Fatalf("acquire %d: %v; the first said %v", i, err, first)
				}
				checkOnlyOutcome(t, obs, "failed", i+1)
			}
			if !s.Has(damagedSubject) {
				t.Fatal("a log that failed to open is no longer listed")
			}
		})
	}
}

// replaceWithDir replaces the file at path with an empty directory, which
// fails to open as a segment for root too.
func replaceWithDir(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestStoreListsLogWhoseSubjectFileCannotBeChecked: at OpenStore, a log
// directory whose subject file cannot be looked at for a reason other
// than its absence is still listed when its name spells the subject, so
// that Acquire opens it and says what fails (or serves it) instead of
// answering ErrNotFound as if nothing had been stored. A directory without
// a subject file is not a log; one with a shortened name whose subject
// file cannot be read is skipped with a warning that a log may be there.
func TestStoreListsLogWhoseSubjectFileCannotBeChecked(t *testing.T) {
	long := strings.Repeat("long.subject.", 30) // its directory name is shortened
	for _, c := range []struct {
		name    string
		subject string
		// setup damages the log in dir; it may return a path hook.
		setup   func(t *testing.T, dir string) func(op, path string) error
		listed  bool
		acquire error  // nil: Acquire serves the records
		warn    string // in the log output
	}{
		{"stat of the subject file fails (EIO), the log reads", damagedSubject, func(t *testing.T, dir string) func(op, path string) error {
			return func(op, path string) error {
				if op == "lstat" && path == filepath.Join(dir, subjectFileName) {
					return syscall.EIO
				}
				return nil
			}
		}, true, nil, "listing its subject"},
		{"the whole log directory fails (EIO)", damagedSubject, func(t *testing.T, dir string) func(op, path string) error {
			return func(op, path string) error {
				if strings.HasPrefix(path, dir) {
					return syscall.EIO
				}
				return nil
			}
		}, true, syscall.EIO, "listing its subject"},
		{"no subject file: not a log", damagedSubject, func(t *testing.T, dir string) func(op, path string) error {
			if err := os.Remove(filepath.Join(dir, subjectFileName)); err != nil {
				t.Fatal(err)
			}
			return nil
		}, false, ErrNotFound, "skipping directory that is not a log"},
		{"shortened name, subject file unreadable (EIO)", long, func(t *testing.T, dir string) func(op, path string) error {
			return func(op, path string) error {
				if path == filepath.Join(dir, subjectFileName) {
					return syscall.EIO
				}
				return nil
			}
		}, false, ErrNotFound, "a log may be hidden there"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			s := openTestStore(t, root, testOptions())
			for i := 0; i < 3; i++ {
				if _, _, err := storeAppend(s, c.subject, 0, nil, storeData(c.subject, i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(root, subjectDirName(c.subject))
			hook := c.setup(t, dir)

			opts, logs := rcvOptions()
			obs := newRecordingObserver()
			opts.Observer = obs
			if hook != nil {
				opts.faults = &faultHooks{path: hook}
			}
			s = openTestStore(t, root, opts)
			if got := s.Has(c.subject); got != c.listed {
				t.Fatalf("listed %v, want %v (subjects %q)", got, c.listed, s.Subjects())
			}
			if out := logs.String(); !strings.Contains(out, c.warn) || !strings.Contains(out, dir) {
				t.Fatalf("log output lacks %q for %s:\n%s", c.warn, dir, out)
			}
			if c.acquire == nil {
				storeReadAll(t, s, c.subject, 3)
				return
			}
			for i := 0; i < 2; i++ {
				l, err := s.Acquire(c.subject)
				if l != nil || !errors.Is(err, c.acquire) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.subject)) {
					t.Fatalf("acquire %d: %v; want an error naming the subject and %v", i, err, c.acquire)
				}
			}
			if c.listed {
				checkOnlyOutcome(t, obs, "failed", 2)
			}
		})
	}
}

// TestNoSpaceSaysWhatFailed: a full disk is ErrNoSpace (wrapping the
// kernel's ENOSPC) wherever it is met, and the message says what could
// not get the space: a new subject's log directory, a new segment, or a
// segment growing. Opens that fail are reported as failed; a failed
// append to a log that is open is not an open.
func TestNoSpaceSaysWhatFailed(t *testing.T) {
	const subject = "new.subject"
	for _, c := range []struct {
		name string
		// hooks make the disk full where the case says.
		hooks func(full *atomic.Bool) *faultHooks
		want  []string // substrings of the message
		opens map[string]int
	}{
		{"creating the log directory of a new subject", func(full *atomic.Bool) *faultHooks {
			return &faultHooks{path: func(op, _ string) error {
				if op == "mkdir" && full.Load() {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, []string{fmt.Sprintf("creating the log directory of subject %q", subject)}, map[string]int{"failed": 1}},
		{"creating the first segment of a new subject", func(full *atomic.Bool) *faultHooks {
			return &faultHooks{preallocate: func(*os.File, int64, int64) error {
				if full.Load() {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, []string{"creating segment", segmentFileName(0, ".log")}, map[string]int{"failed": 1}},
		{"growing a segment", func(full *atomic.Bool) *faultHooks {
			return &faultHooks{preallocate: func(_ *os.File, offset, _ int64) error {
				if full.Load() && offset > 0 {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, []string{"growing segment", segmentFileName(0, ".log")}, map[string]int{"clean": 1}},
		{"creating the next segment", func(full *atomic.Bool) *faultHooks {
			return &faultHooks{preallocate: func(f *os.File, offset, _ int64) error {
				// The next segment: made ahead by the pipeline, or by the
				// rotation itself when none is ready.
				name := filepath.Base(f.Name())
				base, _, _ := parseSegmentName(name)
				if full.Load() && offset == 0 && (base > 0 || name == preparedLogName) {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, []string{"creating segment", ".log"}, map[string]int{"clean": 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var full atomic.Bool
			full.Store(true)
			opts, obs := damagedOptions()
			opts.faults = c.hooks(&full)
			s := openTestStore(t, t.TempDir(), opts)
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				_, _, err = storeAppend(s, subject, 0, nil, storeData(subject, i))
			}
			if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("append on a full disk: %v; want ErrNoSpace wrapping ENOSPC", err)
			}
			t.Log(err)
			for _, want := range c.want {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("%q does not say %q", err, want)
				}
			}
			if strings.Contains(c.name, "creating") && strings.Contains(err.Error(), "growing segment") {
				t.Fatalf("%q speaks of growing where %s failed", err, c.name)
			}
			if got, _ := obs.outcomes(); !maps.Equal(got, c.opens) {
				t.Fatalf("opens reported %v, want %v", got, c.opens)
			}
			full.Store(false)
			if _, _, err := storeAppend(s, subject, 0, nil, []byte("space again")); err != nil {
				t.Fatalf("append once space is back: %v", err)
			}
		})
	}
}
