package logstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// This file is the corruption table of recovery, in the style of
// hashicorp/raft-wal's TestRecovery: each case builds a log of small
// segments, closes it, damages its files, reopens it and checks the
// outcome exactly. Torn tails at every byte boundary (power loss) are
// powerloss_test.go's subject; here each kind of damage appears once.

// rcvLogBuffer collects slog output; the syncer may log from its goroutine.
type rcvLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *rcvLogBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *rcvLogBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *rcvLogBuffer) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Reset()
}

// rcvOptions are testOptions with the log output captured.
func rcvOptions() (Options, *rcvLogBuffer) {
	buf := &rcvLogBuffer{}
	opts := testOptions()
	opts.Sync = SyncNone // Close still syncs; building the logs stays fast
	opts.Logger = slog.New(slog.NewTextHandler(buf, nil))
	return opts, buf
}

// rcvWalk returns the positions of the valid records at the start of a
// .log file (checksums only) and where they end.
func rcvWalk(b []byte) (positions []int64, end int64) {
	end = fileHeaderSize
	for end < int64(len(b)) {
		view, status, _ := decodeRecord(b[end:])
		if status != decodeOK {
			break
		}
		positions = append(positions, end)
		end += int64(view.size)
	}
	return positions, end
}

// rcvResign recomputes the checksum of the record at the start of b.
func rcvResign(b []byte) {
	length := binary.LittleEndian.Uint32(b[0:4])
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(b[8:8+length], castagnoli))
}

