package logstore

// Simulated power loss. A log is written and closed cleanly, then its files
// are rewritten into a state a power cut could have left behind (or that
// damage could), and the log is reopened in-process. Bytes after the last
// synced record of the newest segment are the only ones a power cut may
// lose or tear; everything before them must come back byte for byte.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

const plSubject = "powerloss.subject"

func plTimestamp(i int) int64 { return 1_000_000 + int64(i)*10 }

// plAppend appends records from..from+n-1 with the content of log_test.go's
// helpers and a timestamp fixed by the offset, so every file is the same
// from run to run.
func plAppend(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		off, ts, err := l.Append(plTimestamp(i), headersFor(i), payload(i))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if off != uint64(i) || ts != plTimestamp(i) {
			t.Fatalf("append %d got offset %d timestamp %d", i, off, ts)
		}
	}
}

// plCheckRecords checks that the log holds exactly records 0..n-1 as
// plAppend wrote them: offsets, timestamps, data and headers.
func plCheckRecords(t testing.TB, l *Log, n int) {
	t.Helper()
	if first, end := l.FirstOffset(), l.EndOffset(); first != 0 || end != uint64(n) {
		t.Fatalf("first offset %d end offset %d, want 0 and %d", first, end, n)
	}
	checkRecords(t, l, 0, n)
	i := 0
	if _, err := l.Scan(0, func(v RecordView) bool {
		if v.Timestamp != plTimestamp(i) {
			t.Fatalf("record %d: timestamp %d, want %d", i, v.Timestamp, plTimestamp(i))
		}
		i++
		return true
	}); err != nil || i != n {
		t.Fatalf("scan: %d records, %v", i, err)
	}
}

func plOpen(t testing.TB, dir string) (*Log, error) {
	t.Helper()
	return OpenLog(dir, plSubject, testOptions())
}

func plMustOpen(t testing.TB, dir string) *Log {
	t.Helper()
	l, err := plOpen(t, dir)
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	return l
}

func plClose(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// plRecordAt is where a record lies in a .log file.
type plRecordAt struct {
	offset   uint64
	position int64
	size     int64
}

// plWalk lists the valid records of a .log file from its start.
func plWalk(file []byte, base uint64) []plRecordAt {
	var records []plRecordAt
	position := int64(fileHeaderSize)
	for position < int64(len(file)) {
		view, status, _ := decodeRecord(file[position:])
		if status != decodeOK || view.Offset != base+uint64(len(records)) {
			break
		}
		records = append(records, plRecordAt{view.Offset, position, int64(view.size)})
		position += int64(view.size)
	}
	return records
}

// segmentBases lists the base offsets of the .log files in dir.
func segmentBases(t testing.TB, dir string) []uint64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var bases []uint64
	for _, e := range entries {
		if base, ext, ok := parseSegmentName(e.Name()); ok && ext == ".log" {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	return bases
}

func plPath(dir string, base uint64, ext string) string {
	return filepath.Join(dir, segmentFileName(base, ext))
}

// plRead is a file's content; the test fails if it cannot be read.
func plRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func plWrite(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// plCopyDir copies the files of src into a new temporary directory.
func plCopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			plWrite(t, filepath.Join(dst, e.Name()), plRead(t, filepath.Join(src, e.Name())))
		}
	}
	return dst
}

// plSnapshot is every file of dir by name.
func plSnapshot(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		files[e.Name()] = plRead(t, filepath.Join(dir, e.Name()))
	}
	return files
}

func plSameFiles(t testing.TB, what string, got, want map[string][]byte) {
	t.Helper()
	for name, b := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s: %s is gone", what, name)
		case !bytes.Equal(g, b):
			at := 0
			for at < min(len(g), len(b)) && g[at] == b[at] {
				at++
			}
			t.Errorf("%s: %s differs (%d bytes, was %d; first difference at byte %d)", what, name, len(g), len(b), at)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: new file %s", what, name)
		}
	}
}

// plCheckIndexes checks that every segment's .idx on disk describes its
// .log exactly: a valid header, one entry per record, zeros after.
func plCheckIndexes(t testing.TB, dir string) {
	t.Helper()
	for _, base := range segmentBases(t, dir) {
		file := plRead(t, plPath(dir, base, ".log"))
		index := plRead(t, plPath(dir, base, ".idx"))
		if got, err := decodeFileHeader(index, indexMagic); err != nil || got != base {
			t.Fatalf("index %d: header base %d, %v", base, got, err)
		}
		records := plWalk(file, base)
		for i, r := range records {
			view, _, _ := decodeRecord(file[r.position:])
			want := indexEntry{position: uint32(r.position), size: uint32(view.PayloadSize()), timestamp: view.Timestamp}
			at := fileHeaderSize + i*indexEntrySize
			if at+indexEntrySize > len(index) {
				t.Fatalf("index %d: %d bytes, too short for entry %d", base, len(index), i)
			}
			if got := readIndexEntry(index[at:]); got != want {
				t.Fatalf("index %d entry %d: %+v, want %+v", base, i, got, want)
			}
		}
		if rest := index[fileHeaderSize+len(records)*indexEntrySize:]; !allZero(rest) {
			t.Fatalf("index %d: entries after its %d records", base, len(records))
		}
	}
}

