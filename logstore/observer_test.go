package logstore

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordingObserver keeps what an Observer is told.
type recordingObserver struct {
	mu         sync.Mutex
	syncs      int
	syncErrors int
	diskBytes  int64
	deleted    int
	recovered  map[string]int // outcome → count
	tornBytes  int64
	failures   []error // Recovery.Err of each open reported as failed
}

func newRecordingObserver() *recordingObserver {
	return &recordingObserver{recovered: map[string]int{}}
}

func (o *recordingObserver) Synced(_ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.syncs++
	if err != nil {
		o.syncErrors++
	}
}

func (o *recordingObserver) DiskBytes(delta int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.diskBytes += delta
}

func (o *recordingObserver) RetentionDeleted(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deleted += n
}

func (o *recordingObserver) Recovered(_ string, r Recovery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.recovered[r.Outcome()]++
	o.tornBytes += r.TornBytes
	if r.Err != nil {
		o.failures = append(o.failures, r.Err)
	}
}

// outcomes returns a copy of the outcomes reported so far, and the errors
// of the failed ones.
func (o *recordingObserver) outcomes() (map[string]int, []error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.recovered), slices.Clone(o.failures)
}

// segmentFileBytes sums the sizes of the .log and .idx files under root.
func segmentFileBytes(t *testing.T, root string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, _, ok := parseSegmentName(d.Name()); ok && !d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestObserverDiskBytesMatchTheFiles: the space the observer is told about
// (segments created and grown, minus segments deleted by retention) is
// exactly what the segment files take, through rotation and retention, so
// a gauge built on it is honest.
func TestObserverDiskBytesMatchTheFiles(t *testing.T) {
	obs := newRecordingObserver()
	opts := testOptions()
	opts.Observer = obs
	opts.Retention = Retention{MaxMessages: 100}
	root := t.TempDir()
	s, err := OpenStore(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		for _, subject := range []string{"observed.a", "observed.b"} {
			if _, _, err := storeAppend(s, subject, 0, nil, payload(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.deleted == 0 {
		t.Fatal("retention deleted nothing: the test does not cover deletion")
	}
	if got, want := obs.diskBytes, segmentFileBytes(t, root); got != want {
		t.Fatalf("observer says %d bytes of segment files, the disk holds %d", got, want)
	}
	if obs.syncs == 0 || obs.syncErrors != 0 {
		t.Fatalf("syncs %d, failed %d", obs.syncs, obs.syncErrors)
	}
	if obs.recovered["clean"] != 2 {
		t.Fatalf("recoveries %v, want 2 clean opens", obs.recovered)
	}
}

// TestObserverReportsRecoveryOutcomes: a torn tail and a rebuilt index are
// reported with the bytes cut, and corruption as corrupt.
func TestObserverReportsRecoveryOutcomes(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 300) // several segments
	l.Close()
	bases := segmentBases(t, dir)
	newest := filepath.Join(dir, segmentFileName(bases[len(bases)-1], ".log"))
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	walked, _ := rcvWalk(b)
	end := walked[len(walked)-1] + 40 // inside the last record: garbage after the good ones
	for i := end; i < end+10; i++ {
		b[i] = 0xAB
	}
	if err := os.WriteFile(newest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, segmentFileName(bases[0], ".idx"))); err != nil {
		t.Fatal(err)
	}

	obs := newRecordingObserver()
	opts.Observer = obs
	l, err = OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if obs.recovered["torn_tail"] != 1 || obs.tornBytes == 0 {
		t.Fatalf("recoveries %v, torn bytes %d: want one torn tail", obs.recovered, obs.tornBytes)
	}

	// Damage a sealed segment's record: corruption.
	sealed := filepath.Join(dir, segmentFileName(bases[0], ".log"))
	rcvEdit(t, sealed, func(b []byte) []byte {
		positions, _ := rcvWalk(b)
		b[positions[len(positions)/2]+30] ^= 0xFF
		return b
	})
	os.Remove(filepath.Join(dir, segmentFileName(bases[0], ".idx"))) // so the .log is read
	l, _ = OpenLog(dir, "test.subject", opts)
	if l != nil {
		l.Close()
	}
	if obs.recovered["corrupt"] != 1 {
		t.Fatalf("recoveries %v: want one corrupt", obs.recovered)
	}
}