func rcvEdit(t testing.TB, path string, edit func(b []byte) []byte) {
	t.Helper()
	b := plRead(t, path)
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rcvFixture is a closed log of n records written by appendN.
type rcvFixture struct {
	dir   string
	n     int
	bases []uint64
}

func (fx *rcvFixture) index(i int) int {
	if i < 0 {
		i += len(fx.bases)
	}
	return i
}

// base of segment i; a negative i counts from the newest (-1).
func (fx *rcvFixture) base(i int) uint64 { return fx.bases[fx.index(i)] }

// end is the offset after the last record of segment i.
func (fx *rcvFixture) end(i int) uint64 {
	if i = fx.index(i); i+1 < len(fx.bases) {
		return fx.bases[i+1]
	}
	return uint64(fx.n)
}

func (fx *rcvFixture) name(i int, ext string) string { return segmentFileName(fx.base(i), ext) }

func (fx *rcvFixture) path(i int, ext string) string {
	return filepath.Join(fx.dir, fx.name(i, ext))
}

// records reads the .log of segment i and the positions of its records.
func (fx *rcvFixture) records(t testing.TB, i int) ([]byte, []int64, int64) {
	t.Helper()
	b := plRead(t, fx.path(i, ".log"))
	positions, end := rcvWalk(b)
	if uint64(len(positions)) != fx.end(i)-fx.base(i) {
		t.Fatalf("segment %d holds %d records, want %d", i, len(positions), fx.end(i)-fx.base(i))
	}
	return b, positions, end
}

func buildRecoveryFixture(t testing.TB, opts Options, n int) *rcvFixture {
	t.Helper()
	dir := t.TempDir()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fx := &rcvFixture{dir: dir, n: n, bases: segmentBases(t, dir)}
	if len(fx.bases) < 4 || fx.end(-1)-fx.base(-1) < 4 {
		t.Fatalf("fixture too small: segments %v for %d records", fx.bases, n)
	}
	return fx
}

// rcvWant is the outcome of opening a damaged log.
type rcvWant struct {
	first, end uint64
	corrupt    bool // OpenLog returns a *CorruptionError
	errFile    string
	errOffset  uint64
	errPos     int64    // -1: not checked
	warn       []string // substrings of the first open's log output
	changed    []string // .log files the first open may modify (torn tails)
	removed    []string // files the first open must remove
	readErrAt  int64    // >= 0: reading the log stops with a *CorruptionError at this offset
	check      func(t *testing.T, l *Log)
}

type rcvCase struct {
	name   string
	damage func(t *testing.T, fx *rcvFixture) rcvWant
}

func rcvOK(first, end uint64) rcvWant {
	return rcvWant{first: first, end: end, errPos: -1, readErrAt: -1}
}

func rcvCorrupt(end uint64, file string, offset uint64, position int64) rcvWant {
	w := rcvOK(0, end)
	w.corrupt, w.errFile, w.errOffset, w.errPos = true, file, offset, position
	return w
}

// rcvTornTail damages the newest segment from position on (edit returns the
// new bytes) and expects the records before it, the tail zeroed, and a
// warning that gives the number of bytes cut.
func rcvTornTail(t *testing.T, fx *rcvFixture, end uint64, position int64, edit func(b []byte)) rcvWant {
	path := fx.path(-1, ".log")
	original := plRead(t, path)
	damaged := slices.Clone(original)
	edit(damaged)
	cut := lastNonZero(damaged[position:]) + 1
	if cut <= 0 {
		t.Fatal("the damage left only zeros")
	}
	if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	w := rcvOK(0, end)
	w.warn = []string{`msg="logstore: cutting torn tail"`, fmt.Sprintf("position=%d bytes=%d", position, cut)}
	w.changed = []string{fx.name(-1, ".log")}
	w.check = func(t *testing.T, l *Log) {
		b := plRead(t, path)
		if !bytes.Equal(b[:position], original[:position]) {
			t.Fatal("bytes before the torn tail changed")
		}
		if i := lastNonZero(b[position:]); i >= 0 {
			t.Fatalf("byte %d after the last good record not zeroed", position+int64(i))
		}
		if len(b) != len(original) {
			t.Fatalf("file size changed from %d to %d", len(original), len(b))
		}
	}
	return w
}

// rcvBadNewest damages record k of the newest segment (which has good
// records after it) and expects corruption at it.
func rcvBadNewest(t *testing.T, fx *rcvFixture, k int, edit func(record []byte)) rcvWant {
	b, positions, _ := fx.records(t, -1)
	edit(b[positions[k]:])
	if err := os.WriteFile(fx.path(-1, ".log"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	offset := fx.base(-1) + uint64(k)
	return rcvCorrupt(offset, fx.name(-1, ".log"), offset, positions[k])
}

// rcvSealedIndex damages the index of segment 1 (sealed) and expects it
// rebuilt, byte for byte what the writer wrote, with no error.
func rcvSealedIndex(t *testing.T, fx *rcvFixture, warn bool, edit func(idx []byte, entries int) []byte) rcvWant {
	path := fx.path(1, ".idx")
	original := plRead(t, path)
	entries := int(fx.end(1) - fx.base(1))
	rebuilt := original[:fileHeaderSize+entries*indexEntrySize]
	if lastNonZero(original[len(rebuilt):]) >= 0 {
		t.Fatal("the writer's index has bytes after its entries")
	}
	if damaged := edit(slices.Clone(original), entries); damaged == nil {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	w := rcvOK(0, uint64(fx.n))
	if warn {
		w.warn = []string{`msg="logstore: rebuilding index"`, fx.name(1, ".idx")}
	}
	w.check = func(t *testing.T, l *Log) {
		if got := plRead(t, path); !bytes.Equal(got, rebuilt) {
			t.Fatalf("rebuilt index (%d bytes) differs from the one written (%d bytes)", len(got), len(rebuilt))
		}
		if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("temporary index left behind: %v", err)
		}
	}
	return w
}

func rcvEntry(idx []byte, i int) []byte {
	return idx[fileHeaderSize+i*indexEntrySize:][:indexEntrySize]
}

// rcvNewestIndex damages the index of the newest segment and expects it
// rewritten to match the log, entries after the last record zero.
func rcvNewestIndex(t *testing.T, fx *rcvFixture, edit func(idx []byte, entries int) []byte) rcvWant {
	path := fx.path(-1, ".idx")
	b, positions, _ := fx.records(t, -1)
	entries := len(positions)
	if damaged := edit(plRead(t, path), entries); damaged == nil {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	w := rcvOK(0, uint64(fx.n))
	w.check = func(t *testing.T, l *Log) {
		idx := plRead(t, path)
		if base, err := decodeFileHeader(idx, indexMagic); err != nil || base != fx.base(-1) {
			t.Fatalf("index header: %d, %v", base, err)
		}
		for i, p := range positions {
			view, _, _ := decodeRecord(b[p:])
			want := indexEntry{position: uint32(p), size: uint32(view.PayloadSize()), timestamp: view.Timestamp}
			if got := readIndexEntry(rcvEntry(idx, i)); got != want {
				t.Fatalf("entry %d: %+v, want %+v", i, got, want)
			}
		}
		if i := lastNonZero(idx[fileHeaderSize+entries*indexEntrySize:]); i >= 0 {
			t.Fatal("index has bytes after its last entry")
		}
		first := readIndexEntry(rcvEntry(idx, 0)).timestamp
		if got := offsetAt(t, l, first); got > fx.base(-1) {
			t.Fatalf("OffsetAt(first timestamp of the newest segment) = %d", got)
		}
	}
	return w
}

func rcvUnborn(t *testing.T, fx *rcvFixture, log, idx []byte) rcvWant {
	name := segmentFileName(uint64(fx.n), ".log")
	if err := os.WriteFile(filepath.Join(fx.dir, name), log, 0o600); err != nil {
		t.Fatal(err)
	}
	w := rcvOK(0, uint64(fx.n))
	w.removed = []string{name}
	if idx != nil {
		idxName := segmentFileName(uint64(fx.n), ".idx")
		if err := os.WriteFile(filepath.Join(fx.dir, idxName), idx, 0o600); err != nil {
			t.Fatal(err)
		}
		w.removed = append(w.removed, idxName)
	}
	w.warn = []string{`msg="logstore: removing segment whose creation did not complete"`, name}
	return w
}

func rcvHeaderOnly(magic [8]byte, base uint64, size int) []byte {
	b := make([]byte, size)
	encodeFileHeader(b, magic, base)
	return b
}

func rcvGarbage(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	for i := range b {
		b[i] |= 1 // never zero, so that nothing reads as an end
	}
	return b
}

var recoveryCases = []rcvCase{
	// ---- the newest segment: torn tails ----
	{"torn tail: garbage after the last record", func(t *testing.T, fx *rcvFixture) rcvWant {
		_, _, end := fx.records(t, -1)
		return rcvTornTail(t, fx, uint64(fx.n), end, func(b []byte) { copy(b[end:], rcvGarbage(1, 100)) })
	}},
	{"torn tail: last record half zeroed", func(t *testing.T, fx *rcvFixture) rcvWant {
		_, positions, end := fx.records(t, -1)
		last := positions[len(positions)-1]
		return rcvTornTail(t, fx, uint64(fx.n-1), last, func(b []byte) { clear(b[(last+end)/2 : end]) })
	}},
	{"torn tail: last record's checksum wrong", func(t *testing.T, fx *rcvFixture) rcvWant {
		_, positions, _ := fx.records(t, -1)
		last := positions[len(positions)-1]
		return rcvTornTail(t, fx, uint64(fx.n-1), last, func(b []byte) { b[last+4] ^= 0x40 })
	}},
	{"torn tail: last record's length past the file", func(t *testing.T, fx *rcvFixture) rcvWant {
		_, positions, _ := fx.records(t, -1)
		last := positions[len(positions)-1]
		return rcvTornTail(t, fx, uint64(fx.n-1), last, func(b []byte) { binary.LittleEndian.PutUint32(b[last:], 1<<30) })
	}},
	{"torn tail: garbage then a stale record of an older offset", func(t *testing.T, fx *rcvFixture) rcvWant {
		b, positions, end := fx.records(t, -1)
		stale := slices.Clone(b[positions[0]:positions[1]]) // valid, but its offset is behind
		return rcvTornTail(t, fx, uint64(fx.n), end, func(b []byte) {
			copy(b[end:], rcvGarbage(2, 40))
			copy(b[end+40:], stale)
		})
	}},

	// ---- the newest segment: a bad record with good ones after it ----
	{"newest: bad data byte then good records", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvBadNewest(t, fx, 1, func(r []byte) { r[recordHeaderSize+3] ^= 0xff })
	}},
	{"newest: zero length then good records", func(t *testing.T, fx *rcvFixture) rcvWant {
		w := rcvBadNewest(t, fx, 1, func(r []byte) { clear(r[0:4]) })
		w.check = func(t *testing.T, l *Log) {
			var ce *CorruptionError
			if err := l.Err(); !errors.As(err, &ce) || !strings.Contains(ce.Reason, "zeros where a record should be") {
				t.Fatalf("Err() = %v", err)
			}
		}
		return w
	}},
	{"newest: skipped offset then good records", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvBadNewest(t, fx, 2, func(r []byte) {
			binary.LittleEndian.PutUint64(r[8:], binary.LittleEndian.Uint64(r[8:])+5)
			rcvResign(r)
		})
	}},
	{"newest: timestamp goes back then good records", func(t *testing.T, fx *rcvFixture) rcvWant {
		b, positions, _ := fx.records(t, -1)
		ts0 := binary.LittleEndian.Uint64(b[positions[0]+16:])
		return rcvBadNewest(t, fx, 1, func(r []byte) {
			binary.LittleEndian.PutUint64(r[16:], ts0-1)
			rcvResign(r)
		})
	}},
	{"newest: first record bad", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvBadNewest(t, fx, 0, func(r []byte) { r[9] ^= 1 })
	}},

	// ---- headers of segment files ----
	{"older segment: garbage magic", func(t *testing.T, fx *rcvFixture) rcvWant {
		rcvEdit(t, fx.path(1, ".log"), func(b []byte) []byte { copy(b, "GARBAGE!"); return b })
		return rcvCorrupt(fx.base(1), fx.name(1, ".log"), fx.base(1), 0)
	}},
	{"older segment: header names another base offset", func(t *testing.T, fx *rcvFixture) rcvWant {
		rcvEdit(t, fx.path(2, ".log"), func(b []byte) []byte { encodeFileHeader(b, logMagic, fx.base(2)+1); return b })
		return rcvCorrupt(fx.base(2), fx.name(2, ".log"), fx.base(2), 0)
	}},
	{"older segment: shorter than its header", func(t *testing.T, fx *rcvFixture) rcvWant {
		rcvEdit(t, fx.path(1, ".log"), func(b []byte) []byte { return b[:20] })
		return rcvCorrupt(fx.base(1), fx.name(1, ".log"), fx.base(1), 0)
	}},
	{"newest segment: header zeroed, records after it", func(t *testing.T, fx *rcvFixture) rcvWant {
		rcvEdit(t, fx.path(-1, ".log"), func(b []byte) []byte { clear(b[:fileHeaderSize]); return b })
		return rcvCorrupt(fx.base(-1), fx.name(-1, ".log"), fx.base(-1), 0)
	}},
	{"newest segment: garbage magic", func(t *testing.T, fx *rcvFixture) rcvWant {
		rcvEdit(t, fx.path(-1, ".log"), func(b []byte) []byte { copy(b, "GARBAGE!"); return b })
		return rcvCorrupt(fx.base(-1), fx.name(-1, ".log"), fx.base(-1), 0)
	}},
	{"newest segment: header zeroed, one nonzero byte far after it", func(t *testing.T, fx *rcvFixture) rcvWant {
		// Only zeros and one byte: not an unborn segment, which is all zeros.
		rcvEdit(t, fx.path(-1, ".log"), func(b []byte) []byte { clear(b); b[len(b)-1] = 1; return b })
		return rcvCorrupt(fx.base(-1), fx.name(-1, ".log"), fx.base(-1), 0)
	}},

	// ---- sealed segments: records ----
	{"sealed: bad record in the middle is found when read", func(t *testing.T, fx *rcvFixture) rcvWant {
		b, positions, _ := fx.records(t, 1)
		b[positions[2]+recordHeaderSize+1] ^= 0xff
		if err := os.WriteFile(fx.path(1, ".log"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		w := rcvOK(0, uint64(fx.n)) // the cheap checks do not read it
		w.readErrAt = int64(fx.base(1) + 2)
		return w
	}},
	{"sealed: last record bad", func(t *testing.T, fx *rcvFixture) rcvWant {
		b, positions, _ := fx.records(t, 1)
		last := positions[len(positions)-1]
		b[last+recordHeaderSize] ^= 0xff
		if err := os.WriteFile(fx.path(1, ".log"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		w := rcvCorrupt(fx.end(1)-1, fx.name(1, ".log"), fx.end(1)-1, last)
		w.warn = []string{`msg="logstore: rebuilding index"`, "last entry: checksum"}
		return w
	}},
	{"sealed: file truncated in its last record", func(t *testing.T, fx *rcvFixture) rcvWant {
		_, positions, _ := fx.records(t, 1)
		last := positions[len(positions)-1]
		rcvEdit(t, fx.path(1, ".log"), func(b []byte) []byte { return b[:last+10] })
		return rcvCorrupt(fx.end(1)-1, fx.name(1, ".log"), fx.end(1)-1, last)
	}},
	{"sealed: garbage after its last record", func(t *testing.T, fx *rcvFixture) rcvWant {
		b, _, end := fx.records(t, 1)
		if int(end)+8 > len(b) {
			t.Fatal("no room after the last record of segment 1: pick another segment")
		}
		copy(b[end:], rcvGarbage(3, min(100, len(b)-int(end))))
		if err := os.WriteFile(fx.path(1, ".log"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		w := rcvCorrupt(fx.end(1), fx.name(1, ".log"), fx.end(1), end)
		w.warn = []string{`msg="logstore: rebuilding index"`, "records after the last entry"}
		return w
	}},

	// ---- sealed segments: the index, derived data, is rebuilt ----
	{"sealed index: missing", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, false, func([]byte, int) []byte { return nil })
	}},
	{"sealed index: empty file", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, false, func([]byte, int) []byte { return []byte{} })
	}},
	{"sealed index: shorter than its header", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { return b[:10] })
	}},
	{"sealed index: truncated in an entry", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { return b[:fileHeaderSize+5*indexEntrySize+7] })
	}},
	{"sealed index: truncated at an entry boundary", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { return b[:fileHeaderSize+5*indexEntrySize] })
	}},
	{"sealed index: garbage", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { return rcvGarbage(4, len(b)) })
	}},
	{"sealed index: header checksum", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { b[20] ^= 1; return b })
	}},
	{"sealed index: header of another segment", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { encodeFileHeader(b, indexMagic, fx.base(1)+1); return b })
	}},
	{"sealed index: last entry points past the log", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, n int) []byte {
			binary.LittleEndian.PutUint32(rcvEntry(b, n-1), 1<<20)
			return b
		})
	}},
	{"sealed index: entries out of order", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte {
			e2, e3 := slices.Clone(rcvEntry(b, 2)), slices.Clone(rcvEntry(b, 3))
			copy(rcvEntry(b, 2), e3)
			copy(rcvEntry(b, 3), e2)
			return b
		})
	}},
	{"sealed index: short, fewer entries than records", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, n int) []byte { clear(b[fileHeaderSize+(n-3)*indexEntrySize:]); return b })
	}},
	{"sealed index: an entry ahead of the log", func(t *testing.T, fx *rcvFixture) rcvWant {
		_, _, end := fx.records(t, 1)
		return rcvSealedIndex(t, fx, true, func(b []byte, n int) []byte {
			last := readIndexEntry(rcvEntry(b, n-1))
			putIndexEntry(rcvEntry(b, n), indexEntry{position: uint32(end), size: 1, timestamp: last.timestamp})
			return b
		})
	}},
	{"sealed index: last entry's timestamp wrong", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, n int) []byte {
			e := rcvEntry(b, n-1)
			binary.LittleEndian.PutUint64(e[8:], binary.LittleEndian.Uint64(e[8:])+1)
			return b
		})
	}},
	{"sealed index: a stray byte at its end", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvSealedIndex(t, fx, true, func(b []byte, _ int) []byte { b[len(b)-1] = 1; return b })
	}},

	// ---- the newest segment's index ----
	{"newest index: missing", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvNewestIndex(t, fx, func([]byte, int) []byte { return nil })
	}},
	{"newest index: garbage", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvNewestIndex(t, fx, func(b []byte, _ int) []byte { return rcvGarbage(5, len(b)) })
	}},
	{"newest index: entries ahead of the log", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvNewestIndex(t, fx, func(b []byte, n int) []byte {
			for i := n; i < n+5; i++ {
				putIndexEntry(rcvEntry(b, i), indexEntry{position: uint32(4000 + i), size: 3, timestamp: 1 << 62})
			}
			return b
		})
	}},
	{"newest index: truncated to 100 bytes", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvNewestIndex(t, fx, func(b []byte, _ int) []byte { return b[:100] })
	}},

	// ---- missing segments ----
	{"gap: a middle segment deleted", func(t *testing.T, fx *rcvFixture) rcvWant {
		for _, ext := range []string{".log", ".idx"} {
			if err := os.Remove(fx.path(1, ext)); err != nil {
				t.Fatal(err)
			}
		}
		return rcvCorrupt(fx.base(1), fx.name(2, ".log"), fx.base(1), 0)
	}},
	{"gap: the segment before the newest deleted", func(t *testing.T, fx *rcvFixture) rcvWant {
		for _, ext := range []string{".log", ".idx"} {
			if err := os.Remove(fx.path(-2, ext)); err != nil {
				t.Fatal(err)
			}
		}
		return rcvCorrupt(fx.base(-2), fx.name(-1, ".log"), fx.base(-2), 0)
	}},
	{"gap: oldest segments deleted (retention interrupted) is no gap", func(t *testing.T, fx *rcvFixture) rcvWant {
		for _, ext := range []string{".log", ".idx"} {
			if err := os.Remove(fx.path(0, ext)); err != nil {
				t.Fatal(err)
			}
		}
		return rcvOK(fx.base(1), uint64(fx.n))
	}},
	{"index without its segment is removed", func(t *testing.T, fx *rcvFixture) rcvWant {
		name := segmentFileName(uint64(fx.n)+1000, ".idx")
		if err := os.WriteFile(filepath.Join(fx.dir, name), rcvHeaderOnly(indexMagic, uint64(fx.n)+1000, pageSize), 0o600); err != nil {
			t.Fatal(err)
		}
		w := rcvOK(0, uint64(fx.n))
		w.removed = []string{name}
		w.warn = []string{`msg="logstore: removing index without a segment"`, name}
		return w
	}},

	// ---- a rotation that crashed before the new segment's header ----
	{"unborn newest segment: all zeros, index all zeros", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvUnborn(t, fx, make([]byte, 4096), make([]byte, 4096))
	}},
	{"unborn newest segment: empty file, no index", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvUnborn(t, fx, []byte{}, nil)
	}},
	{"unborn newest segment: zeros, index with its header", func(t *testing.T, fx *rcvFixture) rcvWant {
		return rcvUnborn(t, fx, make([]byte, 4096), rcvHeaderOnly(indexMagic, uint64(fx.n), 4096))
	}},
	{"empty newest segment with a valid header is kept", func(t *testing.T, fx *rcvFixture) rcvWant {
		name := segmentFileName(uint64(fx.n), ".log")
		if err := os.WriteFile(filepath.Join(fx.dir, name), rcvHeaderOnly(logMagic, uint64(fx.n), 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		w := rcvOK(0, uint64(fx.n))
		w.check = func(t *testing.T, l *Log) {
			if got := l.Info().Segments; got != len(fx.bases)+1 {
				t.Fatalf("%d segments, want %d", got, len(fx.bases)+1)
			}
		}
		return w
	}},
}

func TestRecovery(t *testing.T) {
	for _, c := range recoveryCases {
		t.Run(c.name, func(t *testing.T) {
			opts, logs := rcvOptions()
			fx := buildRecoveryFixture(t, opts, 300)
			w := c.damage(t, fx)
			before := plSnapshot(t, fx.dir)

			logs.Reset()
			l, err := OpenLog(fx.dir, "test.subject", opts)
			if l != nil {
				defer l.Close()
			}
			rcvCheckOpen(t, fx, w, l, err)
			output := logs.String()
			for _, s := range w.warn {
				if !strings.Contains(output, s) {
					t.Errorf("log output lacks %q:\n%s", s, output)
				}
			}
			after := plSnapshot(t, fx.dir)
			for _, name := range w.removed {
				if _, ok := after[name]; ok {
					t.Errorf("%s not removed", name)
				}
			}
			for name, b := range before {
				if filepath.Ext(name) != ".log" || slices.Contains(w.changed, name) || slices.Contains(w.removed, name) {
					continue
				}
				if !bytes.Equal(after[name], b) {
					t.Errorf("%s changed on open (%d bytes, were %d)", name, len(after[name]), len(b))
				}
			}
			if w.check != nil {
				w.check(t, l)
			}
			if t.Failed() {
				return
			}

			end := w.end
			if w.corrupt {
				if _, _, err := l.Append(0, nil, []byte("refused")); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("append to a corrupt log: %v", err)
				}
				if !errors.Is(l.Err(), ErrCorrupt) || l.EndOffset() != end {
					t.Fatalf("after a refused append: end %d, Err %v", l.EndOffset(), l.Err())
				}
			} else {
				appendN(t, l, int(end), 1) // offsets continue where the good records end
				end++
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if w.corrupt {
				if after := plSnapshot(t, fx.dir); !rcvLogFilesEqual(before, after) {
					t.Fatal("a corrupt log's .log files changed")
				}
			}

			// Recovery is idempotent: a second open finds nothing to repair.
			logs.Reset()
			l2, err2 := OpenLog(fx.dir, "test.subject", opts)
			if l2 != nil {
				defer l2.Close()
			}
			if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
				t.Fatalf("second open: %v; first: %v", err2, err)
			}
			// A corrupt sealed segment's index is rebuilt (to the records
			// before the corruption) on every open; nothing else may repeat.
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(line, "level=WARN") && !(w.corrupt && strings.Contains(line, `msg="logstore: rebuilding index"`)) {
					t.Fatalf("second open repaired something:\n%s", logs.String())
				}
			}
			if l2.FirstOffset() != w.first || l2.EndOffset() != end {
				t.Fatalf("second open: first %d end %d, want %d %d", l2.FirstOffset(), l2.EndOffset(), w.first, end)
			}
			if w.readErrAt < 0 {
				checkRecords(t, l2, int(w.first), int(end))
			}
		})
	}
}