// plBase is a log written and closed cleanly: records 0..synced-1 were
// synced, synced..total-1 were appended after the last sync and all sit in
// the newest segment after the synced ones.
type plBase struct {
	dir       string
	synced    int
	total     int
	newest    uint64 // base offset of the newest segment
	records   []plRecordAt
	syncedEnd int64 // position in the newest .log where the synced records end
	segments  int
}

// next is record synced as it lies in the newest .log.
func (b *plBase) next(file []byte) []byte {
	r := b.records[uint64(b.synced)-b.newest]
	return slices.Clone(file[r.position : r.position+r.size])
}

func plBuild(t testing.TB, synced, unsynced int) *plBase {
	t.Helper()
	dir := t.TempDir()
	opts := testOptions()
	opts.Sync = SyncNone
	l, err := OpenLog(dir, plSubject, opts)
	if err != nil {
		t.Fatal(err)
	}
	plAppend(t, l, 0, synced)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	segments := l.Info().Segments
	plAppend(t, l, synced, unsynced)
	if got := l.Info().Segments; got != segments {
		t.Fatalf("the unsynced records rotated the log (%d segments, then %d): change the test's sizes", segments, got)
	}
	plClose(t, l)

	bases := segmentBases(t, dir)
	b := &plBase{dir: dir, synced: synced, total: synced + unsynced, newest: bases[len(bases)-1], segments: len(bases)}
	if b.newest >= uint64(synced) || len(bases) < 3 {
		t.Fatalf("want the newest segment to start with synced records after 2 or more sealed segments; bases %v", bases)
	}
	b.records = plWalk(plRead(t, plPath(dir, b.newest, ".log")), b.newest)
	if got := b.newest + uint64(len(b.records)); got != uint64(b.total) {
		t.Fatalf("newest segment ends at offset %d, want %d", got, b.total)
	}
	last := b.records[uint64(synced-1)-b.newest]
	b.syncedEnd = last.position + last.size
	return b
}

// plExpectRecovered opens dir, which must recover without an error to
// exactly want records, and shows that the result is stable: a second open
// finds the same records and changes no file; then the log takes an append
// at the end offset that reads back, also after a reopen.
func plExpectRecovered(t *testing.T, dir string, want int) {
	t.Helper()
	l := plMustOpen(t, dir)
	plCheckRecords(t, l, want)
	plClose(t, l)
	first := plSnapshot(t, dir)
	plCheckIndexes(t, dir)

	l = plMustOpen(t, dir)
	plCheckRecords(t, l, want)
	plClose(t, l)
	plSameFiles(t, "second open", plSnapshot(t, dir), first)

	l = plMustOpen(t, dir)
	plAppend(t, l, want, 1)
	checkRecords(t, l, want, want+1)
	plClose(t, l)

	l = plMustOpen(t, dir)
	plCheckRecords(t, l, want+1)
	plClose(t, l)
}

// plDamageTail rewrites the newest .log from the synced end on: the bytes
// fill takes, zeros after. It keeps the file's size.
func plDamageTail(t testing.TB, b *plBase, dir string, fill func(file, next []byte) []byte) {
	t.Helper()
	path := plPath(dir, b.newest, ".log")
	file := plRead(t, path)
	next := b.next(file)
	tail := slices.Clone(fill(file, next))
	clear(file[b.syncedEnd:])
	copy(file[b.syncedEnd:], tail)
	plWrite(t, path, file)
}

func plGarbage(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	g := make([]byte, n)
	for i := range g {
		g[i] = byte(rng.Uint32())
	}
	return g
}

func TestPowerLossTornTailRecoversSyncedRecordsOnly(t *testing.T) {
	b := plBuild(t, 310, 6) // record 310 is small and has headers
	fileSize := len(plRead(t, plPath(b.dir, b.newest, ".log")))
	rest := fileSize - int(b.syncedEnd)

	type tailCase struct {
		name string
		fill func(file, next []byte) []byte
		want int
	}
	cases := []tailCase{
		{"zeros", func(file, next []byte) []byte { return nil }, b.synced},
		{"tail as written", func(file, next []byte) []byte { return file[b.syncedEnd:] }, b.total},
		{"garbage 1 byte", func(file, next []byte) []byte { return plGarbage(1, 1) }, b.synced},
		{"garbage 3 bytes", func(file, next []byte) []byte { return plGarbage(2, 3) }, b.synced},
		{"garbage 100 bytes", func(file, next []byte) []byte { return plGarbage(3, 100) }, b.synced},
		{"garbage to the end of the file", func(file, next []byte) []byte { return plGarbage(4, rest) }, b.synced},
		{"garbage in the last byte of the file", func(file, next []byte) []byte {
			return append(make([]byte, rest-1), 0x5a)
		}, b.synced},
		{"zero length then garbage", func(file, next []byte) []byte {
			return append(make([]byte, 4), plGarbage(5, 200)...)
		}, b.synced},
		{"next record but its length", func(file, next []byte) []byte {
			torn := slices.Clone(next)
			clear(torn[:4]) // encodeRecord writes the length last
			return torn
		}, b.synced},
		{"second half of the next record", func(file, next []byte) []byte {
			// the page with its second half reached the disk, the first did not
			torn := slices.Clone(next)
			clear(torn[:len(torn)/2])
			return torn
		}, b.synced},
		{"next record then zeros", func(file, next []byte) []byte { return next }, b.synced + 1},
		{"next record then garbage", func(file, next []byte) []byte {
			return append(slices.Clone(next), plGarbage(6, 50)...)
		}, b.synced + 1},
		{"next record then garbage to the end", func(file, next []byte) []byte {
			return append(slices.Clone(next), plGarbage(7, rest-len(next))...)
		}, b.synced + 1},
		{"next record then half of the one after", func(file, next []byte) []byte {
			r := b.records[uint64(b.synced+1)-b.newest]
			return slices.Clone(file[b.syncedEnd : r.position+r.size/2])
		}, b.synced + 1},
	}
	next := b.next(plRead(t, plPath(b.dir, b.newest, ".log")))
	if len(next) < 60 || len(next) > 200 {
		t.Fatalf("record %d takes %d bytes: pick a smaller one for the cut at every byte", b.synced, len(next))
	}
	for cut := 0; cut < len(next); cut++ {
		cases = append(cases, tailCase{fmt.Sprintf("next record cut at byte %d", cut), func(file, next []byte) []byte {
			return next[:cut]
		}, b.synced})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := plCopyDir(t, b.dir)
			plDamageTail(t, b, dir, c.fill)
			plExpectRecovered(t, dir, c.want)
		})
	}
}

