package logstore

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var storeManySubjects = flag.Int("store.subjects", 100_000, "subjects TestStoreManySubjects creates (at most 20,000 under the race detector)")

// openTestStore opens a store and closes it when the test ends.
func openTestStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := OpenStore(dir, opts)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storeAppend appends one record through Store.Append and returns its
// offset and timestamp, as Log.Append does.
func storeAppend(s *Store, subject string, timestamp int64, headers Headers, data []byte) (uint64, int64, error) {
	entries := []Entry{{Timestamp: timestamp, Headers: headers, Data: data}}
	first, n, err := s.Append(subject, entries)
	if n == 0 {
		return 0, 0, err
	}
	return first, entries[0].Timestamp, err
}

// storeData is the i-th record of subject in the store tests.
func storeData(subject string, i int) []byte {
	return []byte(fmt.Sprintf("%d:%s", i, subject))
}

// storeReadAll reads every record of subject through the store and checks
// it against storeData for offsets [0, want).
func storeReadAll(t testing.TB, s *Store, subject string, want int) {
	t.Helper()
	l, err := s.Acquire(subject)
	if err != nil {
		t.Fatalf("acquire %q: %v", subject, err)
	}
	defer s.Release(l)
	if l.Subject() != subject {
		t.Fatalf("acquire %q: got the log of %q", subject, l.Subject())
	}
	records, err := l.Read(0, want+1)
	if err != nil {
		t.Fatalf("read %q: %v", subject, err)
	}
	if len(records) != want {
		t.Fatalf("read %q: %d records, want %d", subject, len(records), want)
	}
	for i, r := range records {
		if r.Offset != uint64(i) || !bytes.Equal(r.Data, storeData(subject, i)) {
			t.Fatalf("read %q record %d: offset %d data %q", subject, i, r.Offset, r.Data)
		}
	}
}

