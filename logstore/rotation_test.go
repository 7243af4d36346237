package logstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pipelineCounts are the rotations of l that swapped in a prepared
// segment and that created one inline.
func pipelineCounts(l *Log) (swapped, inline int) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.pipeline.swapped, l.pipeline.inline
}

// pipelineReady says whether l's pipeline has a segment prepared.
func pipelineReady(l *Log) bool {
	l.pipeline.mu.Lock()
	defer l.pipeline.mu.Unlock()
	return l.pipeline.ready != nil
}

// prepareAsked says whether the writer of l has asked the pipeline for
// the segment to follow the active one.
func prepareAsked(l *Log) bool {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.active.prepareAsked
}

// waitUntil polls cond every millisecond for up to 10 seconds.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// preparedFiles lists the prepared segment files in dir.
func preparedFiles(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	for _, name := range []string{preparedLogName, preparedIndexName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			names = append(names, name)
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return names
}

// TestPipelineSwapsPreparedSegmentsAcrossRotations: under every policy,
// a rotation that finds the next segment prepared swaps it in; the
// swapped-in segment is committed (named <base>.log, its header synced)
// in the background; appends and reads go on across every rotation, the
// log reopens to the same records, and Close leaves no prepared file.
func TestPipelineSwapsPreparedSegmentsAcrossRotations(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncBatch, SyncAlways, SyncInterval, SyncNone} {
		t.Run(policy.String(), func(t *testing.T) {
			const rotations = 12
			opts := testOptions()
			opts.Sync = policy
			opts.SyncInterval = time.Millisecond
			dir := t.TempDir()
			l := openTestLog(t, dir, opts)
			next := 0
			for r := 0; r < rotations; r++ {
				segments := l.Info().Segments
				// Fill the active segment past half, so that the pipeline
				// is asked; let it finish; then rotate into its segment.
				waitUntil(t, "the pipeline prepares a segment", func() bool {
					if pipelineReady(l) {
						return true
					}
					appendN(t, l, next, 1)
					next++
					return false
				})
				for l.Info().Segments == segments {
					appendN(t, l, next, 1)
					next++
				}
				swapped, inline := pipelineCounts(l)
				if swapped != r+1 || inline != 0 {
					t.Fatalf("rotation %d: %d swapped in, %d made inline; want %d and 0", r, swapped, inline, r+1)
				}
				l.writeMu.Lock()
				active := l.active
				l.writeMu.Unlock()
				waitUntil(t, "the swapped-in segment is committed", func() bool { return active.committed.Load() })
				if want := filepath.Join(dir, segmentFileName(active.baseOffset, ".log")); active.logPath() != want {
					t.Fatalf("committed segment at %s, want %s", active.logPath(), want)
				}
				checkRecords(t, l, 0, next)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if left := preparedFiles(t, dir); len(left) != 0 {
				t.Fatalf("Close left %v", left)
			}
			l = openTestLog(t, dir, opts)
			checkRecords(t, l, 0, next)
			if got := len(segmentBases(t, dir)); got != rotations+1 {
				t.Fatalf("%d segments on disk, want %d", got, rotations+1)
			}
		})
	}
}

// A log that recovery opened has its segments named and their headers
// durable: the pipeline prepares the next segment as soon as the active
// one is half full, under every policy, even SyncNone, which never syncs
// on its own (the first rotation after a reopen was made inline there).
func TestAReopenedLogPreparesItsNextSegmentAhead(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncNone, SyncBatch} {
		t.Run(policy.String(), func(t *testing.T) {
			opts := testOptions()
			opts.Sync = policy
			dir := t.TempDir()
			l := openTestLog(t, dir, opts)
			appendN(t, l, 0, 3)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openTestLog(t, dir, opts)
			next := 3
			waitUntil(t, "the pipeline prepares a segment after a reopen", func() bool {
				if pipelineReady(l) {
					return true
				}
				appendN(t, l, next, 1)
				next++
				return false
			})
			for segments := l.Info().Segments; l.Info().Segments == segments; next++ {
				appendN(t, l, next, 1)
			}
			if swapped, inline := pipelineCounts(l); swapped != 1 || inline != 0 {
				t.Fatalf("the first rotation after a reopen: %d swapped in, %d made inline", swapped, inline)
			}
			checkRecords(t, l, 0, next)
		})
	}
}

// TestPipelineManyRotationsWithReaders: appends at full speed through
// hundreds of rotations (swapped in or made inline, whichever the race
// between the writer and the pipeline gives), with readers following the
// tail and retention deleting from the front, keep every record whole and
// in place, the segments contiguous, and the space the observer was told
// of equal to the files.
func TestPipelineManyRotationsWithReaders(t *testing.T) {
	total := 20000
	if storeRaceEnabled {
		total = 8000
	}
	obs := newRecordingObserver()
	opts := testOptions()
	opts.Observer = obs
	opts.Retention = Retention{MaxMessages: 2000}
	dir := t.TempDir()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := uint64(0)
			for next < uint64(total) && ctx.Err() == nil {
				got, err := l.Scan(next, func(v RecordView) bool {
					if string(v.Data) != string(payload(int(v.Offset))) {
						t.Errorf("record %d: %q", v.Offset, v.Data)
						cancel()
						return false
					}
					return true
				})
				var rangeErr *RangeError
				switch {
				case err == nil:
					next = got
				case errors.As(err, &rangeErr) && rangeErr.Offset < rangeErr.First:
					next = l.FirstOffset()
					continue
				default:
					t.Errorf("scan from %d: %v", next, err)
					cancel()
					return
				}
				if next < uint64(total) {
					l.WaitFor(ctx, next)
				}
			}
		}()
	}
	appendN(t, l, 0, total)
	wg.Wait()
	swapped, inline := pipelineCounts(l)
	t.Logf("%d records, %d rotations: %d swapped in, %d made inline", total, swapped+inline, swapped, inline)
	if swapped+inline < 100 {
		t.Fatalf("only %d rotations", swapped+inline)
	}
	info := l.Info()
	if info.EndOffset != uint64(total) || info.FirstOffset == 0 {
		t.Fatalf("info %+v", info)
	}
	checkRecords(t, l, int(info.FirstOffset), total)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := preparedFiles(t, dir); len(left) != 0 {
		t.Fatalf("Close left %v", left)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if got, want := obs.diskBytes, segmentFileBytes(t, dir); got != want {
		t.Fatalf("observer says %d bytes of segment files, the disk holds %d", got, want)
	}
}