func TestPowerLossShortLogFileRecoversSyncedRecords(t *testing.T) {
	b := plBuild(t, 310, 6)
	next := b.next(plRead(t, plPath(b.dir, b.newest, ".log")))
	for _, keep := range []int{0, 1, 3, 4, 8, 27, 28, len(next) - 1} {
		t.Run(fmt.Sprintf("cut %d bytes after the synced end", keep), func(t *testing.T) {
			// The file lost the size it had grown to, cutting it inside
			// the first unsynced record.
			dir := plCopyDir(t, b.dir)
			if err := os.Truncate(plPath(dir, b.newest, ".log"), b.syncedEnd+int64(keep)); err != nil {
				t.Fatal(err)
			}
			plExpectRecovered(t, dir, b.synced)
		})
	}
}

func TestPowerLossIndexDamageIsRepaired(t *testing.T) {
	b := plBuild(t, 310, 6)
	sealed := segmentBases(t, b.dir)[1] // a sealed segment in the middle of the log
	type indexCase struct {
		name     string
		base     uint64
		zeroTail bool // also lose the newest segment's unsynced records
		damage   func(t testing.TB, path string, index []byte)
	}
	var cases []indexCase
	for _, where := range []struct {
		name     string
		base     uint64
		zeroTail bool
	}{
		{"newest", b.newest, true},
		{"newest with intact log", b.newest, false},
		{"sealed", sealed, false},
	} {
		damages := []struct {
			name   string
			damage func(t testing.TB, path string, index []byte)
		}{
			{"missing", func(t testing.TB, path string, _ []byte) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}},
			{"empty", func(t testing.TB, path string, _ []byte) { plWrite(t, path, nil) }},
			{"shorter than its header", func(t testing.TB, path string, index []byte) { plWrite(t, path, index[:10]) }},
			{"header only", func(t testing.TB, path string, index []byte) { plWrite(t, path, index[:fileHeaderSize]) }},
			{"short by entries", func(t testing.TB, path string, index []byte) {
				plWrite(t, path, index[:fileHeaderSize+3*indexEntrySize+5])
			}},
			{"all zeros", func(t testing.TB, path string, index []byte) { plWrite(t, path, make([]byte, len(index))) }},
			{"garbage", func(t testing.TB, path string, index []byte) { plWrite(t, path, plGarbage(11, len(index))) }},
			{"garbage entries", func(t testing.TB, path string, index []byte) {
				damaged := slices.Clone(index)
				copy(damaged[fileHeaderSize:], plGarbage(12, len(index)-fileHeaderSize))
				plWrite(t, path, damaged)
			}},
			{"header of another segment", func(t testing.TB, path string, index []byte) {
				damaged := slices.Clone(index)
				encodeFileHeader(damaged, indexMagic, 12345)
				plWrite(t, path, damaged)
			}},
			{"entries swapped", func(t testing.TB, path string, index []byte) {
				damaged := slices.Clone(index)
				a, c := damaged[fileHeaderSize:fileHeaderSize+indexEntrySize], damaged[fileHeaderSize+indexEntrySize:fileHeaderSize+2*indexEntrySize]
				tmp := slices.Clone(a)
				copy(a, c)
				copy(c, tmp)
				plWrite(t, path, damaged)
			}},
			{"ahead of the log", func(t testing.TB, path string, index []byte) {
				// Entries beyond the last record, as if the index of
				// records that never reached the disk had.
				damaged := slices.Clone(index)
				at := fileHeaderSize
				for readIndexEntry(damaged[at:]) != (indexEntry{}) {
					at += indexEntrySize
				}
				last := readIndexEntry(damaged[at-indexEntrySize:])
				for k := range 3 {
					putIndexEntry(damaged[at+k*indexEntrySize:], indexEntry{position: last.position + uint32(100*(k+1)), size: 7, timestamp: last.timestamp + int64(k)})
				}
				if len(damaged) < at+3*indexEntrySize {
					t.Fatal("index file too short to add entries")
				}
				plWrite(t, path, damaged)
			}},
		}
		for _, d := range damages {
			cases = append(cases, indexCase{where.name + " index " + d.name, where.base, where.zeroTail, d.damage})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := plCopyDir(t, b.dir)
			want := b.total
			if c.zeroTail {
				plDamageTail(t, b, dir, func(file, next []byte) []byte { return nil })
				want = b.synced
			}
			path := plPath(dir, c.base, ".idx")
			c.damage(t, path, plRead(t, path))
			plExpectRecovered(t, dir, want)
		})
	}
}