func rcvLogFilesEqual(a, b map[string][]byte) bool {
	for name, content := range a {
		if filepath.Ext(name) == ".log" && !bytes.Equal(b[name], content) {
			return false
		}
	}
	return true
}

// rcvCheckOpen checks what OpenLog returned against the expectation.
func rcvCheckOpen(t *testing.T, fx *rcvFixture, w rcvWant, l *Log, err error) {
	t.Helper()
	if w.corrupt {
		var ce *CorruptionError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("OpenLog: %v, want a *CorruptionError", err)
		}
		if filepath.Base(ce.Path) != w.errFile || ce.Offset != w.errOffset || w.errPos >= 0 && ce.Position != w.errPos {
			t.Fatalf("corruption at %s byte %d offset %d (%s); want %s byte %d offset %d",
				filepath.Base(ce.Path), ce.Position, ce.Offset, ce.Reason, w.errFile, w.errPos, w.errOffset)
		}
		if l == nil {
			t.Fatalf("OpenLog returned no log with %v", err)
		}
		if !errors.Is(l.Err(), ErrCorrupt) {
			t.Fatalf("Err() = %v", l.Err())
		}
	} else if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	if l.FirstOffset() != w.first || l.EndOffset() != w.end {
		t.Fatalf("first %d end %d, want %d %d", l.FirstOffset(), l.EndOffset(), w.first, w.end)
	}
	if w.readErrAt < 0 {
		checkRecords(t, l, int(w.first), int(w.end)) // byte-exact, headers too
		return
	}
	// A bad record that only a read finds: everything before it, exact,
	// then a *CorruptionError that names it; everything after it reads.
	bad := int(w.readErrAt)
	records, err := l.Read(w.first, int(w.end))
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Offset != uint64(bad) || len(records) != bad-int(w.first) {
		t.Fatalf("read: %d records, %v; want %d and corruption at offset %d", len(records), err, bad-int(w.first), bad)
	}
	checkRecords(t, l, int(w.first), bad)
	checkRecords(t, l, bad+1, int(w.end))
}