// TestPipelineCloseWhilePreparing: Close waits for a segment being
// prepared and deletes it, leaving the log as it was.
func TestPipelineCloseWhilePreparing(t *testing.T) {
	release := make(chan struct{})
	var blocked atomic.Bool
	opts := testOptions()
	obs := newRecordingObserver()
	opts.Observer = obs
	opts.faults = &faultHooks{preallocate: func(f *os.File, _, _ int64) error {
		if filepath.Base(f.Name()) == preparedLogName {
			blocked.Store(true)
			<-release
		}
		return nil
	}}
	dir := t.TempDir()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	// Up to the record that asks for the next segment, and not further: a
	// rotation would wait for the segment being prepared.
	n := 0
	for !prepareAsked(l) {
		appendN(t, l, n, 1)
		n++
	}
	waitUntil(t, "the pipeline prepares a segment", blocked.Load)
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a segment was being prepared", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if left := preparedFiles(t, dir); len(left) != 0 {
		t.Fatalf("Close left %v", left)
	}
	obs.mu.Lock()
	if got, want := obs.diskBytes, segmentFileBytes(t, dir); got != want {
		t.Errorf("observer says %d bytes of segment files, the disk holds %d", got, want)
	}
	obs.mu.Unlock()
	l = openTestLog(t, dir, testOptions())
	checkRecords(t, l, 0, n)
	appendN(t, l, n, 1)
}

// TestPipelineFallsBackWhenPreparingFails: when the pipeline cannot
// prepare a segment (a full disk for it), every rotation makes its
// segment inline, as one did before the pipeline, and nothing of the
// failed preparations is left.
func TestPipelineFallsBackWhenPreparingFails(t *testing.T) {
	opts := testOptions()
	opts.faults = &faultHooks{preallocate: func(f *os.File, _, _ int64) error {
		if filepath.Base(f.Name()) == preparedLogName || filepath.Base(f.Name()) == preparedIndexName {
			return fmt.Errorf("%w: injected for the prepared segment", ErrNoSpace)
		}
		return nil
	}}
	dir := t.TempDir()
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 500)
	swapped, inline := pipelineCounts(l)
	if swapped != 0 || inline < 3 {
		t.Fatalf("%d swapped in, %d made inline; want none and several", swapped, inline)
	}
	checkRecords(t, l, 0, 500)
	waitUntil(t, "the pipeline stops", func() bool {
		l.pipeline.mu.Lock()
		defer l.pipeline.mu.Unlock()
		return l.pipeline.running == nil
	})
	if left := preparedFiles(t, dir); len(left) != 0 {
		t.Fatalf("failed preparations left %v", left)
	}
}

// TestPipelineCommitFailureIsSticky: a swapped-in segment whose commit
// cannot sync is a failed sync like any other (the log refuses appends
// and durability), and reopening names the segment and serves every
// record appended to it.
func TestPipelineCommitFailureIsSticky(t *testing.T) {
	var failing atomic.Bool
	opts := testOptions()
	opts.Sync = SyncNone // nothing but the commit syncs the new segment
	opts.faults = &faultHooks{sync: func(path string) error {
		if failing.Load() && !strings.HasSuffix(path, segmentFileName(0, ".log")) && strings.HasSuffix(path, ".log") {
			return errors.New("EIO")
		}
		return nil
	}}
	dir := t.TempDir()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for !pipelineReady(l) && n < 1000 {
		appendN(t, l, n, 1)
		n++
	}
	waitUntil(t, "a prepared segment", func() bool { return pipelineReady(l) })
	failing.Store(true)
	segments := l.Info().Segments
	for l.Info().Segments == segments {
		appendN(t, l, n, 1) // SyncNone: the failure surfaces later
		n++
	}
	waitUntil(t, "the commit fails", func() bool { return l.Err() != nil })
	if err := l.Err(); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("log error %v, want ErrSyncFailed", err)
	}
	if _, _, err := l.Append(0, nil, []byte("refused")); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("append after the failed commit: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("close: %v, want ErrSyncFailed", err)
	}
	if left := preparedFiles(t, dir); len(left) != 2 {
		t.Fatalf("prepared files %v: want the uncommitted segment's two", left)
	}
	l = openTestLog(t, dir, testOptions())
	checkRecords(t, l, 0, n)
	if left := preparedFiles(t, dir); len(left) != 0 {
		t.Fatalf("recovery left %v", left)
	}
	appendN(t, l, n, 1)
}