// plCorruptionExpected checks what a log opened over corruption must do:
// the error, the records before it readable, appends refused, no byte of
// any .log changed.
func plCorruptionExpected(t *testing.T, dir string, badOffset uint64, badPath string, badPosition int64) {
	t.Helper()
	logsBefore := map[string][]byte{}
	for name, b := range plSnapshot(t, dir) {
		if filepath.Ext(name) == ".log" {
			logsBefore[name] = b
		}
	}
	for attempt := range 2 { // and the same again: nothing was repaired away
		l, err := plOpen(t, dir)
		var corrupt *CorruptionError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &corrupt) {
			t.Fatalf("open %d: got %v, want a *CorruptionError", attempt, err)
		}
		if l == nil {
			t.Fatalf("open %d: no log returned with the corruption error", attempt)
		}
		if corrupt.Offset != badOffset || corrupt.Path != badPath || corrupt.Position != badPosition {
			t.Errorf("open %d: corruption at %s byte %d offset %d, want %s byte %d offset %d (%v)",
				attempt, corrupt.Path, corrupt.Position, corrupt.Offset, badPath, badPosition, badOffset, err)
		}
		plCheckRecords(t, l, int(badOffset))
		if _, _, err := l.Append(0, nil, []byte("must be refused")); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("append to a corrupt log: %v, want ErrCorrupt", err)
		}
		if err := l.Err(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Err of a corrupt log: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("close a corrupt log: %v", err)
		}
		logsAfter := map[string][]byte{}
		for name, b := range plSnapshot(t, dir) {
			if filepath.Ext(name) == ".log" {
				logsAfter[name] = b
			}
		}
		plSameFiles(t, "corrupt log after open", logsAfter, logsBefore)
	}
}

func TestPowerLossBadRecordBeforeAGoodOneIsCorruptionNotTruncated(t *testing.T) {
	b := plBuild(t, 310, 6) // everything synced at close: no torn tail here
	type corruptCase struct {
		name   string
		record int // index in the newest segment of the first bad record
		damage func(file []byte, records []plRecordAt)
	}
	// in changes the bytes of the newest segment's record i.
	in := func(i int, damage func(rec []byte)) func(file []byte, records []plRecordAt) {
		return func(file []byte, records []plRecordAt) {
			damage(file[records[i].position : records[i].position+records[i].size])
		}
	}
	cases := []corruptCase{
		{"data byte flipped", 1, in(1, func(rec []byte) { rec[len(rec)-1] ^= 0x40 })},
		{"data byte flipped in the first record", 0, in(0, func(rec []byte) { rec[len(rec)-1] ^= 0x01 })},
		{"header byte flipped", 2, in(2, func(rec []byte) { rec[recordHeaderSize] ^= 0x80 })},
		{"checksum byte flipped", 1, in(1, func(rec []byte) { rec[5] ^= 0x01 })},
		{"offset changed", 1, in(1, func(rec []byte) { rec[8]++ })},
		{"length one more", 1, in(1, func(rec []byte) { binary.LittleEndian.PutUint32(rec, binary.LittleEndian.Uint32(rec)+1) })},
		{"length past the segment", 1, in(1, func(rec []byte) { binary.LittleEndian.PutUint32(rec, 1<<31) })},
		{"length below the minimum", 1, in(1, func(rec []byte) { binary.LittleEndian.PutUint32(rec, 3) })},
		{"record zeroed", 1, in(1, func(rec []byte) { clear(rec) })},
		{"two records zeroed", 1, func(file []byte, records []plRecordAt) {
			clear(file[records[1].position : records[2].position+records[2].size])
		}},
		{"bad record before the unsynced ones", b.synced - int(b.newest) - 1, in(b.synced-int(b.newest)-1, func(rec []byte) { rec[len(rec)-2] ^= 0x04 })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := plCopyDir(t, b.dir)
			path := plPath(dir, b.newest, ".log")
			file := plRead(t, path)
			c.damage(file, b.records)
			plWrite(t, path, file)
			r := b.records[c.record]
			plCorruptionExpected(t, dir, r.offset, path, r.position)
		})
	}
}

