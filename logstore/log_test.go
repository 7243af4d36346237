package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testOptions are small segments and a quiet logger, so tests rotate often.
func testOptions() Options {
	return Options{
		SegmentBytes:        16 << 10,
		InitialSegmentBytes: 4 << 10,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func openTestLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func payload(i int) []byte {
	return []byte(fmt.Sprintf("record %06d %s", i, bytes.Repeat([]byte{'x'}, i%300)))
}

func headersFor(i int) Headers {
	if i%3 == 0 {
		return nil
	}
	return Headers{"Nats-Msg-Id": {fmt.Sprint(i)}, "multi": {"b", "a", ""}, "Empty": {}}
}

func appendN(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		off, _, err := l.Append(0, headersFor(i), payload(i))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if off != uint64(i) {
			t.Fatalf("append %d got offset %d", i, off)
		}
	}
}

// checkRecords reads [from, to) and compares every record with what appendN wrote.
func checkRecords(t testing.TB, l *Log, from, to int) {
	t.Helper()
	records, err := l.Read(uint64(from), to-from)
	if err != nil {
		t.Fatalf("read from %d: %v", from, err)
	}
	if len(records) != to-from {
		t.Fatalf("read from %d: got %d records, want %d", from, len(records), to-from)
	}
	for k, r := range records {
		i := from + k
		if r.Offset != uint64(i) || !bytes.Equal(r.Data, payload(i)) {
			t.Fatalf("record %d: got offset %d data %q", i, r.Offset, r.Data)
		}
		if want := headersFor(i); !reflect.DeepEqual(r.Headers, want) {
			t.Fatalf("record %d headers: got %v want %v", i, r.Headers, want)
		}
	}
}

// offsetAt is Log.OffsetAt for tests, where it must not fail.
func offsetAt(t testing.TB, l *Log, timestamp int64) uint64 {
	t.Helper()
	offset, err := l.OffsetAt(timestamp)
	if err != nil {
		t.Fatalf("OffsetAt(%d): %v", timestamp, err)
	}
	return offset
}

func TestAppendReadAcrossRotationAndReopen(t *testing.T) {
	forEachSyncPolicy(t, func(t *testing.T, dir string, opts Options) {
		l := openTestLog(t, dir, opts)
		appendN(t, l, 0, 500)
		if got := l.Info().Segments; got < 5 {
			t.Fatalf("want rotation into several segments, got %d", got)
		}
		checkRecords(t, l, 0, 500)
		checkRecords(t, l, 123, 500)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2 := openTestLog(t, dir, opts)
		if l2.EndOffset() != 500 || l2.FirstOffset() != 0 {
			t.Fatalf("reopened: first %d end %d", l2.FirstOffset(), l2.EndOffset())
		}
		checkRecords(t, l2, 0, 500)
		appendN(t, l2, 500, 50)
		checkRecords(t, l2, 490, 550)
	})
}

// forEachSyncPolicy runs fn as a subtest for every sync policy, with a
// fresh directory and the test options set to that policy.
func forEachSyncPolicy(t *testing.T, fn func(t *testing.T, dir string, opts Options)) {
	for _, policy := range []SyncPolicy{SyncBatch, SyncAlways, SyncInterval, SyncNone} {
		t.Run(policy.String(), func(t *testing.T) {
			opts := testOptions()
			opts.Sync = policy
			opts.SyncInterval = time.Millisecond
			fn(t, t.TempDir(), opts)
		})
	}
}

func TestTimestampsNeverDecrease(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	stamps := []int64{100, 50, 200, 200, 10, 300}
	want := []int64{100, 100, 200, 200, 200, 300}
	for i, ts := range stamps {
		_, got, err := l.Append(ts, nil, []byte("x"))
		if err != nil || got != want[i] {
			t.Fatalf("append ts %d: got %d, %v; want %d", ts, got, err, want[i])
		}
	}
	for _, c := range []struct {
		ts   int64
		want uint64
	}{{0, 0}, {100, 0}, {101, 2}, {200, 2}, {250, 5}, {300, 5}, {301, 6}} {
		if got := offsetAt(t, l, c.ts); got != c.want {
			t.Errorf("OffsetAt(%d) = %d, want %d", c.ts, got, c.want)
		}
	}
}

func TestOffsetAtAcrossSegments(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	for i := 0; i < 400; i++ {
		if _, _, err := l.Append(int64(1000+i*10), nil, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{0, 1, 57, 199, 200, 399} {
		if got := offsetAt(t, l, int64(1000+i*10)); got != uint64(i) {
			t.Errorf("OffsetAt(exact %d) = %d", i, got)
		}
		if got := offsetAt(t, l, int64(1000+i*10)-5); got != uint64(i) {
			t.Errorf("OffsetAt(just before %d) = %d", i, got)
		}
	}
	if got := offsetAt(t, l, 1<<60); got != 400 {
		t.Errorf("OffsetAt(future) = %d, want end 400", got)
	}
}

func TestScanRange(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	appendN(t, l, 0, 10)
	var rangeErr *RangeError
	if _, err := l.Scan(11, func(RecordView) bool { return true }); !errors.As(err, &rangeErr) || rangeErr.End != 10 {
		t.Fatalf("scan past end: %v", err)
	}
	next, err := l.Scan(10, func(RecordView) bool { t.Fatal("record at end"); return true })
	if err != nil || next != 10 {
		t.Fatalf("scan at end: next %d err %v", next, err)
	}
	n := 0
	next, err = l.Scan(3, func(RecordView) bool { n++; return n < 4 })
	if err != nil || next != 7 || n != 4 {
		t.Fatalf("scan stopped by callback: next %d n %d err %v", next, n, err)
	}
}

func TestRecordTooLargeIsRefused(t *testing.T) {
	opts := testOptions()
	l := openTestLog(t, t.TempDir(), opts)
	appendN(t, l, 0, 3)
	big := make([]byte, opts.SegmentBytes)
	if _, _, err := l.Append(0, nil, big); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("got %v, want ErrRecordTooLarge", err)
	}
	exact := make([]byte, opts.maxRecordSize()-recordHeaderSize)
	if off, _, err := l.Append(0, nil, exact); err != nil || off != 3 {
		t.Fatalf("largest record: offset %d, %v", off, err)
	}
	appendN(t, l, 4, 3)
	checkRecords(t, l, 4, 7)
}

func TestWaitForWakesOnAppend(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	woke := make(chan bool)
	go func() { woke <- l.WaitFor(context.Background(), 0) }()
	// The waiter may or may not be parked yet; either way it must see the record.
	if _, _, err := l.Append(0, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if !<-woke {
		t.Fatal("WaitFor returned false after the record arrived")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if l.WaitFor(ctx, 5) {
		t.Fatal("WaitFor true for a record that does not exist")
	}
}

func TestWaitForReturnsOnClose(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	done := make(chan bool)
	go func() { done <- l.WaitFor(context.Background(), 0) }()
	l.Close()
	if <-done {
		t.Fatal("WaitFor reported a record on an empty closed log")
	}
}

func TestWaitDurableBatchSharesSyncs(t *testing.T) {
	opts := testOptions()
	var mu sync.Mutex
	syncs := 0
	opts.faults = &faultHooks{sync: func(string) error { mu.Lock(); syncs++; mu.Unlock(); return nil }}
	l := openTestLog(t, t.TempDir(), opts)
	mu.Lock()
	syncs = 0
	mu.Unlock()
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				off, _, err := l.Append(0, nil, []byte("acked"))
				if err == nil {
					err = l.WaitDurable(context.Background(), off)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if l.DurableOffset() <= off {
					t.Errorf("durable offset %d after waiting for %d", l.DurableOffset(), off)
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if syncs >= writers*each {
		t.Fatalf("%d syncs for %d acked appends: no group commit", syncs, writers*each)
	}
	t.Logf("%d acked appends took %d syncs", writers*each, syncs)
}

func TestFailedSyncIsSticky(t *testing.T) {
	opts := testOptions()
	fail := false
	var mu sync.Mutex
	opts.faults = &faultHooks{sync: func(string) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return errors.New("EIO")
		}
		return nil
	}}
	l := openTestLog(t, t.TempDir(), opts)
	appendN(t, l, 0, 5)
	mu.Lock()
	fail = true
	mu.Unlock()
	off, _, err := l.Append(0, nil, []byte("doomed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitDurable(context.Background(), off); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("WaitDurable after failed sync: %v", err)
	}
	mu.Lock()
	fail = false // a later sync would succeed, but must not be trusted
	mu.Unlock()
	if _, _, err := l.Append(0, nil, []byte("after")); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("append after failed sync: %v", err)
	}
	if err := l.WaitDurable(context.Background(), off); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("WaitDurable retried the sync: %v", err)
	}
	checkRecords(t, l, 0, 5) // reads keep working
}

// fullDiskOptions are test options whose preallocation fails with
// ErrNoSpace while *full is true.
func fullDiskOptions() (Options, *bool) {
	opts := testOptions()
	full := new(bool)
	opts.faults = &faultHooks{preallocate: func(*os.File, int64, int64) error {
		if *full {
			return fmt.Errorf("%w: injected", ErrNoSpace)
		}
		return nil
	}}
	return opts, full
}

func TestNoSpaceWhilePreallocating(t *testing.T) {
	opts, full := fullDiskOptions()
	l := openTestLog(t, t.TempDir(), opts)
	appendN(t, l, 0, 5)
	*full = true
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		_, _, err = l.Append(0, nil, payload(i))
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("appends into a full disk: %v", err)
	}
	end := l.EndOffset()
	checkRecords(t, l, 0, 5)
	*full = false
	off, _, err := l.Append(0, nil, []byte("space again"))
	if err != nil || off != end {
		t.Fatalf("append after space freed: offset %d (want %d), %v", off, end, err)
	}
}

func TestRetention(t *testing.T) {
	cases := []struct {
		name      string
		retention Retention
		check     func(t *testing.T, l *Log)
	}{
		{"messages", Retention{MaxMessages: 100}, func(t *testing.T, l *Log) {
			info := l.Info()
			if n := info.EndOffset - info.FirstOffset; n < 100 || info.FirstOffset == 0 {
				t.Fatalf("kept %d messages from %d", n, info.FirstOffset)
			}
		}},
		{"bytes", Retention{MaxBytes: 20 << 10}, func(t *testing.T, l *Log) {
			if info := l.Info(); info.Bytes < 20<<10 || info.FirstOffset == 0 || info.Bytes > 20<<10+16<<10 {
				t.Fatalf("kept %d bytes from %d", info.Bytes, info.FirstOffset)
			}
		}},
		{"age", Retention{MaxAge: time.Hour}, func(t *testing.T, l *Log) {
			if info := l.Info(); info.Segments != 1 {
				t.Fatalf("kept %d segments of old records", info.Segments)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := testOptions()
			opts.Retention = c.retention
			now := time.Unix(1_000_000, 0)
			opts.Now = func() time.Time { return now }
			dir := t.TempDir()
			l := openTestLog(t, dir, opts)
			appendN(t, l, 0, 600)
			now = now.Add(2 * time.Hour)
			l.ApplyRetention()
			c.check(t, l)
			first := l.FirstOffset()
			if _, err := l.Scan(first-1, func(RecordView) bool { return true }); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("read below first offset: %v", err)
			}
			checkRecords(t, l, int(first), 600)
			l.Close()
			l2 := openTestLog(t, dir, opts)
			if l2.FirstOffset() != first || l2.EndOffset() != 600 {
				t.Fatalf("reopened: first %d end %d, want %d 600", l2.FirstOffset(), l2.EndOffset(), first)
			}
			appendN(t, l2, 600, 1) // offsets are never reused
		})
	}
}

func TestReaderKeepsDeletedSegment(t *testing.T) {
	opts := testOptions()
	opts.Retention = Retention{MaxMessages: 1}
	dir := t.TempDir()
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 30)
	seen := 0
	_, err := l.Scan(0, func(v RecordView) bool {
		if seen == 0 {
			// Fill more segments: retention deletes the one being read.
			appendN(t, l, 30, 300)
			if l.FirstOffset() == 0 {
				t.Fatal("retention did not run")
			}
		}
		if !bytes.Equal(v.Data, payload(int(v.Offset))) {
			t.Fatalf("record %d changed under the reader", v.Offset)
		}
		seen++
		return true
	})
	if err != nil || seen != 30 {
		t.Fatalf("read %d records, %v", seen, err)
	}
	if _, err := os.Stat(filepath.Join(dir, segmentFileName(0, ".log"))); !os.IsNotExist(err) {
		t.Fatalf("deleted segment still on disk: %v", err)
	}
}

// TestGrowthFallsBackToWhatTheRecordNeeds: on a disk with room for a page
// but not for doubling the .log, appends go on, one page at a time,
// instead of failing with space left.
func TestGrowthFallsBackToWhatTheRecordNeeds(t *testing.T) {
	opts := testOptions() // 4 KiB first, doubling up to 16 KiB
	opts.faults = &faultHooks{preallocate: func(f *os.File, _ int64, length int64) error {
		if strings.HasSuffix(f.Name(), ".log") && length > pageSize {
			return fmt.Errorf("%w: injected: only a page left", ErrNoSpace)
		}
		return nil
	}}
	l := openTestLog(t, t.TempDir(), opts)
	// Enough records to cross 8 KiB, where doubling would ask for 8 KiB
	// at once, and to rotate.
	for i := 0; i < 300; i++ {
		if _, _, err := l.Append(0, headersFor(i), payload(i)); err != nil {
			t.Fatalf("append %d with a page left at each growth: %v", i, err)
		}
	}
	checkRecords(t, l, 0, 300)
}