// TestOpenLogCorruptFirstSegmentReturnsLog: OpenLog's documentation says
// that a log with corruption is returned, readable up to the corruption,
// together with the *CorruptionError. When the corruption is in the first
// segment's header there is nothing before it, but the caller still gets
// the error and should get an empty, read-only log, not nil.
func TestOpenLogCorruptFirstSegmentReturnsLog(t *testing.T) {
	for _, c := range []struct {
		name     string
		segments int // 1: the only segment is the newest
	}{{"oldest of several", 300}, {"the only segment", 5}} {
		t.Run(c.name, func(t *testing.T) {
			opts, _ := rcvOptions()
			dir := t.TempDir()
			l, err := OpenLog(dir, "test.subject", opts)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, l, 0, c.segments)
			l.Close()
			rcvEdit(t, filepath.Join(dir, segmentFileName(0, ".log")), func(b []byte) []byte { b[3] ^= 0x20; return b })
			before := plSnapshot(t, dir)
			l, err = OpenLog(dir, "test.subject", opts)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenLog: %v, want ErrCorrupt", err)
			}
			if !rcvLogFilesEqual(before, plSnapshot(t, dir)) {
				t.Fatal("files changed")
			}
			if l == nil {
				t.Fatal("OpenLog returns a nil *Log with the *CorruptionError when the first segment's header is bad")
			}
			defer l.Close()
			if l.FirstOffset() != 0 || l.EndOffset() != 0 {
				t.Fatalf("first %d end %d", l.FirstOffset(), l.EndOffset())
			}
			if _, _, err := l.Append(0, nil, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("append: %v", err)
			}
		})
	}
}