func TestPowerLossBadLastRecordOfSealedSegmentIsCorruptionOnOpen(t *testing.T) {
	b := plBuild(t, 310, 6)
	dir := plCopyDir(t, b.dir)
	bases := segmentBases(t, dir)
	base := bases[1]
	path := plPath(dir, base, ".log")
	file := plRead(t, path)
	records := plWalk(file, base)
	last := records[len(records)-1]
	file[last.position+last.size-1] ^= 0xff
	plWrite(t, path, file)
	if got := last.offset + 1; got != bases[2] {
		t.Fatalf("last record of segment %d is %d, next segment starts at %d", base, last.offset, bases[2])
	}
	plCorruptionExpected(t, dir, last.offset, path, last.position)
}

func TestPowerLossBadRecordInSealedSegmentIsFoundOnRead(t *testing.T) {
	b := plBuild(t, 310, 6)
	dir := plCopyDir(t, b.dir)
	path := plPath(dir, 0, ".log")
	file := plRead(t, path)
	records := plWalk(file, 0)
	const bad = 5
	if len(records) < bad+3 {
		t.Fatalf("first segment holds %d records", len(records))
	}
	r := records[bad]
	file[r.position+r.size-1] ^= 0x20
	plWrite(t, path, file)

	// The cheap checks of a sealed index do not read record 5: the log opens.
	l := plMustOpen(t, dir)
	defer l.Close()
	if l.EndOffset() != uint64(b.total) {
		t.Fatalf("end offset %d, want %d", l.EndOffset(), b.total)
	}
	var seen []uint64
	next, err := l.Scan(0, func(v RecordView) bool {
		if !bytes.Equal(v.Data, payload(int(v.Offset))) {
			t.Fatalf("record %d: wrong data", v.Offset)
		}
		seen = append(seen, v.Offset)
		return true
	})
	var corrupt *CorruptionError
	if !errors.As(err, &corrupt) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan over the bad record: %v, want a *CorruptionError", err)
	}
	if corrupt.Offset != bad || corrupt.Position != r.position || corrupt.Path != path {
		t.Fatalf("corruption reported at %s byte %d offset %d, want %s byte %d offset %d", corrupt.Path, corrupt.Position, corrupt.Offset, path, r.position, bad)
	}
	if !reflect.DeepEqual(seen, []uint64{0, 1, 2, 3, 4}) || next != bad {
		t.Fatalf("scan returned records %v and next %d, want 0..4 and %d", seen, next, bad)
	}
	got, err := l.Read(0, 100)
	if !errors.Is(err, ErrCorrupt) || len(got) != bad {
		t.Fatalf("Read over the bad record: %d records, %v", len(got), err)
	}
	checkRecords(t, l, bad+1, b.total) // the records after it are still served
	plAppend(t, l, b.total, 1)         // and the log still takes appends
}

func TestPowerLossDuringRotationRemovesUnbornSegment(t *testing.T) {
	b := plBuild(t, 310, 6)
	header := func(magic [8]byte) []byte {
		h := make([]byte, pageSize)
		encodeFileHeader(h, magic, uint64(b.total))
		return h
	}
	cases := []struct {
		name string
		log  []byte // nil: no file
		idx  []byte // nil: no file
		kept bool   // the segment is valid and stays
	}{
		{"empty log, no index", []byte{}, nil, false},
		{"empty log, empty index", []byte{}, []byte{}, false},
		{"zero log, no index", make([]byte, pageSize), nil, false},
		{"zero log, zero index", make([]byte, pageSize), make([]byte, pageSize), false},
		{"short zero log, index header", make([]byte, 17), header(indexMagic), false},
		{"zero log of a whole segment, index header", make([]byte, 16<<10), header(indexMagic), false},
		{"log header, zero index", header(logMagic), make([]byte, pageSize), true},
		{"log header, no index", header(logMagic), nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := plCopyDir(t, b.dir)
			logPath, idxPath := plPath(dir, uint64(b.total), ".log"), plPath(dir, uint64(b.total), ".idx")
			if c.log != nil {
				plWrite(t, logPath, c.log)
			}
			if c.idx != nil {
				plWrite(t, idxPath, c.idx)
			}
			l := plMustOpen(t, dir)
			plCheckRecords(t, l, b.total)
			wantSegments := b.segments
			if c.kept {
				wantSegments++
			}
			if got := l.Info().Segments; got != wantSegments {
				t.Fatalf("%d segments, want %d", got, wantSegments)
			}
			plClose(t, l)
			for _, p := range []string{logPath, idxPath} {
				if _, err := os.Stat(p); c.kept != (err == nil) {
					t.Fatalf("%s: stat %v, want kept %v", filepath.Base(p), err, c.kept)
				}
			}
			plExpectRecovered(t, dir, b.total)
		})
	}
}