// storeTreeSnapshot describes every file and directory under root except
// the subtree skip: a directory by its entry names (skip left out), a file
// by its size, modification time and content.
func storeTreeSnapshot(t *testing.T, root, skip string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == skip {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			entries, err := os.ReadDir(path)
			if err != nil {
				return err
			}
			var names []string
			for _, e := range entries {
				if filepath.Join(path, e.Name()) != skip {
					names = append(names, e.Name())
				}
			}
			snap[path] = fmt.Sprintf("dir %v %q", info.Mode(), names)
			return nil
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		snap[path] = fmt.Sprintf("file %v %d %d %q", info.Mode(), info.Size(), info.ModTime().UnixNano(), content)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return snap
}

// storeHostileSubjects are subjects that would escape the data directory,
// collide, or break a file system if used as directory names unescaped.
func storeHostileSubjects() []string {
	long := strings.Repeat("x", 1000)
	return []string{
		"plain", "a.b.c", "a..b", "a.", "...", "*", ">", "a.*.>",
		"/", "//", "a/b", "/etc/passwd", "../x", "../../escape", "..", ".", "./.", ".hidden", ".new-123",
		"%", "%%", "%2F", "%2E%2E", "%zz", "~", "a~b", "~" + strings.Repeat("a", 64),
		"ünïcödé", "日本語.主題", "emoji.🎉", "with space", " ", " leading", "trailing ",
		"tab\there", "new\nline", "\xff\xfe", "\x01", "back\\slash", "quote\"s", "colon:x",
		"subject", // the name of the file in every log directory
		"Foo", "foo", "FOO", "Foo.Bar", "foo.bar",
		long, long + "y", "y" + long, // shortened names: same prefix, different hash
		strings.Repeat("/", 1000), strings.Repeat("é", 500), strings.Repeat("~", 300),
		strings.Repeat("a", 200), strings.Repeat("a", 201), // at the shortening limit
		strings.Repeat("a", 134) + strings.Repeat("/", 40), // the cut falls on "%"
		strings.Repeat("a", 133) + strings.Repeat("/", 40), // the cut falls on "%2"
	}
}

// TestStoreHostileSubjects: every subject gets its own directory inside
// the data directory and nowhere else, round-trips, is listed sorted, and
// is found under its exact name after a reopen.
func TestStoreHostileSubjects(t *testing.T) {
	parent := t.TempDir()
	// Neighbours that a subject escaping its directory would touch.
	for _, p := range []string{"sibling.txt", "nested/sibling.txt", "x", "etc/passwd", "escape"} {
		path := filepath.Join(parent, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("do not touch "+p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := filepath.Join(parent, "nested", "data")
	before := storeTreeSnapshot(t, parent, dataDir)

	subjects := storeHostileSubjects()
	if len(subjects) != len(slices.Compact(slices.Sorted(slices.Values(subjects)))) {
		t.Fatal("test subjects are not distinct")
	}
	const perSubject = 3
	opts := testOptions()
	s := openTestStore(t, dataDir, opts)
	for i := 0; i < perSubject; i++ {
		for _, subject := range subjects {
			off, _, err := storeAppend(s, subject, 0, nil, storeData(subject, i))
			if err != nil {
				t.Fatalf("append to %q: %v", subject, err)
			}
			if off != uint64(i) {
				t.Fatalf("append %d to %q: offset %d (another subject's log?)", i, subject, off)
			}
		}
	}
	want := slices.Sorted(slices.Values(subjects))
	if got := s.Subjects(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Subjects():\n got %q\nwant %q", got, want)
	}
	for _, subject := range subjects {
		if !s.Has(subject) {
			t.Errorf("Has(%q) = false", subject)
		}
		storeReadAll(t, s, subject, perSubject)
	}

	// One directory per subject, directly in the data dir, with a sane name.
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(subjects) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%d entries in the data dir for %d subjects: %q", len(entries), len(subjects), names)
	}
	found := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || len(name) > maxDirNameBytes || strings.HasPrefix(name, ".") {
			t.Errorf("data dir entry %q: dir %v, %d bytes", name, e.IsDir(), len(name))
		}
		subject, err := readSubjectFile(filepath.Join(dataDir, name), nil)
		if err != nil {
			t.Fatalf("log dir %q: %v", name, err)
		}
		if subjectDirName(subject) != name {
			t.Errorf("log dir %q holds subject %q, whose dir is %q", name, subject, subjectDirName(subject))
		}
		found[subject] = true
	}
	if len(found) != len(subjects) {
		t.Fatalf("subject files name %d subjects, want %d", len(found), len(subjects))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTestStore(t, dataDir, opts)
	if got := s2.Subjects(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Subjects() after reopen:\n got %q\nwant %q", got, want)
	}
	for _, subject := range subjects {
		storeReadAll(t, s2, subject, perSubject)
		if off, _, err := storeAppend(s2, subject, 0, nil, storeData(subject, perSubject)); err != nil || off != perSubject {
			t.Fatalf("append to %q after reopen: offset %d, %v", subject, off, err)
		}
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}

	after := storeTreeSnapshot(t, parent, dataDir)
	if !reflect.DeepEqual(before, after) {
		for path, v := range after {
			if before[path] != v {
				t.Errorf("outside the data dir: %s is now %s (was %q)", path, v, before[path])
			}
		}
		for path := range before {
			if _, ok := after[path]; !ok {
				t.Errorf("outside the data dir: %s disappeared", path)
			}
		}
	}
}

// TestStoreLRUEvictsIdleLogs: with MaxOpenLogs 8 and 100 subjects written
// round-robin, at most 8 logs are open after each release, every subject
// reads back everything after being evicted and reopened, and a log held
// with Acquire is never evicted.
func TestStoreLRUEvictsIdleLogs(t *testing.T) {
	const maxOpen, subjects, rounds = 8, 100, 5
	opts := testOptions()
	opts.MaxOpenLogs = maxOpen
	s := openTestStore(t, t.TempDir(), opts)
	name := func(i int) string { return fmt.Sprintf("lru.%03d", i) }

	// Its log comes with its first record (round 0's); then it is held.
	if _, _, err := storeAppend(s, "held", 0, nil, storeData("held", 0)); err != nil {
		t.Fatal(err)
	}
	held, err := s.Acquire("held")
	if err != nil {
		t.Fatal(err)
	}
	for r := 0; r < rounds; r++ {
		for i := 0; i < subjects; i++ {
			off, _, err := storeAppend(s, name(i), 0, nil, storeData(name(i), r))
			if err != nil || off != uint64(r) {
				t.Fatalf("round %d append to %s: offset %d, %v", r, name(i), off, err)
			}
			if n := s.OpenLogs(); n > maxOpen {
				t.Fatalf("round %d after %s: %d logs open, cap %d", r, name(i), n, maxOpen)
			}
		}
		// The held log survived a whole round of evictions.
		if r > 0 {
			if off, _, err := held.Append(0, nil, storeData("held", r)); err != nil || off != uint64(r) {
				t.Fatalf("held log, round %d: offset %d, %v", r, off, err)
			}
		}
		select {
		case <-held.Closed():
			t.Fatalf("held log closed by eviction in round %d", r)
		default:
		}
	}
	again, err := s.Acquire("held")
	if err != nil {
		t.Fatal(err)
	}
	if again != held {
		t.Fatal("held log was reopened: it had been evicted")
	}
	s.Release(again)

	// Evicted logs really are closed, and reopened on demand.
	first, err := s.Acquire(name(0))
	if err != nil {
		t.Fatal(err)
	}
	s.Release(first)
	for i := 1; i <= 2*maxOpen; i++ {
		storeReadAll(t, s, name(i), rounds)
	}
	select {
	case <-first.Closed():
	default:
		t.Fatalf("%s still open after %d other subjects were used", name(0), 2*maxOpen)
	}

	for i := 0; i < subjects; i++ {
		storeReadAll(t, s, name(i), rounds)
		if n := s.OpenLogs(); n > maxOpen {
			t.Fatalf("reading %s: %d logs open, cap %d", name(i), n, maxOpen)
		}
	}
	s.Release(held)
	storeReadAll(t, s, "held", rounds)
	if n := s.OpenLogs(); n > maxOpen {
		t.Fatalf("%d logs open at the end, cap %d", n, maxOpen)
	}
}

// TestStoreLRUConcurrent: several goroutines appending round-robin to more
// subjects than the cap race acquires against evictions; no record is lost
// or duplicated and every log stays contiguous.
func TestStoreLRUConcurrent(t *testing.T) {
	const maxOpen, subjects, rounds, writers = 8, 50, 4, 4
	opts := testOptions()
	opts.MaxOpenLogs = maxOpen
	s := openTestStore(t, t.TempDir(), opts)
	name := func(i int) string { return fmt.Sprintf("lrc.%03d", i) }
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				for k := 0; k < subjects; k++ {
					i := (k + w*subjects/writers) % subjects
					if _, _, err := storeAppend(s, name(i), 0, nil, []byte(fmt.Sprintf("w%d r%d", w, r))); err != nil {
						t.Errorf("writer %d append to %s: %v", w, name(i), err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := s.OpenLogs(); n > maxOpen {
		t.Fatalf("%d logs open after all releases, cap %d", n, maxOpen)
	}
	for i := 0; i < subjects; i++ {
		l, err := s.Acquire(name(i))
		if err != nil {
			t.Fatal(err)
		}
		records, err := l.Read(0, writers*rounds+1)
		s.Release(l)
		if err != nil || len(records) != writers*rounds {
			t.Fatalf("%s: %d records, %v; want %d", name(i), len(records), err, writers*rounds)
		}
		seen := map[string]bool{}
		for k, r := range records {
			if r.Offset != uint64(k) || seen[string(r.Data)] {
				t.Fatalf("%s record %d: offset %d data %q (duplicate %v)", name(i), k, r.Offset, r.Data, seen[string(r.Data)])
			}
			seen[string(r.Data)] = true
		}
	}
}

// storeOpenFDs counts the open file descriptors of this process, or -1.
func storeOpenFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// storeDiskUsage is the disk space (allocated blocks) under dir, and how
// many regular files it holds.
func storeDiskUsage(t testing.TB, dir string) (bytes int64, files int) {
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			bytes += st.Blocks * 512
		}
		if info.Mode().IsRegular() {
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	return bytes, files
}

// TestStoreManySubjects: 100,000 subjects (20,000 under the race
// detector), one small record each, with MaxOpenLogs 1,000: all are listed
// and found again after a reopen, at most 1,000 logs and a bounded number
// of files are open, a sample reads back, and the disk cost per subject is
// what the initial preallocation predicts.
func TestStoreManySubjects(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: creates 100,000 logs")
	}
	n := *storeManySubjects
	if storeRaceEnabled {
		n = min(n, 20_000)
	}
	const maxOpen, workers = 1000, 16
	opts := Options{MaxOpenLogs: maxOpen, Logger: testOptions().Logger}
	dir := filepath.Join(t.TempDir(), "data")
	name := func(i int) string { return fmt.Sprintf("many.%06d", i) }
	baseFDs := storeOpenFDs()
	if baseFDs < 0 {
		t.Skip("cannot count open files in /proc/self/fd")
	}

	s, err := OpenStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Sample open files and logs while the store fills up.
	var maxFDs, maxLogs atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			maxFDs.Store(max(maxFDs.Load(), int64(storeOpenFDs())))
			maxLogs.Store(max(maxLogs.Load(), int64(s.OpenLogs())))
			select {
			case <-stopSampling:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n && !t.Failed(); i = int(next.Add(1) - 1) {
				if _, _, err := storeAppend(s, name(i), 0, nil, storeData(name(i), 0)); err != nil {
					t.Errorf("append to %s: %v", name(i), err)
				}
			}
		}()
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	created := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}

	subjects := s.Subjects()
	if len(subjects) != n || !slices.IsSorted(subjects) || subjects[0] != name(0) || subjects[n-1] != name(n-1) {
		t.Fatalf("Subjects(): %d entries, want %d sorted", len(subjects), n)
	}
	if got := s.OpenLogs(); got > maxOpen {
		t.Fatalf("%d logs open, cap %d", got, maxOpen)
	}
	fds := storeOpenFDs()
	// Each open log holds a .log and an .idx; the writers may hold a few
	// more than the cap while they open.
	fdBound := baseFDs + 2*(maxOpen+workers) + 64
	if fds > fdBound || int(maxFDs.Load()) > fdBound {
		t.Fatalf("open files: %d now, %d at most while filling (base %d); want <= %d", fds, maxFDs.Load(), baseFDs, fdBound)
	}
	for _, i := range rand.Perm(n)[:100] {
		storeReadAll(t, s, name(i), 1)
	}

	du, files := storeDiskUsage(t, dir)
	perSubject := float64(du) / float64(n)
	// A log is a directory, its subject file, and one segment: the initial
	// .log preallocation and a page of index.
	expected := float64(defaultInitialSegmentBytes + pageSize + pageSize + pageSize)
	t.Logf("%d subjects: created in %v (%v each); peak %d logs and %d open files (base %d); disk %.1f MiB in %d files, %.1f KiB per subject (expected about %.0f KiB)",
		n, created.Round(time.Millisecond), (created / time.Duration(n)).Round(time.Microsecond), maxLogs.Load(), maxFDs.Load(), baseFDs,
		float64(du)/(1<<20), files, perSubject/1024, expected/1024)
	if perSubject > 1.25*expected {
		t.Errorf("disk cost %.1f KiB per one-record subject, expected about %.0f KiB", perSubject/1024, expected/1024)
	}

	start = time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Since(start)
	start = time.Now()
	s2, err := OpenStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	reopened := time.Since(start)
	if got := s2.Subjects(); !reflect.DeepEqual(got, subjects) {
		t.Fatalf("after reopen: %d subjects, want the same %d", len(got), n)
	}
	for _, i := range rand.Perm(n)[:10] {
		storeReadAll(t, s2, name(i), 1)
	}
	t.Logf("close %v, reopen (list %d subjects) %v", closed.Round(time.Millisecond), n, reopened.Round(time.Millisecond))
}

// TestStoreConcurrentReadersAndRetention: one writer appends while four
// readers scan from random offsets and follow the tail with WaitFor, and
// retention (on rotation and in the store's background loop) deletes
// segments under them. Readers see only whole, right records (the content
// is a function of the offset) and no error but a *RangeError for an
// offset retention deleted.
func TestStoreConcurrentReadersAndRetention(t *testing.T) {
	total := 6000
	if storeRaceEnabled {
		total = 3000
	}
	const readers, maxMessages = 4, 150
	opts := testOptions()
	opts.Retention = Retention{MaxMessages: maxMessages}
	opts.RetentionCheckInterval = time.Millisecond
	s := openTestStore(t, t.TempDir(), opts)
	const subject = "conc"
	// The log comes with its first record; the readers wait for the rest.
	if _, _, err := storeAppend(s, subject, 0, headersFor(0), payload(0)); err != nil {
		t.Fatal(err)
	}
	w, err := s.Acquire(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(w)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var read, rangeErrors, wakeups atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.Acquire(subject)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Release(l)
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			next := uint64(0)
			for next < uint64(total) && ctx.Err() == nil {
				if rng.IntN(4) == 0 { // jump somewhere, else follow the tail
					first, end := l.FirstOffset(), l.EndOffset()
					next = first + rng.Uint64N(end-first+1)
				}
				expect := next
				limit := 1 + rng.IntN(300)
				got, err := l.Scan(next, func(v RecordView) bool {
					if v.Offset != expect {
						t.Errorf("reader %d: record %d where %d was expected", r, v.Offset, expect)
						return false
					}
					if !bytes.Equal(v.Data, payload(int(v.Offset))) {
						t.Errorf("reader %d: record %d holds %q", r, v.Offset, v.Data)
						return false
					}
					h, err := v.Headers()
					if err != nil || !reflect.DeepEqual(h, headersFor(int(v.Offset))) {
						t.Errorf("reader %d: record %d headers %v, %v", r, v.Offset, h, err)
						return false
					}
					expect++
					read.Add(1)
					return int(expect-next) < limit
				})
				if t.Failed() {
					return
				}
				var rangeErr *RangeError
				switch {
				case err == nil:
					next = got
				case errors.As(err, &rangeErr) && rangeErr.Offset < rangeErr.First:
					rangeErrors.Add(1) // fell behind retention: start again
					next = l.FirstOffset()
					continue
				default:
					t.Errorf("reader %d: scan from %d: %v", r, next, err)
					return
				}
				if next < uint64(total) && next == l.EndOffset() {
					if !l.WaitFor(ctx, next) {
						t.Errorf("reader %d: WaitFor(%d) gave up; end %d", r, next, l.EndOffset())
						return
					}
					wakeups.Add(1)
				}
			}
		}()
	}
	// Start writing once a reader is parked in WaitFor after the first record.
	for deadline := time.Now().Add(10 * time.Second); !w.hasWaiters.Load() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < total; i++ {
		off, _, err := w.Append(0, headersFor(i), payload(i))
		if err != nil || off != uint64(i) {
			t.Fatalf("append %d: offset %d, %v", i, off, err)
		}
		if i%100 == 0 {
			// Pacing, not synchronisation: readers catch up and park now
			// and then, so WaitFor is woken mid-run as well as at the
			// start (which the wait above guarantees once).
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	info := w.Info()
	t.Logf("read %d records, %d range errors, %d WaitFor wake-ups; kept %d..%d in %d segments",
		read.Load(), rangeErrors.Load(), wakeups.Load(), info.FirstOffset, info.EndOffset, info.Segments)
	if info.FirstOffset == 0 {
		t.Fatal("retention never ran")
	}
	if kept := info.EndOffset - info.FirstOffset; kept < maxMessages {
		t.Fatalf("retention kept %d records, fewer than MaxMessages %d", kept, maxMessages)
	}
	if wakeups.Load() == 0 {
		t.Error("no reader ever waited for the tail with WaitFor")
	}
}

// TestStoreReadTruncatedSegmentFaults: a sealed segment whose .log file is
// truncated by someone else while it is mapped makes Scan return ErrFault
// (SIGBUS turned into a panic and recovered) instead of crashing, whether
// the segment was sealed by this process (its writable mapping) or opened
// sealed by recovery (mapped read-only at its file size).
func TestStoreReadTruncatedSegmentFaults(t *testing.T) {
	for _, path := range []string{"sealed-in-process", "opened-by-recovery"} {
		t.Run(path, func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions()
			l := openTestLog(t, dir, opts)
			appendN(t, l, 0, 300)
			if path == "opened-by-recovery" {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = openTestLog(t, dir, opts)
			}
			segments := *l.segments.Load()
			if len(segments) < 3 {
				t.Fatalf("want several segments, got %d", len(segments))
			}
			seg0, seg1 := segments[0], segments[1]
			if want := path == "sealed-in-process"; seg0.writable != want {
				t.Fatalf("segment 0 writable %v, want %v", seg0.writable, want)
			}
			if err := os.Truncate(seg0.logPath(), pageSize); err != nil {
				t.Fatal(err)
			}
			for attempt := 0; attempt < 2; attempt++ { // and again: nothing is left broken
				seen := 0
				next, err := l.Scan(0, func(v RecordView) bool {
					if !bytes.Equal(v.Data, payload(int(v.Offset))) {
						t.Fatalf("record %d: %q", v.Offset, v.Data)
					}
					seen++
					return true
				})
				if !errors.Is(err, ErrFault) {
					t.Fatalf("scan over a truncated segment: next %d, err %v; want ErrFault", next, err)
				}
				if next == 0 || next >= seg1.baseOffset || seen != int(next) {
					t.Fatalf("scan faulted at %d after %d records; segment 1 starts at %d", next, seen, seg1.baseOffset)
				}
				t.Logf("%v (after %d good records)", err, seen)
			}
			// The rest of the log is unaffected.
			checkRecords(t, l, int(seg1.baseOffset), 300)
			appendN(t, l, 300, 5)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStoreAcquireErrors: unknown subjects are ErrNotFound without
// creating anything; empty subjects and subjects with NUL are
// ErrInvalidSubject.
func TestStoreAcquireErrors(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, testOptions())
	if _, err := s.Acquire("nobody.here"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Acquire of an unknown subject: %v, want ErrNotFound", err)
	}
	if s.Has("nobody.here") || len(s.Subjects()) != 0 || s.OpenLogs() != 0 {
		t.Fatalf("a failed Acquire left a subject behind: %q, %d open", s.Subjects(), s.OpenLogs())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a failed Acquire created %d entries in the data dir", len(entries))
	}
	for _, subject := range []string{"", "\x00", "a\x00b", "a.b\x00"} {
		if _, err := s.Acquire(subject); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("Acquire(%q): %v, want ErrInvalidSubject", subject, err)
		}
		if err := s.View(subject, func(*Log) error { return nil }); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("View(%q): %v, want ErrInvalidSubject", subject, err)
		}
		if _, _, err := storeAppend(s, subject, 0, nil, []byte("x")); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("Append(%q): %v, want ErrInvalidSubject", subject, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("invalid subjects created %d entries in the data dir", len(entries))
	}
	// The subject that was not found can still be created.
	if _, _, err := storeAppend(s, "nobody.here", 0, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	l, err := s.Acquire("nobody.here")
	if err != nil {
		t.Fatal(err)
	}
	s.Release(l)
}

// TestAsNoSpaceMarksAFullDisk: a full disk met while making a new log
// (its directory, its subject file) is ErrNoSpace, as when a segment
// cannot grow, so that an ack says 503 and not 500.
func TestAsNoSpaceMarksAFullDisk(t *testing.T) {
	full := &os.PathError{Op: "write", Path: "x/subject", Err: syscall.ENOSPC}
	if err := asNoSpace("creating x", fmt.Errorf("logstore: write: %w", full)); !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("%v: want ErrNoSpace wrapping ENOSPC", err)
	}
	if err := asNoSpace("creating x", errors.New("other")); errors.Is(err, ErrNoSpace) {
		t.Fatal("an unrelated error became ErrNoSpace")
	}
}

// TestStoreCloseWithAcquiredLog: Store.Close closes logs that are still
// held; their holders get ErrClosed, and the store refuses new work.
func TestStoreCloseWithAcquiredLog(t *testing.T) {
	s, err := OpenStore(t.TempDir(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := storeAppend(s, "held", 0, nil, []byte("before")); err != nil {
		t.Fatal(err)
	}
	l, err := s.Acquire("held")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan bool)
	go func() { waiting <- l.WaitFor(context.Background(), 1) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Append(0, nil, []byte("after")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append on a log held across Store.Close: %v, want ErrClosed", err)
	}
	if err := l.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync on a log held across Store.Close: %v, want ErrClosed", err)
	}
	if <-waiting {
		t.Fatal("WaitFor reported a record that was never appended")
	}
	select {
	case <-l.Closed():
	default:
		t.Fatal("held log not closed by Store.Close")
	}
	s.Release(l) // after Close: harmless
	if _, err := s.Acquire("held"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v, want ErrClosed", err)
	}
	if _, _, err := storeAppend(s, "other", 0, nil, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// ---- Regressions: bugs found by review, each fixed. ----

const (
	storeChildEnv    = "LOGSTORE_STORE_TEST_CHILD"
	storeChildDirEnv = "LOGSTORE_STORE_TEST_DIR"
)

// storeInChild reports whether this process is the child that runs the
// body of test t, and gives it a directory to work in that the parent
// removes (a child that crashes cannot clean up). Otherwise it runs t
// alone in a child process (the test binary again) and returns the
// start of the child's output and its error; a child that has not
// finished after timeout is killed.
func storeInChild(t *testing.T, timeout time.Duration) (isChild bool, dir, output string, err error) {
	if os.Getenv(storeChildEnv) == t.Name() {
		return true, os.Getenv(storeChildDirEnv), "", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + p + "$"
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+strings.Join(parts, "/"), "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), storeChildEnv+"="+t.Name(), storeChildDirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("child still running after %v: %w", timeout, ctx.Err())
	}
	// The start of a crash report says enough.
	lines := strings.SplitAfter(string(out), "\n")
	return false, "", strings.Join(lines[:min(len(lines), 40)], ""), err
}

// TestStoreRegressionSyncNoneLeavesSealedSegmentsUnsynced: Log.Sync promises to
// make every record durable "whatever the policy", and under SyncNone
// "Close still syncs"; but rotation skips the sync of the sealed segment
// under SyncNone and Sync/Close sync only the active one, so records in
// sealed segments are never fdatasync'ed by the log.
func TestStoreRegressionSyncNoneLeavesSealedSegmentsUnsynced(t *testing.T) {
	opts := testOptions()
	opts.Sync = SyncNone
	var mu sync.Mutex
	var syncs []string // file names, in the order they were synced
	opts.faults = &faultHooks{sync: func(path string) error {
		mu.Lock()
		syncs = append(syncs, filepath.Base(path))
		mu.Unlock()
		return nil
	}}
	dir := t.TempDir()
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 300)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		segments := *l.segments.Load()
		mu.Lock()
		defer mu.Unlock()
		for i, seg := range segments[:len(segments)-1] {
			// The last write to segment i came before segment i+1 was
			// created, which synced the new files: segment i needs a
			// sync after that.
			name := filepath.Base(seg.logPath())
			created := slices.Index(syncs, filepath.Base(segments[i+1].logPath()))
			if created < 0 || !slices.Contains(syncs[created:], name) {
				t.Errorf("after %s, sealed %s (offsets %d..%d) was not fdatasync'ed after its last record", when, name, seg.baseOffset, seg.baseOffset+seg.count.Load()-1)
			}
		}
	}
	check("Sync") // Close: TestPowerLossSyncCoversSealedSegmentsUnderSyncNone
}

// TestStoreRegressionScanClosedLogSpins: Scan (and Read) on a closed log - for
// instance one a holder kept across Store.Close - never returns:
// acquireSegment retries forever because every segment of the stale list
// has been released. It should return ErrClosed.
func TestStoreRegressionScanClosedLogSpins(t *testing.T) {
	isChild, dir, out, err := storeInChild(t, 20*time.Second)
	if !isChild {
		if err != nil {
			t.Fatalf("Scan on a closed log: %v\n%s", err, out)
		}
		return
	}
	s, err := OpenStore(dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := storeAppend(s, "held", 0, headersFor(0), payload(0)); err != nil {
		t.Fatal(err)
	}
	l, err := s.Acquire("held")
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, 9)
	s.Close()
	done := make(chan error)
	go func() {
		_, err := l.Scan(0, func(RecordView) bool { return true })
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Scan on a closed log: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Scan on a closed log has not returned after 5s")
	}
}

// TestStoreRegressionTruncatedIndexCrashes: only scanSegment turned a fault
// on a mapping into ErrFault; Log.Info and Log.OffsetAt read a sealed
// segment's index mapping without that protection, so an .idx truncated
// under the log killed the whole process with SIGBUS. Each call runs in a
// child: a crash fails the test. Info now reads no mapping at all; its case
// stays to keep it that way.
func TestStoreRegressionTruncatedIndexCrashes(t *testing.T) {
	for _, call := range []string{"Scan", "Info", "OffsetAt"} {
		t.Run(call, func(t *testing.T) {
			isChild, dir, out, err := storeInChild(t, time.Minute)
			if !isChild {
				if err != nil {
					t.Fatalf("%s on a truncated index: %v\n%s", call, err, out)
				}
				return
			}
			opts := testOptions()
			l := openTestLog(t, dir, opts)
			appendN(t, l, 0, 300)
			l.Close()
			l = openTestLog(t, dir, opts) // segment 0 sealed, its index mapped at its file size
			if err := os.Truncate(filepath.Join(dir, segmentFileName(0, ".idx")), 0); err != nil {
				t.Fatal(err)
			}
			switch call {
			case "Scan":
				if _, err := l.Scan(0, func(RecordView) bool { return true }); !errors.Is(err, ErrFault) {
					t.Errorf("Scan: %v, want ErrFault", err)
				}
			case "Info":
				t.Logf("Info: %+v", l.Info())
			case "OffsetAt":
				if offset, err := l.OffsetAt(1); !errors.Is(err, ErrFault) || !strings.Contains(err.Error(), ".idx") {
					t.Errorf("OffsetAt: %d, %v, want ErrFault naming the .idx", offset, err)
				}
			}
		})
	}
}

// TestStoreRegressionNewSubjectAfterFailedCreate: when the first segment of a new
// subject cannot be created (here: the disk is full), the log directory
// stays behind but the store does not learn the subject, so every later
// Append to it tries to create the directory again and fails on the
// rename, until the store is reopened.
func TestStoreRegressionNewSubjectAfterFailedCreate(t *testing.T) {
	opts := testOptions()
	var full atomic.Bool
	opts.faults = &faultHooks{preallocate: func(*os.File, int64, int64) error {
		if full.Load() {
			return fmt.Errorf("%w: injected", ErrNoSpace)
		}
		return nil
	}}
	dir := t.TempDir()
	s := openTestStore(t, dir, opts)
	full.Store(true)
	if _, _, err := storeAppend(s, "new.subject", 0, nil, []byte("x")); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("append with the disk full: %v, want ErrNoSpace", err)
	}
	full.Store(false)
	if _, _, err := storeAppend(s, "new.subject", 0, nil, []byte("x")); err != nil {
		t.Fatalf("append once space is back: %v", err)
	}
}

// TestStoreDurableLag: records appended under a policy that syncs count
// as lag until the syncer makes them durable, and not after.
func TestStoreDurableLag(t *testing.T) {
	opts := testOptions()
	opts.Sync = SyncInterval
	opts.SyncInterval = time.Hour // only Sync makes records durable
	s := openTestStore(t, t.TempDir(), opts)
	// A new subject's first record is durable when its log exists.
	if _, _, err := storeAppend(s, "lagging", 0, nil, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if lag := s.DurableLag(); lag != 0 {
		t.Fatalf("lag %d after a new subject's first record, want 0", lag)
	}
	for i := 0; i < 5; i++ {
		if _, _, err := storeAppend(s, "lagging", 0, nil, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if lag := s.DurableLag(); lag != 5 {
		t.Fatalf("lag %d before sync, want 5", lag)
	}
	l, err := s.Acquire("lagging")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(l)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if lag := s.DurableLag(); lag != 0 {
		t.Fatalf("lag %d after sync, want 0", lag)
	}
}

// TestStoreReopenAfterEvictionSkipsTheSync: a log that an eviction closed
// cleanly (everything synced) is reopened without syncing its segments
// again, so subjects that take turns past MaxOpenLogs do not pay an
// fdatasync per segment on every reopen; a log opened afresh still syncs.
func TestStoreReopenAfterEvictionSkipsTheSync(t *testing.T) {
	var syncs atomic.Int64
	opts := testOptions()
	opts.MaxOpenLogs = 1
	opts.faults = &faultHooks{sync: func(string) error { syncs.Add(1); return nil }}
	dir := t.TempDir()
	s := openTestStore(t, dir, opts)
	for _, subject := range []string{"turns.a", "turns.b"} { // b evicts a
		if _, _, err := storeAppend(s, subject, 0, nil, []byte(subject)); err != nil {
			t.Fatal(err)
		}
	}
	syncs.Store(0)
	l, err := s.Acquire("turns.a") // reopened; evicts b
	if err != nil {
		t.Fatal(err)
	}
	got := syncs.Load() // b is evicted only when a is released
	s.Release(l)
	if got != 0 {
		t.Fatalf("reopening an evicted log synced %d times", got)
	}
	s.Close()

	syncs.Store(0)
	fresh, err := OpenLog(filepath.Join(dir, subjectDirName("turns.a")), "turns.a", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if syncs.Load() == 0 {
		t.Fatal("a log opened by a new process was not synced")
	}
}
