package logstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ---- helpers ----

// trNewData is what the tests append at offset i after a truncation: not
// what appendN and plAppend wrote there, so that a read tells them apart.
func trNewData(i int) []byte { return []byte(fmt.Sprintf("after the truncation %06d", i)) }

// trAppendNew appends records from..from+n-1 with trNewData.
func trAppendNew(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		off, _, err := l.Append(0, nil, trNewData(i))
		if err != nil || off != uint64(i) {
			t.Fatalf("append %d after the truncation: offset %d, %v", i, off, err)
		}
	}
}

// trCheckNew reads [from, to) and checks that it holds trNewData.
func trCheckNew(t testing.TB, l *Log, from, to int) {
	t.Helper()
	records, err := l.Read(uint64(from), to-from)
	if err != nil || len(records) != to-from {
		t.Fatalf("read from %d: %d records, %v; want %d", from, len(records), err, to-from)
	}
	for k, r := range records {
		if i := from + k; r.Offset != uint64(i) || !bytes.Equal(r.Data, trNewData(i)) || r.Headers != nil {
			t.Fatalf("record %d: offset %d data %q headers %v, want what was appended after the truncation", i, r.Offset, r.Data, r.Headers)
		}
	}
}

// trTruncate truncates l to offset and checks what TruncateTo returns and
// the offsets it leaves.
func trTruncate(t testing.TB, l *Log, offset uint64) {
	t.Helper()
	end := l.EndOffset()
	dropped, err := l.TruncateTo(offset)
	if err != nil {
		t.Fatalf("TruncateTo(%d) on a log ending at %d: %v", offset, end, err)
	}
	if dropped != end-offset {
		t.Fatalf("TruncateTo(%d) on a log ending at %d dropped %d records", offset, end, dropped)
	}
	if got, durable := l.EndOffset(), l.DurableOffset(); got != offset || durable != offset {
		t.Fatalf("after TruncateTo(%d): end offset %d, durable offset %d", offset, got, durable)
	}
}

// trBases are the base offsets of l's segments, oldest first.
func trBases(l *Log) []uint64 {
	var bases []uint64
	for _, s := range *l.segments.Load() {
		bases = append(bases, s.baseOffset)
	}
	return bases
}

// trTruncationFiles lists the files of a truncation in dir.
func trTruncationFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".truncate") {
			names = append(names, e.Name())
		}
	}
	return names
}

func trNoTruncationFiles(t testing.TB, dir string) {
	t.Helper()
	if left := trTruncationFiles(t, dir); len(left) != 0 {
		t.Fatalf("files of a truncation left in the log directory: %v", left)
	}
}

// trBuild is a log of records 0..n-1 as plAppend writes them, closed.
func trBuild(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	l := plMustOpen(t, dir)
	plAppend(t, l, 0, n)
	plClose(t, l)
	return dir
}

// ---- what a truncation leaves ----

func TestTruncateToInsideTheNewestSegmentDropsItsTail(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, testOptions())
	appendN(t, l, 0, 300)
	bases := trBases(l)
	target := bases[len(bases)-1] + (300-bases[len(bases)-1])/2
	trTruncate(t, l, target)
	if got := trBases(l); !slices.Equal(got, bases) {
		t.Fatalf("segments %v after the truncation, want %v", got, bases)
	}
	checkRecords(t, l, 0, int(target))
	if records, err := l.Read(target, 1); err != nil || len(records) != 0 {
		t.Fatalf("read at the new end: %d records, %v", len(records), err)
	}
	if _, err := l.Read(target+1, 1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read past the new end: %v, want ErrOutOfRange", err)
	}
	trNoTruncationFiles(t, dir)
	trAppendNew(t, l, int(target), 5)
	checkRecords(t, l, 0, int(target))
	trCheckNew(t, l, int(target), int(target)+5)

	l.Close()
	l = openTestLog(t, dir, testOptions())
	if l.EndOffset() != target+5 {
		t.Fatalf("end offset %d after reopening, want %d", l.EndOffset(), target+5)
	}
	checkRecords(t, l, 0, int(target))
	trCheckNew(t, l, int(target), int(target)+5)
}

func TestTruncateToInsideASealedSegmentDeletesTheNewerSegments(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, testOptions())
	appendN(t, l, 0, 400)
	bases := trBases(l)
	if len(bases) < 4 {
		t.Fatalf("%d segments: the test wants 4 or more", len(bases))
	}
	target := bases[1] + (bases[2]-bases[1])/2
	trTruncate(t, l, target)
	if got := segmentBases(t, dir); !slices.Equal(got, bases[:2]) {
		t.Fatalf("segment files %v after truncating to %d, want %v", got, target, bases[:2])
	}
	if got := l.Info().Segments; got != 2 {
		t.Fatalf("%d segments, want 2", got)
	}
	checkRecords(t, l, 0, int(target))
	trAppendNew(t, l, int(target), 300) // rotates again, through offsets the dropped segments held
	trCheckNew(t, l, int(target), int(target)+300)

	l.Close()
	l = openTestLog(t, dir, testOptions())
	checkRecords(t, l, 0, int(target))
	trCheckNew(t, l, int(target), int(target)+300)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestTruncateToASegmentBoundaryLeavesAnEmptyActiveSegment(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, testOptions())
	plAppend(t, l, 0, 400)
	bases := trBases(l)
	target := bases[2]
	trTruncate(t, l, target)
	if got := segmentBases(t, dir); !slices.Equal(got, bases[:3]) {
		t.Fatalf("segment files %v after truncating to %d, want %v", got, target, bases[:3])
	}
	info := l.Info()
	if info.Segments != 3 || info.LastTimestamp != plTimestamp(int(target)-1) {
		t.Fatalf("info %+v: want 3 segments, the last timestamp that of record %d", info, target-1)
	}
	checkRecords(t, l, 0, int(target))

	l.Close()
	l = openTestLog(t, dir, testOptions())
	if l.EndOffset() != target || l.Info().Segments != 3 {
		t.Fatalf("end offset %d, %d segments after reopening; want %d, 3", l.EndOffset(), l.Info().Segments, target)
	}
	trAppendNew(t, l, int(target), 3)
	trCheckNew(t, l, int(target), int(target)+3)
}