func TestPowerLossStrayIndexWithoutLogIsRemoved(t *testing.T) {
	b := plBuild(t, 310, 6)
	t.Run("after the last segment", func(t *testing.T) {
		dir := plCopyDir(t, b.dir)
		stray := plPath(dir, uint64(b.total), ".idx")
		plWrite(t, stray, plGarbage(21, pageSize))
		l := plMustOpen(t, dir)
		plCheckRecords(t, l, b.total)
		plClose(t, l)
		if _, err := os.Stat(stray); !os.IsNotExist(err) {
			t.Fatalf("stray index still there: %v", err)
		}
		plExpectRecovered(t, dir, b.total)
	})
	t.Run("of a segment deleted from the front", func(t *testing.T) {
		// Retention unlinks the .log first: a crash leaves its .idx.
		dir := plCopyDir(t, b.dir)
		second := segmentBases(t, dir)[1]
		if err := os.Remove(plPath(dir, 0, ".log")); err != nil {
			t.Fatal(err)
		}
		l := plMustOpen(t, dir)
		if l.FirstOffset() != second || l.EndOffset() != uint64(b.total) {
			t.Fatalf("first %d end %d, want %d %d", l.FirstOffset(), l.EndOffset(), second, b.total)
		}
		checkRecords(t, l, int(second), b.total)
		plAppend(t, l, b.total, 1)
		plClose(t, l)
		if _, err := os.Stat(plPath(dir, 0, ".idx")); !os.IsNotExist(err) {
			t.Fatalf("stray index still there: %v", err)
		}
	})
}

// TestPowerLossInterruptedRecoveryEndsLikeAnUninterruptedOne takes a log
// with a torn tail and an index ahead of it, recovers one copy without
// interruption and other copies from the states an interrupted recovery
// can leave behind; all must end byte for byte the same.
func TestPowerLossInterruptedRecoveryEndsLikeAnUninterruptedOne(t *testing.T) {
	b := plBuild(t, 310, 6)
	torn := plCopyDir(t, b.dir)
	file := plRead(t, plPath(torn, b.newest, ".log"))
	garbageLen := len(file) - int(b.syncedEnd)
	plDamageTail(t, b, torn, func(file, next []byte) []byte {
		return append(slices.Clone(next[:len(next)/2]), plGarbage(31, garbageLen-len(next)/2)...)
	})
	// A sealed index that recovery must rebuild too.
	sealedIndex := plPath(torn, segmentBases(t, torn)[1], ".idx")
	plWrite(t, sealedIndex, plGarbage(32, len(plRead(t, sealedIndex))))
	before := plSnapshot(t, torn)

	clean := plCopyDir(t, torn)
	plExpectRecovered(t, clean, b.synced) // opens it several times
	// The reference: one open, one close, nothing appended.
	reference := plCopyDir(t, torn)
	l := plMustOpen(t, reference)
	plClose(t, l)
	want := plSnapshot(t, reference)
	l = plMustOpen(t, reference)
	plClose(t, l)
	plSameFiles(t, "reopened reference", plSnapshot(t, reference), want)

	newestLog := segmentFileName(b.newest, ".log")
	newestIdx := segmentFileName(b.newest, ".idx")
	sealedIdx := filepath.Base(sealedIndex)
	interrupted := []struct {
		name  string
		state func(files map[string][]byte)
	}{
		{"nothing done yet", func(map[string][]byte) {}},
		{"tail half zeroed", func(files map[string][]byte) {
			f := files[newestLog]
			clear(f[b.syncedEnd : b.syncedEnd+int64(garbageLen/2)])
		}},
		{"tail zeroed from its end", func(files map[string][]byte) {
			// pages of the cleared tail reach the disk in any order
			f := files[newestLog]
			clear(f[len(f)-garbageLen/2:])
		}},
		{"tail zeroed, newest index not yet rewritten", func(files map[string][]byte) {
			clear(files[newestLog][b.syncedEnd:])
		}},
		{"tail zeroed, newest index half rewritten", func(files map[string][]byte) {
			// entry synced-newest (ahead of the log) is still there
			clear(files[newestLog][b.syncedEnd:])
			clear(files[newestIdx][fileHeaderSize+(b.synced+1-int(b.newest))*indexEntrySize:])
		}},
		{"sealed index rebuilt, temporary file left", func(files map[string][]byte) {
			files[sealedIdx] = want[sealedIdx]
			files[sealedIdx+".tmp"] = want[sealedIdx][:40]
		}},
		{"sealed index temporary file written, not renamed", func(files map[string][]byte) {
			files[sealedIdx+".tmp"] = want[sealedIdx]
		}},
		{"everything but the newest index", func(files map[string][]byte) {
			for name, b := range want {
				if name != newestIdx {
					files[name] = b
				}
			}
		}},
	}
	for _, c := range interrupted {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string][]byte{}
			for name, b := range before {
				files[name] = slices.Clone(b)
			}
			c.state(files)
			for name, b := range files {
				plWrite(t, filepath.Join(dir, name), b)
			}
			l := plMustOpen(t, dir)
			plCheckRecords(t, l, b.synced)
			plClose(t, l)
			got := plSnapshot(t, dir)
			for name := range got {
				if filepath.Ext(name) == ".tmp" {
					delete(got, name) // a leftover temporary file is harmless
				}
			}
			plSameFiles(t, "after interrupted recovery", got, want)
		})
	}
}

