package logstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// entriesFor are records i in [from, from+n) as appendN writes them.
func entriesFor(from, n int) []Entry {
	entries := make([]Entry, n)
	for k := range entries {
		entries[k] = Entry{Headers: headersFor(from + k), Data: payload(from + k)}
	}
	return entries
}

// appendBatches appends records [from, from+n) with AppendBatch, in
// batches of the given size, checking offsets and counts.
func appendBatches(t testing.TB, l *Log, from, n, batch int) {
	t.Helper()
	for i := from; i < from+n; i += batch {
		k := min(batch, from+n-i)
		first, got, err := l.AppendBatch(entriesFor(i, k))
		if err != nil || got != k || first != uint64(i) {
			t.Fatalf("batch at %d: first %d, %d of %d stored, %v", i, first, got, k, err)
		}
	}
}

// AppendBatch stores exactly what Append would: the same offsets, headers
// and data, across rotations (segments of 16 KiB hold a few dozen records,
// and a batch of 700 needs several pwritev calls), under every sync policy,
// and the same again after a reopen (recovery reads them back from disk).
func TestAppendBatchStoresWhatAppendWould(t *testing.T) {
	forEachSyncPolicy(t, func(t *testing.T, dir string, opts Options) {
		l := openTestLog(t, dir, opts)
		appendN(t, l, 0, 10)
		appendBatches(t, l, 10, 90, 1)
		appendBatches(t, l, 100, 300, 37)
		appendBatches(t, l, 400, 700, 700) // more than batchPieces/2 records
		appendN(t, l, 1100, 10)
		if got := l.Info().Segments; got < 10 {
			t.Fatalf("want rotation into many segments, got %d", got)
		}
		checkRecords(t, l, 0, 1110)
		if opts.Sync != SyncNone {
			if err := l.WaitDurable(context.Background(), 1109); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2 := openTestLog(t, dir, opts)
		if l2.EndOffset() != 1110 {
			t.Fatalf("reopened: end %d, want 1110", l2.EndOffset())
		}
		checkRecords(t, l2, 0, 1110)
	})
}

// Timestamps in a batch are raised like Append's, written back into the
// entries, and zero means one "now" for the batch.
func TestAppendBatchTimestamps(t *testing.T) {
	opts := testOptions()
	opts.Now = func() time.Time { return time.Unix(0, 500) }
	l := openTestLog(t, t.TempDir(), opts)
	if _, _, err := l.Append(100, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	entries := []Entry{{Timestamp: 50}, {Timestamp: 200}, {Timestamp: 150}, {}, {Timestamp: 600}, {Timestamp: 10}}
	if _, n, err := l.AppendBatch(entries); err != nil || n != len(entries) {
		t.Fatalf("AppendBatch: %d, %v", n, err)
	}
	want := []int64{100, 200, 200, 500, 600, 600}
	records, err := l.Read(1, len(entries))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		if e.Timestamp != want[i] || records[i].Timestamp != want[i] {
			t.Errorf("entry %d: returned %d, stored %d, want %d", i, e.Timestamp, records[i].Timestamp, want[i])
		}
	}
	if _, ts, err := l.Append(1, nil, nil); err != nil || ts != 600 {
		t.Fatalf("append after batch: ts %d, %v; want 600", ts, err)
	}
}

// A record too large stops the batch at it: those before it are stored,
// the caller learns which one failed, and the rest can follow.
func TestAppendBatchStopsAtARecordTooLarge(t *testing.T) {
	opts := testOptions()
	l := openTestLog(t, t.TempDir(), opts)
	entries := entriesFor(0, 3)
	entries = append(entries, Entry{Data: make([]byte, opts.SegmentBytes)})
	first, n, err := l.AppendBatch(entries)
	if !errors.Is(err, ErrRecordTooLarge) || first != 0 || n != 3 {
		t.Fatalf("got first %d, %d stored, %v; want 0, 3, ErrRecordTooLarge", first, n, err)
	}
	if first, n, err = l.AppendBatch(entriesFor(3, 4)); err != nil || first != 3 || n != 4 {
		t.Fatalf("next batch: first %d, %d stored, %v", first, n, err)
	}
	checkRecords(t, l, 0, 7)
	if first, n, err = l.AppendBatch([]Entry{{Data: make([]byte, opts.SegmentBytes)}}); !errors.Is(err, ErrRecordTooLarge) || n != 0 || first != 7 {
		t.Fatalf("lone large record: first %d, %d stored, %v", first, n, err)
	}
}

// A long poll parked on the end offset wakes for a batch.
func TestAppendBatchWakesWaiters(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	woke := make(chan bool)
	go func() { woke <- l.WaitFor(context.Background(), 0) }()
	if _, _, err := l.AppendBatch(entriesFor(0, 5)); err != nil {
		t.Fatal(err)
	}
	if !<-woke {
		t.Fatal("WaitFor returned false after a batch")
	}
	if err := l.WaitDurable(context.Background(), 4); err != nil {
		t.Fatalf("WaitDurable after a batch: %v", err)
	}
}

// A closed log refuses a batch and stores nothing.
func TestAppendBatchOnClosedLog(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, testOptions())
	appendBatches(t, l, 0, 5, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, n, err := l.AppendBatch(entriesFor(5, 2)); !errors.Is(err, ErrClosed) || n != 0 {
		t.Fatalf("batch on closed log: %d stored, %v", n, err)
	}
}

// mixedData is record i of TestAppendBatchBytesMatchAppend: empty, small
// (copied next to its head) and large (its own iovec), around inlineData.
func mixedData(i int) []byte {
	sizes := []int{0, 100, inlineData, inlineData + 1, 3000}
	return bytes.Repeat([]byte{byte('a' + i%26)}, sizes[i%len(sizes)])
}

// A batch writes the records' bytes exactly as Append does: two logs fed
// the same records, one each way, hold the same bytes in their .log files,
// for data copied next to the record's head and data written from where
// it is alike.
func TestAppendBatchBytesMatchAppend(t *testing.T) {
	opts := testOptions()
	opts.Now = func() time.Time { return time.Unix(1700000000, 0) }
	one, many := t.TempDir(), t.TempDir()
	const n = 200
	a := openTestLog(t, one, opts)
	for i := 0; i < n; i++ {
		if _, _, err := a.Append(0, headersFor(i), mixedData(i)); err != nil {
			t.Fatal(err)
		}
	}
	b := openTestLog(t, many, opts)
	for i := 0; i < n; i += 13 {
		batch := make([]Entry, 0, 13)
		for k := i; k < min(i+13, n); k++ {
			batch = append(batch, Entry{Headers: headersFor(k), Data: mixedData(k)})
		}
		if first, stored, err := b.AppendBatch(batch); err != nil || first != uint64(i) || stored != len(batch) {
			t.Fatalf("batch at %d: first %d, %d stored, %v", i, first, stored, err)
		}
	}
	records, err := b.Read(0, n)
	if err != nil || len(records) != n {
		t.Fatalf("read back: %d records, %v", len(records), err)
	}
	for i, r := range records {
		if !bytes.Equal(r.Data, mixedData(i)) {
			t.Fatalf("record %d: %d bytes, want %d", i, len(r.Data), len(mixedData(i)))
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(one, "*.log"))
	if err != nil || len(files) < 3 {
		t.Fatalf("segments: %v, %v", files, err)
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(many, filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		// Preallocation may differ (a batch grows the file at once), the
		// records may not.
		if !bytes.Equal(bytes.TrimRight(got, "\x00"), bytes.TrimRight(want, "\x00")) {
			t.Fatalf("%s differs between Append and AppendBatch", filepath.Base(f))
		}
	}
}

// A batch that finds the disk full stores nothing of the records that did
// not fit, reports ErrNoSpace, and the log takes batches again once there
// is space.
func TestAppendBatchIntoAFullDisk(t *testing.T) {
	opts, full := fullDiskOptions()
	l := openTestLog(t, t.TempDir(), opts)
	appendBatches(t, l, 0, 5, 5)
	*full = true
	var err error
	stored := 5
	for i := 0; i < 50 && err == nil; i++ {
		var n int
		_, n, err = l.AppendBatch(entriesFor(stored, 10))
		stored += n
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("batches into a full disk: %v", err)
	}
	if end := l.EndOffset(); end != uint64(stored) {
		t.Fatalf("end offset %d, but %d records reported stored", end, stored)
	}
	checkRecords(t, l, 0, stored)
	*full = false
	appendBatches(t, l, stored, 20, 20)
	checkRecords(t, l, 0, stored+20)
}

// Under SyncAlways a batch whose sync fails is stored (published to
// readers) but not durable: AppendBatch reports every entry stored and
// ErrSyncFailed, so a caller tells it from an entry that was refused
// (n < len(entries)). Capture relies on that.
func TestAppendBatchSyncFailureUnderSyncAlways(t *testing.T) {
	opts := testOptions()
	opts.Sync = SyncAlways
	var failing atomic.Bool
	opts.faults = &faultHooks{sync: func(string) error {
		if failing.Load() {
			return errors.New("EIO")
		}
		return nil
	}}
	l := openTestLog(t, t.TempDir(), opts)
	appendBatches(t, l, 0, 5, 5)
	failing.Store(true)
	first, n, err := l.AppendBatch(entriesFor(5, 4))
	if !errors.Is(err, ErrSyncFailed) || first != 5 || n != 4 {
		t.Fatalf("got first %d, %d stored, %v; want 5, 4, ErrSyncFailed", first, n, err)
	}
	checkRecords(t, l, 0, 9)
	if _, n, err := l.AppendBatch(entriesFor(9, 2)); !errors.Is(err, ErrSyncFailed) || n != 0 {
		t.Fatalf("after the failed sync: %d stored, %v; want 0, ErrSyncFailed", n, err)
	}
}