func TestTruncateToFirstOffsetEmptiesTheLogAndKeepsItsPlace(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.Retention = Retention{MaxMessages: 100}
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 400)
	first := l.FirstOffset()
	if first == 0 {
		t.Fatal("retention deleted nothing: the test wants a log whose first offset is above 0")
	}
	trTruncate(t, l, first)
	info := l.Info()
	if info.FirstOffset != first || info.EndOffset != first || info.Segments != 1 || info.Bytes != 0 {
		t.Fatalf("info %+v after truncating to the first offset %d: want an empty log there", info, first)
	}
	if got := segmentBases(t, dir); !slices.Equal(got, []uint64{first}) {
		t.Fatalf("segment files %v, want one at %d", got, first)
	}

	l.Close()
	l = openTestLog(t, dir, opts)
	if l.FirstOffset() != first || l.EndOffset() != first {
		t.Fatalf("first %d end %d after reopening, want %d %d", l.FirstOffset(), l.EndOffset(), first, first)
	}
	trAppendNew(t, l, int(first), 2)
	trCheckNew(t, l, int(first), int(first)+2)
}

func TestTruncateToBelowTheFirstOffsetIsAnErrorAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.Retention = Retention{MaxMessages: 100}
	l := openTestLog(t, dir, opts)
	appendN(t, l, 0, 400)
	first, end, bases := l.FirstOffset(), l.EndOffset(), trBases(l)
	for _, offset := range []uint64{first - 1, 0} {
		dropped, err := l.TruncateTo(offset)
		if !errors.Is(err, ErrTruncateBelowFirst) || dropped != 0 {
			t.Fatalf("TruncateTo(%d) below the first offset %d: %d dropped, %v; want ErrTruncateBelowFirst", offset, first, dropped, err)
		}
	}
	if l.FirstOffset() != first || l.EndOffset() != end || !slices.Equal(trBases(l), bases) || l.Err() != nil {
		t.Fatalf("the log changed: first %d end %d segments %v, err %v", l.FirstOffset(), l.EndOffset(), trBases(l), l.Err())
	}
	trNoTruncationFiles(t, dir)
	checkRecords(t, l, int(first), int(end))
	appendN(t, l, int(end), 1)
}

func TestTruncateToAtOrPastTheEndDropsNothing(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, testOptions())
	appendN(t, l, 0, 50)
	for _, offset := range []uint64{50, 51, math.MaxUint64} {
		if dropped, err := l.TruncateTo(offset); err != nil || dropped != 0 {
			t.Fatalf("TruncateTo(%d) on a log ending at 50: %d dropped, %v", offset, dropped, err)
		}
	}
	if l.EndOffset() != 50 {
		t.Fatalf("end offset %d", l.EndOffset())
	}
	trNoTruncationFiles(t, dir)
	checkRecords(t, l, 0, 50)
	l.Close()
	if _, err := l.TruncateTo(10); !errors.Is(err, ErrClosed) {
		t.Fatalf("TruncateTo on a closed log: %v, want ErrClosed", err)
	}
}

// A replica truncates, then appends its leader's records, whose
// timestamps may be below those of the records it dropped: the
// truncation takes the log's last timestamp back to the record before it.
func TestTruncateToTakesTheLastTimestampBack(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	plAppend(t, l, 0, 400)
	bases := trBases(l)
	for _, target := range []uint64{bases[3] + 5, bases[2], bases[1] - 1, 0} {
		trTruncate(t, l, target)
		before := int64(0)
		if target > 0 {
			before = plTimestamp(int(target) - 1)
			if _, err := l.AppendAt(target, []Entry{{Timestamp: before - 1, Data: []byte("x")}}); !errors.Is(err, ErrTimestampOrder) {
				t.Fatalf("after truncating to %d, a copy older than record %d: %v, want ErrTimestampOrder", target, target-1, err)
			}
		}
		// Below the timestamp of the record that was at target.
		entries := []Entry{{Timestamp: before + 1, Data: trNewData(int(target))}}
		if n, err := l.AppendAt(target, entries); n != 1 || err != nil {
			t.Fatalf("after truncating to %d, AppendAt at timestamp %d: %d, %v", target, before+1, n, err)
		}
		trCheckNew(t, l, int(target), int(target)+1)
	}
}

func TestTruncateToThenAppendGivesTheSameOffsetsWithNewData(t *testing.T) {
	forEachSyncPolicy(t, func(t *testing.T, dir string, opts Options) {
		l := openTestLog(t, dir, opts)
		appendN(t, l, 0, 400)
		trTruncate(t, l, 350)
		trAppendNew(t, l, 350, 30)
		trTruncate(t, l, 120) // drops old and new records, across segments
		trAppendNew(t, l, 120, 180)
		if err := l.WaitDurable(context.Background(), 299); err != nil {
			t.Fatal(err)
		}
		checkRecords(t, l, 0, 120)
		trCheckNew(t, l, 120, 300)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		trNoTruncationFiles(t, dir)
		l = openTestLog(t, dir, opts)
		if l.EndOffset() != 300 {
			t.Fatalf("end offset %d after reopening, want 300", l.EndOffset())
		}
		checkRecords(t, l, 0, 120)
		trCheckNew(t, l, 120, 300)
	})
}