// TestPowerLossUnsyncedPageReachedDiskBeforeAnEarlierOne: the kernel
// writes dirty pages of the mapping back in no particular order, and a
// disk may persist them in another, so a power cut can keep a later
// unsynced page and lose an earlier one. That leaves a hole after the last
// synced record followed by valid (never acknowledged) records. None of it
// was synced: it is a torn tail, not corruption.
func TestPowerLossUnsyncedPageReachedDiskBeforeAnEarlierOne(t *testing.T) {
	b := plBuild(t, 310, 50) // the unsynced records run past the first page of the newest .log
	dir := plCopyDir(t, b.dir)
	path := plPath(dir, b.newest, ".log")
	file := plRead(t, path)
	last := b.records[len(b.records)-1]
	if b.syncedEnd >= pageSize || last.position < pageSize+recordHeaderSize {
		t.Fatalf("want the synced end in the first page and whole unsynced records in the second: synced end %d, last record at %d", b.syncedEnd, last.position)
	}
	// The first page still holds what was synced: the unsynced bytes in it
	// never reached the disk. The second page did.
	clear(file[b.syncedEnd:pageSize])
	plWrite(t, path, file)

	l, err := plOpen(t, dir)
	if err != nil {
		t.Fatalf("OpenLog after a power cut that kept a later unsynced page and lost an earlier one: %v", err)
	}
	plCheckRecords(t, l, b.synced)
	plAppend(t, l, b.synced, 1)
	plClose(t, l)
	plExpectRecovered(t, dir, b.synced+1)
}

// plSyncRecorder counts fdatasyncs per file name.
type plSyncRecorder struct {
	mu     sync.Mutex
	synced map[string]int
}

func (r *plSyncRecorder) hooks() *faultHooks {
	return &faultHooks{sync: func(path string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.synced[filepath.Base(path)]++
		return nil
	}}
}

func (r *plSyncRecorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced = map[string]int{}
}

func (r *plSyncRecorder) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced[name]
}