// TestReadBadHeaderBlockIsCorruption: a record whose checksum is right but
// whose header block does not parse (written by a buggy or hostile writer,
// since the checksum rules out damage) must be reported as corruption, like
// every other bad stored byte: errors.Is(err, ErrCorrupt).
func TestReadBadHeaderBlockIsCorruption(t *testing.T) {
	opts, _ := rcvOptions()
	dir := t.TempDir()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 3) // record 1 has headers
	l.Close()
	rcvEdit(t, filepath.Join(dir, segmentFileName(0, ".log")), func(b []byte) []byte {
		positions, _ := rcvWalk(b)
		r := b[positions[1]:]
		if binary.LittleEndian.Uint32(r[24:28]) < 4 {
			t.Fatal("record 1 has no headers")
		}
		r[recordHeaderSize] = 0x7f // a name count larger than the block
		rcvResign(r)
		return b
	})
	l, err = OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatalf("OpenLog: %v (the record's checksum is valid)", err)
	}
	defer l.Close()
	checkRecords(t, l, 0, 1)
	_, err = l.Read(1, 1)
	if err == nil {
		t.Fatal("a header block that does not parse was read")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of a record whose header block does not parse returns %q, which is not ErrCorrupt", err)
	}
}

// TestSealedIndexWrongMiddleEntry: the index is derived data, but an entry
// in the middle of a sealed segment's index is not among the cheap checks.
// If it is wrong while the .log is intact, reads starting at that offset
// fail for good: reopening trusts the index again.
func TestSealedIndexWrongMiddleEntry(t *testing.T) {
	opts, _ := rcvOptions()
	fx := buildRecoveryFixture(t, opts, 300)
	_, positions, _ := fx.records(t, 1)
	rcvEdit(t, fx.path(1, ".idx"), func(b []byte) []byte {
		binary.LittleEndian.PutUint32(rcvEntry(b, 3), uint32(positions[3]+1)) // still in order and in bounds
		return b
	})
	l, err := OpenLog(fx.dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkRecords(t, l, 0, fx.n) // a scan from the start walks the .log, not the index
	k := fx.base(1) + 3
	if _, err := l.Read(k, 10); err != nil {
		t.Fatalf("a wrong index entry in a sealed segment makes reads from offset %d fail (%v) although the .log is intact; reopening does not rebuild the index", k, err)
	}
	checkRecords(t, l, int(k), fx.n)
}

// openWithWrongIndexEntries builds a log, points the index entries
// wrong of the second segment one byte past their records (still in
// order and in bounds, so the checks at open pass), lets editLog change
// that segment's .log too (nil: leave it), and opens the log with a
// captured logger. It returns the record positions of that segment.
func openWithWrongIndexEntries(t *testing.T, wrong []int, editLog func(b []byte, positions []int64)) (*rcvFixture, []int64, *Log, *rcvLogBuffer) {
	t.Helper()
	opts, logs := rcvOptions()
	fx := buildRecoveryFixture(t, opts, 300)
	_, positions, _ := fx.records(t, 1)
	rcvEdit(t, fx.path(1, ".idx"), func(b []byte) []byte {
		for _, i := range wrong {
			binary.LittleEndian.PutUint32(rcvEntry(b, i), uint32(positions[i]+1))
		}
		return b
	})
	if editLog != nil {
		rcvEdit(t, fx.path(1, ".log"), func(b []byte) []byte {
			editLog(b, positions)
			return b
		})
	}
	logs.Reset()
	l, err := OpenLog(fx.dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return fx, positions, l, logs
}

// TestSealedIndexWrongEntriesRebuildPositionsOnce: reads that start at
// wrong index entries of a sealed segment walk its .log once, log that
// once, and are served from the rebuilt positions afterwards instead of
// walking the segment from its start on every read.
func TestSealedIndexWrongEntriesRebuildPositionsOnce(t *testing.T) {
	fx, positions, l, logs := openWithWrongIndexEntries(t, []int{3, 7}, nil)
	for _, i := range []uint64{3, 7, 3, 7} {
		checkRecords(t, l, int(fx.base(1)+i), int(fx.base(1)+i+1))
	}
	if n := strings.Count(logs.String(), "index disagrees with its log"); n != 1 {
		t.Fatalf("%d rebuild warnings for reads at two wrong entries, want 1:\n%s", n, logs.String())
	}
	var seg *segment
	for _, s := range *l.segments.Load() {
		if s.baseOffset == fx.base(1) {
			seg = s
		}
	}
	p := seg.positions.Load()
	if p == nil || len(p.positions) != len(positions) {
		t.Fatalf("rebuilt positions %v, want the %d records of the segment", p, len(positions))
	}
	for i, want := range positions {
		if int64(p.positions[i]) != want {
			t.Fatalf("rebuilt position of record %d is %d, the .log has it at %d", i, p.positions[i], want)
		}
	}
}

// TestSealedIndexWrongEntryPastABadRecordWalksOnce: when the .log itself
// has a bad record before a wrong index entry, the walk stops at the bad
// record; reads at the wrong entry report corruption without walking (and
// logging) again each time.
func TestSealedIndexWrongEntryPastABadRecordWalksOnce(t *testing.T) {
	fx, _, l, logs := openWithWrongIndexEntries(t, []int{7}, func(b []byte, positions []int64) {
		b[positions[3]+recordHeaderSize] ^= 0xff // record 3's checksum no longer matches
	})
	k := fx.base(1) + 7
	for range 5 {
		if _, err := l.Read(k, 1); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("read at a wrong entry past a bad record: %v, want ErrCorrupt", err)
		}
	}
	if n := strings.Count(logs.String(), "index disagrees with its log"); n != 1 {
		t.Fatalf("%d walks logged for 5 reads, want 1:\n%s", n, logs.String())
	}
}

// TestStoreRemovesUnfinishedLogDirs: createLogDir builds a log directory
// under ".new-*" and renames it; a crash leaves the temporary directory,
// which OpenStore removes. Logs that were completed are all found.
func TestStoreRemovesUnfinishedLogDirs(t *testing.T) {
	opts, _ := rcvOptions()
	root := t.TempDir()
	long := strings.Repeat("long.subject.", 30)
	s, err := OpenStore(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"orders.eu", long} {
		if _, _, err := storeAppend(s, subject, 0, nil, []byte(subject)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, leftover := range []string{".new-123456", ".new-abc"} {
		dir := filepath.Join(root, leftover)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, subjectFileName), []byte("half.made"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "README"), []byte("not a log"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, leftover := range []string{".new-123456", ".new-abc"} {
		if _, err := os.Stat(filepath.Join(root, leftover)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s not removed: %v", leftover, err)
		}
	}
	want := []string{long, "orders.eu"}
	slices.Sort(want)
	if got := s.Subjects(); !slices.Equal(got, want) {
		t.Fatalf("subjects %q, want %q", got, want)
	}
	if s.Has("half.made") {
		t.Fatal("the unfinished log's subject is known")
	}
	l, err := s.Acquire(long)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(l)
	if records, err := l.Read(0, 10); err != nil || len(records) != 1 || string(records[0].Data) != long {
		t.Fatalf("long subject's log: %v, %v", records, err)
	}
}

// TestStoreSkipsForeignDirs: a directory that is not a log (no subject
// file) is skipped with a warning, whatever its name; one whose name
// starts with a dot (a group's state, .group) is another part's, and
// skipped without a word.
func TestStoreSkipsForeignDirs(t *testing.T) {
	for _, name := range []string{"lost+found", ".cache", "foreign", ".group"} {
		t.Run(name, func(t *testing.T) {
			opts, logs := rcvOptions()
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, name), 0o700); err != nil {
				t.Fatal(err)
			}
			s, err := OpenStore(root, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if subjects := s.Subjects(); len(subjects) != 0 {
				if _, ok := subjectFromDirName(name); ok {
					t.Fatalf("OpenStore takes directory %q, which has no subject file, for the log of subject %q", name, subjects[0])
				}
				t.Fatalf("foreign directory %q taken for subjects %q", name, subjects)
			}
			warned := strings.Contains(logs.String(), `msg="logstore: skipping directory that is not a log"`) && strings.Contains(logs.String(), name)
			if dot := strings.HasPrefix(name, "."); warned == dot {
				t.Fatalf("dot dir %v, warned %v for %q:\n%s", dot, warned, name, logs.String())
			}
		})
	}
}

// TestTornTailSearchIsLinear: telling a torn tail from corruption looks for
// a valid record anywhere after the last good one. A record that was being
// copied when the process died (its length, written last, still zero)
// leaves its data in that tail, and the data is the publisher's: one
// crafted so that a candidate record starts every 16 bytes, each claiming
// a length to the end of the segment and a plausible offset, costs a
// checksum of up to the whole tail per candidate. Recovery then grows with
// the square of the tail (1 MiB: about a second; 64 MiB, the default
// segment, hours) instead of linearly.
func TestTornTailSearchIsLinear(t *testing.T) {
	const tailBytes = 1 << 20
	opts, _ := rcvOptions()
	opts.SegmentBytes = 4 << 20
	dir := t.TempDir()
	l, err := OpenLog(dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	message := make([]byte, tailBytes)
	for at := 0; at+16 <= len(message); at += 16 {
		binary.LittleEndian.PutUint32(message[at:], uint32(len(message)-at-8)) // a length that fits
		binary.LittleEndian.PutUint64(message[at+8:], 1)                       // the next offset
	}
	for _, data := range [][]byte{[]byte("first"), message} {
		if _, _, err := l.Append(0, nil, data); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rcvEdit(t, filepath.Join(dir, segmentFileName(0, ".log")), func(b []byte) []byte {
		positions, _ := rcvWalk(b)
		clear(b[positions[1] : positions[1]+4]) // the copy was interrupted before the length
		return b
	})
	start := time.Now()
	l, err = OpenLog(dir, "test.subject", opts)
	elapsed := time.Since(start)
	if err != nil || l.EndOffset() != 1 {
		t.Fatalf("OpenLog: %v", err)
	}
	l.Close()
	if elapsed > time.Second/4 { // a linear scan of 1 MiB takes about a millisecond
		t.Fatalf("recovering a 1 MiB torn tail took %v", elapsed)
	}
}

// TestOpenSyncsEachSegmentOnce counts fdatasyncs at open: a new log syncs
// its first segment once (its header, before any record), and a log with
// a torn tail syncs each segment once, the cut included; no file is
// synced twice.
func TestOpenSyncsEachSegmentOnce(t *testing.T) {
	var syncs atomic.Int64
	opts, _ := rcvOptions()
	opts.faults = &faultHooks{sync: func(string) error { syncs.Add(1); return nil }}

	l, err := OpenLog(t.TempDir(), "fresh", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := syncs.Load(); got != 1 {
		t.Errorf("a new log: %d fdatasyncs, want 1", got)
	}
	l.Close()

	fx := buildRecoveryFixture(t, opts, 300)
	rcvEdit(t, fx.path(-1, ".log"), func(b []byte) []byte {
		_, end := rcvWalk(b)
		copy(b[end:], "torn")
		return b
	})
	syncs.Store(0)
	l, err = OpenLog(fx.dir, "test.subject", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, want := syncs.Load(), int64(len(fx.bases)); got != want {
		t.Errorf("a log with a torn tail, %d segments: %d fdatasyncs, want %d", want, got, want)
	}
	if l.EndOffset() != 300 {
		t.Fatalf("end offset %d after the cut, want 300", l.EndOffset())
	}
}

// TestTornTailSearchGivesUpPastItsBudget: a tail crafted so that a
// candidate record passes every cheap check (length, offset, timestamp)
// every 24 bytes and claims the rest of the tail would cost the square
// of the tail in checksums. findValidRecord stops at its budget and says
// so (searchTooCostly) rather than search on, and OpenLog reports such a
// tail as corruption instead of cutting it.
func TestTornTailSearchGivesUpPastItsBudget(t *testing.T) {
	const minOffset, minTimestamp = 7, 1700000000000000000
	tail := make([]byte, 1<<20)
	for at := 0; at+recordHeaderSize <= len(tail); at += 24 {
		binary.LittleEndian.PutUint32(tail[at:], uint32(len(tail)-at-8)) // claims the rest
		binary.LittleEndian.PutUint64(tail[at+8:], minOffset)
		binary.LittleEndian.PutUint64(tail[at+16:], math.MaxInt64)
	}
	if got := findValidRecord(tail, minOffset, minTimestamp); got != searchTooCostly {
		t.Fatalf("findValidRecord = %d, want searchTooCostly (%d)", got, searchTooCostly)
	}
	// The same bytes with a timestamp from before the last good record are
	// rejected before any checksum: nothing found, no budget spent.
	for at := 0; at+recordHeaderSize <= len(tail); at += 24 {
		binary.LittleEndian.PutUint64(tail[at+16:], 1)
	}
	if got := findValidRecord(tail, minOffset, minTimestamp); got != -1 {
		t.Fatalf("with old timestamps: findValidRecord = %d, want -1", got)
	}
}