func TestStoreTruncateTo(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s := openTestStore(t, dir, opts)
	const subject = "replica.subject"
	for i := 0; i < 300; i++ {
		if _, _, err := storeAppend(s, subject, 0, nil, storeData(subject, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.TruncateTo("no.such.subject", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TruncateTo of a subject with no log: %v, want ErrNotFound", err)
	}
	if dropped, err := s.TruncateTo(subject, 100); err != nil || dropped != 200 {
		t.Fatalf("TruncateTo(100): %d dropped, %v", dropped, err)
	}
	if n, err := s.AppendAt(subject, 100, []Entry{{Timestamp: time.Now().UnixNano(), Data: []byte("from the leader")}}); n != 1 || err != nil {
		t.Fatalf("AppendAt(100) after the truncation: %d, %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, opts)
	err := s.View(subject, func(l *Log) error {
		records, err := l.Read(99, 10)
		switch {
		case err != nil:
			return err
		case len(records) != 2 || !bytes.Equal(records[0].Data, storeData(subject, 99)) || string(records[1].Data) != "from the leader":
			return fmt.Errorf("records from 99: %v", records)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dropped, err := s.TruncateTo(subject, 0); err != nil || dropped != 101 {
		t.Fatalf("TruncateTo(0): %d dropped, %v", dropped, err)
	}
	if !s.Has(subject) {
		t.Fatal("a subject truncated to its first offset lost its log")
	}
}

// ---- readers and waiters ----

// A reader in the middle of a record that a truncation drops keeps
// reading what it started on from the old segment's mapping, while the
// truncation goes ahead without waiting for it and new records take the
// dropped offsets; its Scan ends where that segment ends, with records of
// the log before the truncation only.
func TestTruncateToLeavesReadersTheRecordsTheyHold(t *testing.T) {
	for _, where := range []string{"newest segment", "sealed segment"} {
		t.Run(where, func(t *testing.T) {
			l := openTestLog(t, t.TempDir(), testOptions())
			appendN(t, l, 0, 400)
			bases := trBases(l)
			target, scanEnd := bases[len(bases)-1]+3, uint64(400)
			if where == "sealed segment" {
				target, scanEnd = bases[1]+3, bases[2]
			}
			holding, truncated, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var seen []uint64
			var held RecordView
			var next uint64
			var scanErr, dataErr error
			go func() {
				defer close(done)
				next, scanErr = l.Scan(target, func(v RecordView) bool {
					if v.Offset == target {
						held = v
						close(holding)
						<-truncated
					}
					if !bytes.Equal(v.Data, payload(int(v.Offset))) {
						dataErr = fmt.Errorf("record %d changed under the reader: %q", v.Offset, v.Data)
						return false
					}
					seen = append(seen, v.Offset)
					return true
				})
			}()
			<-holding
			trTruncate(t, l, target) // does not wait for the reader
			trAppendNew(t, l, int(target), 200)
			if !bytes.Equal(held.Data, payload(int(target))) {
				t.Fatalf("the record the reader holds changed: %q", held.Data)
			}
			close(truncated)
			<-done
			if err := errors.Join(scanErr, dataErr); err != nil {
				t.Fatal(err)
			}
			if next != scanEnd || len(seen) != int(scanEnd-target) || seen[0] != target || seen[len(seen)-1] != scanEnd-1 {
				t.Fatalf("the reader read %d records from %d and stopped at %d; want %d..%d, the old segment's", len(seen), target, next, target, scanEnd-1)
			}
			trCheckNew(t, l, int(target), int(target)+200)
		})
	}
}

// A Scan that loaded the end offset before a truncation published and
// finds the segment there holding fewer records stops, instead of waiting
// (spinning) for records up to the old end.
func TestScanStopsWhereATruncationCutItsSegment(t *testing.T) {
	l := openTestLog(t, t.TempDir(), testOptions())
	appendN(t, l, 0, 100)
	trTruncate(t, l, 60)
	seg, err := l.acquireSegment(60, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.release()
	next := uint64(60)
	done := make(chan struct{})
	var more bool
	go func() {
		defer close(done)
		more, err = scanSegment(seg, &next, 100, func(RecordView) bool { return true })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("scanSegment did not return")
	}
	if more || err != nil || next != 60 {
		t.Fatalf("scanSegment past a truncation: more %v, next %d, %v; want to stop at 60", more, next, err)
	}
}

// trChainData is the data of the record at offset in generation gen, the
// record before it in its log (offset-1) being of generation prev: the
// three numbers, then size bytes that follow from them. A reader checks a
// record alone, and that it follows the record before it: records read
// in one go that come from the logs before and after a truncation do not
// chain.
func trChainData(offset, gen, prev uint64, size int) []byte {
	data := make([]byte, 24+size, 24+size+8)
	binary.LittleEndian.PutUint64(data, offset)
	binary.LittleEndian.PutUint64(data[8:], gen)
	binary.LittleEndian.PutUint64(data[16:], prev)
	state := crashMix(offset ^ gen<<40 ^ prev<<20)
	for i := 24; i < len(data); i += 8 {
		state = crashMix(state)
		binary.LittleEndian.PutUint64(data[i:i+8], state)
	}
	return data[:24+size]
}

// trParseChain checks data made by trChainData and returns its numbers.
func trParseChain(data []byte) (offset, gen, prev uint64, ok bool) {
	if len(data) < 24 {
		return 0, 0, 0, false
	}
	offset, gen, prev = binary.LittleEndian.Uint64(data), binary.LittleEndian.Uint64(data[8:]), binary.LittleEndian.Uint64(data[16:])
	return offset, gen, prev, bytes.Equal(data, trChainData(offset, gen, prev, len(data)-24))
}

// trChainSize is the data size of the record at offset in generation
// gen: mostly small, one in 40 up to large.
func trChainSize(offset, gen uint64, large int) int {
	r := crashMix(offset*0x9e37 ^ gen)
	if r%40 == 0 {
		return int(r>>8) % large
	}
	return int(r>>8) % 300
}

// trChainWriter appends chained records to a log and truncates it,
// remembering the generation of every record it holds.
type trChainWriter struct {
	l     *Log
	gen   uint64
	gens  []uint64 // generation of the record at each offset, from 0
	large int
}

func (w *trChainWriter) append(t testing.TB, n int) {
	t.Helper()
	for range n {
		offset := w.l.EndOffset()
		var prev uint64
		if offset > 0 {
			prev = w.gens[offset-1]
		}
		data := trChainData(offset, w.gen, prev, trChainSize(offset, w.gen, w.large))
		if got, _, err := w.l.Append(0, nil, data); err != nil || got != offset {
			t.Errorf("append at %d: offset %d, %v", offset, got, err)
			return
		}
		w.gens = append(w.gens[:offset], w.gen)
	}
}

// truncate truncates to a target picked with rng (pick).
func (w *trChainWriter) truncate(t testing.TB, rng *rand.Rand) uint64 {
	t.Helper()
	end := w.l.EndOffset()
	target := w.pick(rng)
	if target >= end {
		return end
	}
	dropped, err := w.l.TruncateTo(target)
	if err != nil || dropped != end-target {
		t.Errorf("TruncateTo(%d) of a log ending at %d: %d dropped, %v", target, end, dropped, err)
	}
	w.truncated(target)
	return target
}

// truncated follows a truncation to target.
func (w *trChainWriter) truncated(target uint64) {
	w.gens = w.gens[:target]
	w.gen++
}

// pick is a target for a truncation: mostly a few records back,
// sometimes the start of one of the newest segments or the first offset;
// the end offset for an empty log.
func (w *trChainWriter) pick(rng *rand.Rand) uint64 {
	end := w.l.EndOffset()
	first := w.l.FirstOffset()
	if end == first {
		return end
	}
	var target uint64
	switch r := rng.IntN(30); {
	case r == 0:
		target = first
	case r < 6 && len(trBases(w.l)) > 1: // the start of one of the newest segments
		bases := trBases(w.l)
		target = bases[len(bases)-1-rng.IntN(min(2, len(bases)-1))]
	default:
		target = end - 1 - min(end-first-1, rng.Uint64N(40))
	}
	return target
}

// trCheckChain checks records read in one go: each alone, and each after
// the first against the one before it.
func trCheckChain(records []RecordView) error {
	var lastGen uint64
	for i, v := range records {
		offset, gen, prev, ok := trParseChain(v.Data)
		switch {
		case !ok || offset != v.Offset:
			return fmt.Errorf("record %d holds data that is not its own (offset %d, valid %v)", v.Offset, offset, ok)
		case i > 0 && v.Offset != records[i-1].Offset+1:
			return fmt.Errorf("record %d after record %d", v.Offset, records[i-1].Offset)
		case i > 0 && prev != lastGen:
			return fmt.Errorf("record %d (generation %d) follows a record of generation %d, but record %d read before it is of generation %d: two logs mixed",
				v.Offset, gen, prev, v.Offset-1, lastGen)
		}
		lastGen = gen
	}
	return nil
}

// Readers scan while a writer appends and truncates: no Scan hangs, no
// record read is damaged, and the records of one Scan all come from one
// log, before or after each truncation, never both.
func TestTruncateToConcurrentReadersEachScanSeesOneHistory(t *testing.T) {
	cycles := 120
	if storeRaceEnabled {
		cycles = 60
	}
	l := openTestLog(t, t.TempDir(), testOptions())
	w := &trChainWriter{l: l, gen: 1, large: 8 << 10}
	w.append(t, 200)
	var stop atomic.Bool
	var scans, read, cut atomic.Int64
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			for !stop.Load() {
				first, end := l.FirstOffset(), l.EndOffset()
				if end <= first {
					runtime.Gosched()
					continue
				}
				from := first + rng.Uint64N(end-first)
				var records []RecordView
				var copies [][]byte
				limit := 1 + rng.IntN(400)
				next, err := l.Scan(from, func(v RecordView) bool {
					copies = append(copies, slices.Clone(v.Data))
					v.Data = copies[len(copies)-1]
					records = append(records, v)
					return len(records) < limit
				})
				if err != nil && !errors.Is(err, ErrOutOfRange) {
					t.Errorf("scan from %d: %v", from, err)
					return
				}
				if err := trCheckChain(records); err != nil {
					t.Errorf("scan from %d: %v", from, err)
					return
				}
				if err == nil && next < end && len(records) < limit {
					cut.Add(1)
				}
				scans.Add(1)
				read.Add(int64(len(records)))
			}
		}()
	}
	rng := rand.New(rand.NewPCG(42, 42))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range cycles {
			w.append(t, 20+rng.IntN(60))
			w.truncate(t, rng)
			if t.Failed() {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Error("the writer did not finish: a truncation waits for readers?")
	}
	stop.Store(true)
	wg.Wait()
	<-done
	t.Logf("%d cycles: %d scans read %d records, %d stopped early by a truncation", cycles, scans.Load(), read.Load(), cut.Load())
}

// A sync that the syncer started before a truncation ends after it: it
// must not raise the durable offset to the end it was syncing, which the
// truncation took back, and past records appended since at those offsets.
func TestTruncateToIsNotUndoneByASyncInFlight(t *testing.T) {
	var gate atomic.Pointer[chan struct{}]
	blocked := make(chan string, 4)
	opts := testOptions()
	opts.faults = &faultHooks{sync: func(path string) error {
		if filepath.Ext(path) == ".log" {
			if ch := gate.Swap(nil); ch != nil {
				blocked <- path
				select { // bounded, so that a failure does not hang Close
				case <-*ch:
				case <-time.After(20 * time.Second):
				}
			}
		}
		return nil
	}}
	l := openTestLog(t, t.TempDir(), opts)
	appendN(t, l, 0, 40)
	if err := l.WaitDurable(context.Background(), 39); err != nil {
		t.Fatal(err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-blocked:
		case <-time.After(10 * time.Second):
			t.Fatalf("no sync %s", what)
		}
	}
	first := make(chan struct{})
	gate.Store(&first)
	var entries []Entry
	for i := 40; i < 60; i++ {
		entries = append(entries, Entry{Headers: headersFor(i), Data: payload(i)})
	}
	if _, n, err := l.AppendBatch(entries); n != 20 || err != nil {
		t.Fatal(n, err)
	}
	l.RequestSync()
	wait("of records 40..59 started")

	trTruncate(t, l, 50) // its own sync passes the gate, which is spent
	trAppendNew(t, l, 50, 3)
	second := make(chan struct{})
	gate.Store(&second)
	close(first) // the sync of 40..59 returns
	l.RequestSync()
	wait("after the first one")
	// The first sync is over; the second, of the records appended after
	// the truncation, has not returned.
	if durable, end := l.DurableOffset(), l.EndOffset(); durable != 50 || end != 53 {
		t.Fatalf("durable offset %d, end offset %d: want 50 and 53 (a sync of the dropped records confirms nothing)", durable, end)
	}
	close(second)
	if err := l.WaitDurable(context.Background(), 52); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, l, 0, 50)
	trCheckNew(t, l, 50, 53)
}

func TestTruncateToWakesWaitersAndMovesTheirBounds(t *testing.T) {
	opts := testOptions()
	opts.Sync = SyncInterval
	opts.SyncInterval = time.Hour // nothing durable but by Sync and TruncateTo
	l := openTestLog(t, t.TempDir(), opts)
	appendN(t, l, 0, 100)
	waited := make(chan error, 1)
	go func() { waited <- l.WaitDurable(context.Background(), 70) }()
	time.Sleep(10 * time.Millisecond)
	trTruncate(t, l, 80) // makes 0..79 durable
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitDurable(70) across a truncation to 80: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter for a kept record was not woken by the truncation")
	}
	var rangeErr *RangeError
	if err := l.WaitDurable(context.Background(), 85); !errors.As(err, &rangeErr) || rangeErr.End != 80 {
		t.Fatalf("WaitDurable(85) after truncating to 80: %v, want a *RangeError ending at 80", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if l.WaitFor(ctx, 80) {
		t.Fatal("WaitFor(80) found a record at the new end offset")
	}
	trAppendNew(t, l, 80, 1)
	if !l.WaitFor(context.Background(), 80) {
		t.Fatal("WaitFor(80) after an append there")
	}
}

// ---- failures ----

// A truncation that fails before its intent is on disk changes nothing:
// the log serves and takes records as before, and leaves no file behind.
func TestTruncateToThatFailsBeforeItsIntentChangesNothing(t *testing.T) {
	for _, c := range []struct {
		name   string
		faults func(fail *atomic.Bool) *faultHooks
		is     error
	}{
		{"no space for the copy", func(fail *atomic.Bool) *faultHooks {
			return &faultHooks{preallocate: func(f *os.File, _, _ int64) error {
				if fail.Load() && filepath.Base(f.Name()) == truncateLogName {
					return syscall.ENOSPC
				}
				return nil
			}}
		}, ErrNoSpace},
		{"sync of the copy", func(fail *atomic.Bool) *faultHooks {
			return &faultHooks{sync: func(path string) error {
				if fail.Load() && filepath.Base(path) == truncateLogName {
					return syscall.EIO
				}
				return nil
			}}
		}, syscall.EIO},
		{"sync of the intent", func(fail *atomic.Bool) *faultHooks {
			return &faultHooks{sync: func(path string) error {
				if fail.Load() && filepath.Base(path) == truncateTempName {
					return syscall.EIO
				}
				return nil
			}}
		}, syscall.EIO},
		{"rename of the intent", func(fail *atomic.Bool) *faultHooks {
			return &faultHooks{path: func(op, path string) error {
				if fail.Load() && op == "rename" && filepath.Base(path) == truncateTempName {
					return syscall.EIO
				}
				return nil
			}}
		}, syscall.EIO},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fail atomic.Bool
			dir := t.TempDir()
			opts := testOptions()
			opts.faults = c.faults(&fail)
			l := openTestLog(t, dir, opts)
			appendN(t, l, 0, 300)
			bases := trBases(l)
			fail.Store(true)
			dropped, err := l.TruncateTo(bases[1] + 2)
			fail.Store(false)
			if !errors.Is(err, c.is) || dropped != 0 {
				t.Fatalf("TruncateTo: %d dropped, %v; want %v", dropped, err, c.is)
			}
			if l.EndOffset() != 300 || l.Err() != nil || !slices.Equal(trBases(l), bases) {
				t.Fatalf("after the failure: end %d, segments %v, err %v", l.EndOffset(), trBases(l), l.Err())
			}
			trNoTruncationFiles(t, dir)
			if got := segmentBases(t, dir); !slices.Equal(got, bases) {
				t.Fatalf("segment files %v, want %v", got, bases)
			}
			checkRecords(t, l, 0, 300)
			appendN(t, l, 300, 1)
			trTruncate(t, l, bases[1]+2) // and it can be done now
			checkRecords(t, l, 0, int(bases[1])+2)
		})
	}
}

// A truncation that fails once its intent is on disk is decided: the log
// refuses appends, as after a failed sync, still serves what it held, and
// the next open finishes the truncation.
func TestTruncateToCutShortRefusesAppendsAndTheNextOpenFinishesIt(t *testing.T) {
	for _, c := range []struct {
		name string
		fail func(op, name string, bases []uint64) bool
	}{
		{"removing the newest dropped segment", func(op, name string, bases []uint64) bool {
			return op == "remove" && name == segmentFileName(bases[len(bases)-1], ".log")
		}},
		{"removing an index", func(op, name string, bases []uint64) bool {
			return op == "remove" && name == segmentFileName(bases[2], ".idx")
		}},
		{"naming the new index", func(op, name string, _ []uint64) bool {
			return op == "rename" && name == truncateIndexName
		}},
		{"naming the new segment", func(op, name string, _ []uint64) bool {
			return op == "rename" && name == truncateLogName
		}},
		{"removing the intent", func(op, name string, _ []uint64) bool {
			return op == "remove" && name == truncateIntentName
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions()
			var bases atomic.Pointer[[]uint64]
			opts.faults = failPathAt(&bases, c.fail)
			l, err := OpenLog(dir, "test.subject", opts)
			if err != nil {
				t.Fatal(err)
			}
			plAppend(t, l, 0, 400)
			b := trBases(l)
			target := b[1] + 2
			bases.Store(&b)
			dropped, err := l.TruncateTo(target)
			if !errors.Is(err, ErrSyncFailed) || dropped != 0 {
				t.Fatalf("TruncateTo: %d dropped, %v; want ErrSyncFailed", dropped, err)
			}
			if _, _, err := l.Append(0, nil, []byte("x")); !errors.Is(err, ErrSyncFailed) {
				t.Fatalf("append after a truncation cut short: %v, want ErrSyncFailed", err)
			}
			if _, err := l.TruncateTo(target); !errors.Is(err, ErrSyncFailed) {
				t.Fatalf("TruncateTo again: %v, want ErrSyncFailed (the next open finishes it)", err)
			}
			checkRecords(t, l, 0, 400) // what it held, from the mappings
			l.Close()

			opts.faults = nil
			l = openTestLog(t, dir, opts)
			if l.EndOffset() != target || l.Err() != nil {
				t.Fatalf("reopened: end offset %d, %v; want %d", l.EndOffset(), l.Err(), target)
			}
			checkRecords(t, l, 0, int(target))
			trNoTruncationFiles(t, dir)
			if got := segmentBases(t, dir); !slices.Equal(got, b[:2]) {
				t.Fatalf("segment files %v, want %v", got, b[:2])
			}
			trAppendNew(t, l, int(target), 2)
		})
	}
}

// ---- interrupted: the states a kill can leave ----

// trStep is the log directory as it was when TruncateTo reached one of
// the file system calls the fault hooks see (or returned).
type trStep struct {
	call  string
	files map[string][]byte
}

// trRecordSteps truncates the log in dir, closed, to target, with hooks
// that take a snapshot of dir at each fdatasync, rename and remove. A
// kill (SIGKILL) at that moment leaves what the snapshot holds: the page
// cache, which the mapping writes to, outlives the process.
func trRecordSteps(t *testing.T, dir string, target uint64) []trStep {
	t.Helper()
	var steps []trStep
	var armed atomic.Bool
	snap := func(call string) {
		if armed.Load() {
			steps = append(steps, trStep{call, plSnapshot(t, dir)})
		}
	}
	opts := testOptions()
	opts.faults = &faultHooks{
		sync: func(path string) error { snap("sync " + filepath.Base(path)); return nil },
		path: func(op, path string) error {
			if op == "rename" || op == "remove" {
				snap(op + " " + filepath.Base(path))
			}
			return nil
		},
	}
	l, err := OpenLog(dir, plSubject, opts)
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	trTruncate(t, l, target)
	armed.Store(false)
	steps = append(steps, trStep{"returned", plSnapshot(t, dir)})
	plClose(t, l)
	return steps
}

// trExpectBefore checks that the files of dir, a log of records 0..n-1
// left by an interrupted truncation that never wrote its intent, recover
// to the log as it was: every file as in before, the truncation's gone.
func trExpectBefore(t *testing.T, dir string, n int, before map[string][]byte) {
	t.Helper()
	l := plMustOpen(t, dir)
	plCheckRecords(t, l, n)
	plClose(t, l)
	plSameFiles(t, "recovered", plSnapshot(t, dir), before)
}

// trExpectAfter checks that the files of dir recover to the log
// truncated to target, stably, and that it takes appends there.
func trExpectAfter(t *testing.T, dir string, target int) {
	t.Helper()
	l := plMustOpen(t, dir)
	plCheckRecords(t, l, target)
	plClose(t, l)
	trNoTruncationFiles(t, dir)
	if bases := segmentBases(t, dir); len(bases) == 0 || bases[len(bases)-1] > uint64(target) {
		t.Fatalf("segment files %v after recovering a truncation to %d", bases, target)
	}
	plExpectRecovered(t, dir, target)
}

func trWriteFiles(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		plWrite(t, filepath.Join(dir, name), b)
	}
	return dir
}

// trTargets are the truncations the interruption tests make of a log of
// n records as trBuild writes it.
func trTargets(t *testing.T, dir string) map[string]uint64 {
	bases := segmentBases(t, dir)
	if len(bases) < 5 {
		t.Fatalf("%d segments: the test wants 5 or more", len(bases))
	}
	return map[string]uint64{
		"inside the newest segment": bases[len(bases)-1] + 2,
		"inside a sealed segment":   bases[len(bases)-3] + 7,
		"at a segment boundary":     bases[2],
		"to the first offset":       0,
	}
}

// A kill at any of TruncateTo's file system calls leaves a log that
// recovers to the log before the truncation when its intent had not been
// written, and to the log after it once it had.
func TestTruncateToInterruptedAtEveryStepEndsBeforeOrAfter(t *testing.T) {
	const n = 350
	built := trBuild(t, n)
	before := plSnapshot(t, built)
	for name, target := range trTargets(t, built) {
		t.Run(name, func(t *testing.T) {
			steps := trRecordSteps(t, plCopyDir(t, built), target)
			var calls []string
			decidedAt := -1
			for i, step := range steps {
				calls = append(calls, step.call)
				if _, ok := step.files[truncateIntentName]; ok && decidedAt < 0 {
					decidedAt = i
				}
			}
			t.Logf("calls: %s", strings.Join(calls, ", "))
			if decidedAt < 1 || !strings.HasPrefix(steps[decidedAt-1].call, "rename "+truncateTempName) {
				t.Fatalf("the intent appears at call %d, want right after the rename of %s", decidedAt, truncateTempName)
			}
			for i, step := range steps {
				t.Run(fmt.Sprintf("%02d %s", i, step.call), func(t *testing.T) {
					dir := trWriteFiles(t, step.files)
					if i < decidedAt {
						trExpectBefore(t, dir, n, before)
					} else {
						trExpectAfter(t, dir, int(target))
					}
				})
			}
		})
	}
}

// ---- power loss: what a power cut during a truncation can leave ----

// trPowerCut is a state a power cut can leave: the files of a log, and
// the log the test expects them to recover to (records 0..want-1).
type trPowerCut struct {
	name  string
	files map[string][]byte
	want  int
}

// TestPowerLossDuringTruncateToEndsBeforeOrAfter: a power cut loses what
// was not synced, in any order. Before its intent is durable a truncation
// has changed nothing that was synced, so the log recovers as it was;
// once the intent is durable, any of the deletions and renames that
// follow it may have reached the disk or not, or recovery's own cut may
// have been interrupted, and the log recovers truncated.
func TestPowerLossDuringTruncateToEndsBeforeOrAfter(t *testing.T) {
	const n = 350
	built := trBuild(t, n)
	before := plSnapshot(t, built)
	for name, target := range trTargets(t, built) {
		if name == "inside the newest segment" {
			continue // the sealed case covers it, with more
		}
		t.Run(name, func(t *testing.T) {
			steps := trRecordSteps(t, plCopyDir(t, built), target)
			var intent, copyLog, copyIdx []byte
			for _, step := range steps {
				if b, ok := step.files[truncateTempName]; ok && step.call == "rename "+truncateTempName {
					intent, copyLog, copyIdx = b, step.files[truncateLogName], step.files[truncateIndexName]
				}
			}
			if got, err := decodeTruncateIntent(intent); err != nil || got != target {
				t.Fatalf("intent %x: %d, %v", intent, got, err)
			}
			after := steps[len(steps)-1].files
			bases := segmentBases(t, built)
			k := sort.Search(len(bases), func(i int) bool { return bases[i] > target }) - 1
			with := func(extra map[string][]byte) map[string][]byte {
				files := map[string][]byte{}
				for name, b := range before {
					files[name] = slices.Clone(b)
				}
				for name, b := range extra {
					files[name] = b
				}
				return files
			}
			cuts := []trPowerCut{
				{"intent not synced: zeros", with(map[string][]byte{truncateTempName: make([]byte, len(intent))}), n},
				{"intent not synced: half of it", with(map[string][]byte{truncateTempName: intent[:16]}), n},
				{"intent not synced: garbage", with(map[string][]byte{truncateTempName: plGarbage(71, len(intent))}), n},
				{"copy not synced", with(map[string][]byte{truncateLogName: plGarbage(72, len(copyLog)), truncateIndexName: make([]byte, len(copyIdx))}), n},
				{"copy synced, intent not renamed", with(map[string][]byte{truncateLogName: copyLog, truncateIndexName: copyIdx, truncateTempName: intent}), n},
			}
			// The intent is durable; each deletion and rename after it
			// reached the disk or not.
			type op struct{ remove, from, to string }
			var ops []op
			for _, base := range slices.Backward(bases[k+1:]) {
				ops = append(ops, op{remove: segmentFileName(base, ".log")}, op{remove: segmentFileName(base, ".idx")})
			}
			ops = append(ops, op{from: truncateIndexName, to: segmentFileName(bases[k], ".idx")}, op{from: truncateLogName, to: segmentFileName(bases[k], ".log")})
			decided := map[string][]byte{truncateIntentName: intent, truncateLogName: copyLog, truncateIndexName: copyIdx}
			masks := []uint64{0, 1<<len(ops) - 1}
			if len(ops) <= 6 {
				masks = masks[:0]
				for m := range uint64(1) << len(ops) {
					masks = append(masks, m)
				}
			} else {
				rng := rand.New(rand.NewPCG(uint64(target), 3))
				for range 40 {
					masks = append(masks, rng.Uint64N(1<<len(ops)))
				}
			}
			for _, mask := range masks {
				files := with(decided)
				var done []string
				for i, o := range ops {
					if mask&(1<<i) == 0 {
						continue
					}
					if o.remove != "" {
						delete(files, o.remove)
						done = append(done, "-"+o.remove)
					} else {
						files[o.to] = files[o.from]
						delete(files, o.from)
						done = append(done, o.from+">"+o.to)
					}
				}
				cuts = append(cuts, trPowerCut{fmt.Sprintf("intent durable, done %v", done), files, int(target)})
			}
			// Recovery's own cut of the old segment, interrupted: newer
			// segments deleted, the tail zeroed in part, pages in any order.
			holderLog := segmentFileName(bases[k], ".log")
			holder := before[holderLog]
			records := plWalk(holder, bases[k])
			cutAt := int64(fileHeaderSize)
			if keep := target - bases[k]; keep > 0 {
				r := records[keep-1]
				cutAt = r.position + r.size
			}
			lastByte := int64(lastNonZero(holder)) + 1
			for _, part := range []struct {
				name     string
				from, to int64
			}{
				{"first half", cutAt, (cutAt + lastByte) / 2},
				{"last page", max(cutAt, lastByte-pageSize), lastByte},
			} {
				files := with(map[string][]byte{truncateIntentName: intent})
				for _, base := range bases[k+1:] {
					delete(files, segmentFileName(base, ".log"))
					delete(files, segmentFileName(base, ".idx"))
				}
				h := slices.Clone(holder)
				clear(h[part.from:part.to])
				files[holderLog] = h
				cuts = append(cuts, trPowerCut{"recovery's cut interrupted: zeroed " + part.name, files, int(target)})
			}
			// After the truncation, a record appended and not synced: a
			// torn tail of the new segment, cut as any.
			torn := trCopyFiles(after)
			var newest uint64
			for name := range torn {
				if base, ext, ok := parseSegmentName(name); ok && ext == ".log" {
					newest = max(newest, base)
				}
			}
			newestLog := segmentFileName(newest, ".log")
			endOfRecords := int64(fileHeaderSize)
			if rs := plWalk(torn[newestLog], newest); len(rs) > 0 {
				endOfRecords = rs[len(rs)-1].position + rs[len(rs)-1].size
			}
			copy(torn[newestLog][endOfRecords:], plGarbage(73, 100))
			cuts = append(cuts, trPowerCut{"after, a record appended and torn", torn, int(target)})

			for _, c := range cuts {
				t.Run(c.name, func(t *testing.T) {
					dir := trWriteFiles(t, c.files)
					if c.want == n {
						trExpectBefore(t, dir, n, before)
					} else {
						trExpectAfter(t, dir, c.want)
					}
				})
			}
		})
	}
}

// trCopyFiles is a deep copy of files.
func trCopyFiles(files map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for name, b := range files {
		out[name] = slices.Clone(b)
	}
	return out
}

// ---- the intent file ----

func trIntentSeeds() [][]byte {
	valid := func(target uint64) []byte { return encodeTruncateIntent(target) }
	badCRC := valid(2)
	badCRC[29] ^= 1
	version := valid(2)
	binary.LittleEndian.PutUint16(version[8:], formatVersion+1)
	binary.LittleEndian.PutUint32(version[28:], crc32.Checksum(version[:28], castagnoli))
	return [][]byte{
		valid(0), valid(1), valid(2), valid(fzNewestBase), valid(5), valid(fzRecords),
		valid(fzRecords + 1), valid(1 << 40), valid(math.MaxUint64),
		badCRC, version, valid(2)[:31], append(valid(2), 0), {},
		rcvHeaderOnly(logMagic, 2, fileHeaderSize), // a segment header is not an intent
	}
}

// FuzzTruncateIntent opens the template log of FuzzRecoverSegment (a
// sealed segment of records 0..2, the newest of 3..7) with an intent file
// of any content. An intent that decodes and fits the log (a target at or
// below its end) is finished: the log ends at the target, with the
// records before it as they were, and nothing of the truncation is left.
// Anything else is refused: OpenLog fails, and no file changes.
func FuzzTruncateIntent(f *testing.F) {
	for _, seed := range trIntentSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, intent []byte) {
		tpl := fzGetTemplate(t)
		files := trCopyFiles(tpl.files)
		files[truncateIntentName] = intent
		dir := trWriteFiles(t, files)
		target, decodeErr := decodeTruncateIntent(intent)
		l, err := OpenLog(dir, "fuzz", fzOptions())
		if decodeErr != nil || target > fzRecords {
			if err == nil {
				l.Close()
				t.Fatalf("an intent that does not fit (target %d, %v) was taken", target, decodeErr)
			}
			plSameFiles(t, "refused intent", plSnapshot(t, dir), files)
			return
		}
		if err != nil {
			t.Fatalf("OpenLog with an intent to truncate to %d: %v", target, err)
		}
		defer l.Close()
		if l.FirstOffset() != 0 || l.EndOffset() != target {
			t.Fatalf("first %d end %d, want 0 %d", l.FirstOffset(), l.EndOffset(), target)
		}
		records, err := l.Read(0, fzRecords+1)
		if err != nil || uint64(len(records)) != target {
			t.Fatalf("read: %d records, %v", len(records), err)
		}
		for i, r := range records {
			ts, h, data := fzRecord(i)
			if r.Offset != uint64(i) || r.Timestamp != ts || !bytes.Equal(r.Data, data) || !goldenHeadersEqual(r.Headers, h) {
				t.Fatalf("record %d: %+v", i, r)
			}
		}
		l.Close()
		trNoTruncationFiles(t, dir)
		l2, err := OpenLog(dir, "fuzz", fzOptions())
		if err != nil || l2.EndOffset() != target {
			t.Fatalf("second open: %v", err)
		}
		l2.Close()
	})
}

// failPathAt is fault hooks that fail (EIO) the file system call fail
// picks by its op and file name, given the segment bases stored in bases
// (nothing fails until they are).
func failPathAt(bases *atomic.Pointer[[]uint64], fail func(op, name string, bases []uint64) bool) *faultHooks {
	return &faultHooks{path: func(op, path string) error {
		if b := bases.Load(); b != nil && fail(op, filepath.Base(path), *b) {
			return syscall.EIO
		}
		return nil
	}}
}