// TestPowerLossSyncCoversSealedSegmentsUnderSyncNone: Sync "makes every
// record appended so far durable, whatever the policy", and Close "makes
// everything durable". Under SyncNone a rotation does not sync the segment
// it seals, so Sync and Close must.
func TestPowerLossSyncCoversSealedSegmentsUnderSyncNone(t *testing.T) {
	for _, op := range []string{"Sync", "Close"} {
		t.Run(op, func(t *testing.T) {
			var rec plSyncRecorder
			rec.reset()
			opts := testOptions()
			opts.Sync = SyncNone
			opts.faults = rec.hooks()
			dir := t.TempDir()
			l, err := OpenLog(dir, plSubject, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			plAppend(t, l, 0, 200) // several segments
			rec.reset()
			if op == "Sync" {
				err = l.Sync()
			} else {
				err = l.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, base := range segmentBases(t, dir) {
				if name := segmentFileName(base, ".log"); rec.count(name) == 0 {
					t.Errorf("%s returned without syncing %s, which holds records appended under SyncNone", op, name)
				}
			}
		})
	}
}

// TestPowerLossDurableOffsetAfterOpenIsSynced: a writer that died (or
// whose syncs failed) leaves records in the page cache that never reached
// the disk. OpenLog reads them back through the page cache, so before it
// calls them durable it must fdatasync them; otherwise a power cut after
// the reopen loses records below DurableOffset, and their offsets are
// handed out again to different records.
func TestPowerLossDurableOffsetAfterOpenIsSynced(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.Sync = SyncNone
	writer, err := OpenLog(dir, plSubject, opts)
	if err != nil {
		t.Fatal(err)
	}
	plAppend(t, writer, 0, 200) // several segments, none synced: the writer "dies" here
	defer writer.Close()
	// A writer that died has no background work left: let the rotation
	// pipeline finish what it started, as a crash would have stopped it,
	// rather than race the reopen's recovery for the same files.
	waitPipelineIdle(writer)

	var rec plSyncRecorder
	rec.reset()
	opts = testOptions()
	opts.faults = rec.hooks()
	l, err := OpenLog(dir, plSubject, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.DurableOffset() != 200 {
		t.Fatalf("durable offset %d", l.DurableOffset())
	}
	for _, base := range segmentBases(t, dir) {
		if name := segmentFileName(base, ".log"); rec.count(name) == 0 {
			t.Errorf("OpenLog reports records of %s durable without syncing it", name)
		}
	}
}

// plSwappedSegment is the .log of a segment swapped in at offset
// b.total by a rotation, with records b.total..b.total+n-1 as plAppend
// writes them, in a file of size bytes.
func plSwappedSegment(b *plBase, n, size int) []byte {
	file := make([]byte, size)
	encodeFileHeader(file, logMagic, uint64(b.total))
	at := fileHeaderSize
	for i := b.total; i < b.total+n; i++ {
		headers, data := headersFor(i), payload(i)
		headersLen := encodedHeadersSize(headers)
		end := at + recordSize(headersLen, len(data))
		encodeRecord(file[at:end], uint64(i), plTimestamp(i), headers, headersLen, data)
		at = end
	}
	return file
}

// TestPowerLossWithAPreparedSegment: the states a power cut (or a kill)
// can leave the pipeline's segment in (rotation.go). Prepared and never
// swapped in, or swapped in with its header lost, it holds nothing that
// was called durable: it is deleted. Swapped in with its header on disk,
// it is given its name and serves what reached the disk. Either way the
// result is stable.
func TestPowerLossWithAPreparedSegment(t *testing.T) {
	b := plBuild(t, 310, 6)
	indexHeader := make([]byte, pageSize)
	encodeFileHeader(indexHeader, indexMagic, uint64(b.total))
	swapped := plSwappedSegment(b, 3, 4*pageSize)
	headerLost := plSwappedSegment(b, 30, 4*pageSize) // records past the first page
	clear(headerLost[:pageSize])
	base := segmentFileName(uint64(b.total), "")
	cases := []struct {
		name  string
		files map[string][]byte // written into a copy of the log
		want  int               // records after recovery
		named bool              // the segment is kept under its name
	}{
		{"prepared, never swapped in", map[string][]byte{preparedLogName: make([]byte, pageSize), preparedIndexName: make([]byte, pageSize)}, b.total, false},
		{"prepared .log without its .idx", map[string][]byte{preparedLogName: make([]byte, pageSize)}, b.total, false},
		{"prepared .idx without its .log", map[string][]byte{preparedIndexName: make([]byte, pageSize)}, b.total, false},
		{"swapped in, records on disk", map[string][]byte{preparedLogName: swapped, preparedIndexName: indexHeader}, b.total + 3, true},
		{"swapped in, nothing after its header", map[string][]byte{preparedLogName: swapped[:fileHeaderSize], preparedIndexName: indexHeader}, b.total, true},
		{"swapped in, its header lost, later records on disk", map[string][]byte{preparedLogName: headerLost, preparedIndexName: indexHeader}, b.total, false},
		{"committed up to its .idx rename", map[string][]byte{preparedLogName: swapped, base + ".idx": indexHeader}, b.total + 3, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := plCopyDir(t, b.dir)
			for name, content := range c.files {
				plWrite(t, filepath.Join(dir, name), content)
			}
			l := plMustOpen(t, dir)
			plCheckRecords(t, l, c.want)
			wantSegments := b.segments
			if c.named {
				wantSegments++
			}
			if got := l.Info().Segments; got != wantSegments {
				t.Fatalf("%d segments, want %d", got, wantSegments)
			}
			plClose(t, l)
			if left := preparedFiles(t, dir); len(left) != 0 {
				t.Fatalf("%v left after recovery", left)
			}
			if _, err := os.Stat(filepath.Join(dir, base+".log")); c.named != (err == nil) {
				t.Fatalf("%s.log: %v, want named %v", base, err, c.named)
			}
			plExpectRecovered(t, dir, c.want)
		})
	}
}

// TestPowerLossDuringNewSubjectCreation: a new subject's directory gets
// its name only once what it holds is durable. The states a power cut can
// leave: before the rename, a ".new-" directory in any state, which
// OpenStore removes (no subject); after it, the directory as it was last
// synced, which holds the first record (the subject with it).
func TestPowerLossDuringNewSubjectCreation(t *testing.T) {
	const subject = "power.cut"
	data := []byte("first record of a new subject")
	var mu sync.Mutex
	synced := map[string][]byte{}   // file name → content at its last sync
	var pageCache map[string][]byte // the .new- directory at the rename
	opts := testOptions()
	opts.faults = &faultHooks{
		sync: func(path string) error {
			if strings.Contains(path, ".new-") {
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				mu.Lock()
				synced[filepath.Base(path)] = b
				mu.Unlock()
			}
			return nil
		},
		path: func(op, path string) error {
			if op == "rename" && strings.HasPrefix(filepath.Base(path), ".new-") {
				mu.Lock()
				pageCache = plSnapshot(t, path)
				mu.Unlock()
			}
			return nil
		},
	}
	s := openTestStore(t, t.TempDir(), opts)
	if _, _, err := storeAppend(s, subject, 0, nil, data); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if pageCache == nil {
		t.Fatal("the rename hook never ran")
	}
	logName := segmentFileName(0, ".log")
	// The subject file is written with its own fsync (writeFileSync).
	durable := map[string][]byte{subjectFileName: pageCache[subjectFileName], logName: synced[logName]}
	for _, c := range []struct {
		name   string
		dir    string // the name the directory has after the cut
		files  map[string][]byte
		listed bool
	}{
		{"before the rename, all of it on disk", ".new-123", pageCache, false},
		{"before the rename, what was synced", ".new-123", durable, false},
		{"before the rename, the subject file alone", ".new-123", map[string][]byte{subjectFileName: pageCache[subjectFileName]}, false},
		{"after the rename, what was synced", subjectDirName(subject), durable, true},
		{"after the rename, with its index", subjectDirName(subject), pageCache, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, c.dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for name, content := range c.files {
				if content == nil {
					t.Fatalf("%s was never synced", name)
				}
				plWrite(t, filepath.Join(dir, name), content)
			}
			s := openTestStore(t, root, testOptions())
			if s.Has(subject) != c.listed {
				t.Fatalf("listed %v, want %v", s.Has(subject), c.listed)
			}
			if !c.listed {
				if entries, _ := os.ReadDir(root); len(entries) != 0 {
					t.Fatalf("%d entries left in the data dir", len(entries))
				}
				return
			}
			storeReadOne(t, s, subject, string(data))
		})
	}
}

// waitPipelineIdle returns once l's rotation pipeline has no work under
// way and none asked for.
func waitPipelineIdle(l *Log) {
	for {
		l.pipeline.mu.Lock()
		running := l.pipeline.running
		l.pipeline.mu.Unlock()
		if running == nil {
			return
		}
		<-running
	}
}
