package logstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The fuzz targets. `go test -run Fuzz ./logstore` runs their seeds (the
// f.Add ones and testdata/fuzz/<name>/*); `make fuzz` fuzzes the first two.
// The seed files that TestFuzzSeeds generates are named "seed-*"; anything
// else in testdata/fuzz was found by the fuzzer and is a bug.

// ---- FuzzDecodeRecord ----

// fzHeaderBlockCanonical parses a header block with the strict rules the
// encoder follows: every uvarint minimal, at least one name, names strictly
// increasing, nothing after. A block is what encodeHeaders writes for some
// headers exactly when this holds (the empty block included).
func fzHeaderBlockCanonical(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 || n != uvarintSize(v) || v > uint64(len(b)-n) {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	count, ok := next()
	if !ok || count == 0 {
		return false
	}
	var prev string
	for i := uint64(0); i < count; i++ {
		n, ok := next()
		if !ok {
			return false
		}
		name := string(b[:n])
		b = b[n:]
		if i > 0 && name <= prev {
			return false
		}
		prev = name
		values, ok := next()
		if !ok {
			return false
		}
		for j := uint64(0); j < values; j++ {
			if n, ok = next(); !ok {
				return false
			}
			b = b[n:]
		}
	}
	return len(b) == 0
}

// fzCheckHeaderBlock checks the invariants of decodeHeaders on block.
func fzCheckHeaderBlock(t *testing.T, block []byte) (Headers, bool) {
	t.Helper()
	headers, err := decodeHeaders(block)
	if n := headerPayloadBytes(block); n < 0 || n > len(block) {
		t.Fatalf("headerPayloadBytes %d for %d bytes", n, len(block))
	}
	if err != nil {
		if headers != nil {
			t.Fatalf("decodeHeaders returned headers with %v", err)
		}
		if fzHeaderBlockCanonical(block) {
			t.Fatalf("a canonical header block was refused: %v", err)
		}
		return nil, false
	}
	// Nothing in the result that the input does not pay for: every name
	// and every value costs at least one byte of length.
	values := 0
	for _, v := range headers {
		values += len(v)
	}
	if total := PayloadSize(headers, nil); total > len(block) || len(headers)+values > len(block) {
		t.Fatalf("%d bytes decode to %d names, %d values, %d bytes", len(block), len(headers), values, total)
	}
	if got := headerPayloadBytes(block); got != PayloadSize(headers, nil) {
		t.Fatalf("headerPayloadBytes %d, decoded headers hold %d", got, PayloadSize(headers, nil))
	}
	encoded := encodeHeaders(nil, headers)
	if len(encoded) != encodedHeadersSize(headers) {
		t.Fatalf("encodeHeaders wrote %d bytes, encodedHeadersSize says %d", len(encoded), encodedHeadersSize(headers))
	}
	canonical := fzHeaderBlockCanonical(block)
	if canonical != bytes.Equal(encoded, block) {
		t.Fatalf("canonical=%v, but the block %q re-encodes as %q", canonical, block, encoded)
	}
	if again, err := decodeHeaders(encoded); err != nil || !goldenHeadersEqual(again, headers) {
		t.Fatalf("re-encoded headers decode as %v, %v; want %v", again, err, headers)
	}
	return headers, canonical
}

func FuzzDecodeRecord(f *testing.F) {
	for _, seed := range fzDecodeRecordSeeds() {
		f.Add(seed.args[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		view, status, reason := decodeRecord(src)
		switch status {
		case decodeEnd:
			if !(len(src) < 4 && allZero(src) || len(src) >= 4 && binary.LittleEndian.Uint32(src) == 0) {
				t.Fatalf("end reported for % x", src[:min(len(src), 8)])
			}
		case decodeBad:
			if reason == "" {
				t.Fatal("a bad record without a reason")
			}
		case decodeOK:
			length := binary.LittleEndian.Uint32(src)
			if view.size != 8+int(length) || view.size > len(src) || view.size != recordSize(len(view.headers), len(view.Data)) {
				t.Fatalf("size %d, length %d, %d bytes, %d+%d", view.size, length, len(src), len(view.headers), len(view.Data))
			}
			if cap(view.headers) != len(view.headers) || cap(view.Data) != len(view.Data) {
				t.Fatal("decoded slices reach past the record")
			}
			if crc32.Checksum(src[8:view.size], crc32.MakeTable(crc32.Castagnoli)) != binary.LittleEndian.Uint32(src[4:]) {
				t.Fatal("a record with a bad checksum decoded")
			}
			if view.Offset != binary.LittleEndian.Uint64(src[8:]) || view.Timestamp != int64(binary.LittleEndian.Uint64(src[16:])) {
				t.Fatal("offset or timestamp misread")
			}
			headers, ok := fzCheckHeaderBlock(t, view.headers)
			if !ok {
				break
			}
			if view.PayloadSize() != PayloadSize(headers, view.Data) {
				t.Fatalf("payload size %d, want %d", view.PayloadSize(), PayloadSize(headers, view.Data))
			}
			// Re-encode the record from its decoded fields.
			hlen := encodedHeadersSize(headers)
			dst := make([]byte, recordSize(hlen, len(view.Data)))
			encodeRecord(dst, view.Offset, view.Timestamp, headers, hlen, view.Data)
			if fzHeaderBlockCanonical(view.headers) {
				if !bytes.Equal(dst, src[:view.size]) {
					t.Fatalf("record re-encodes differently:\n got  %q\n want %q", dst, src[:view.size])
				}
			} else {
				again, status, _ := decodeRecord(dst)
				if status != decodeOK || again.Offset != view.Offset || again.Timestamp != view.Timestamp || !bytes.Equal(again.Data, view.Data) {
					t.Fatal("re-encoded record does not decode to the same fields")
				}
			}
		default:
			t.Fatalf("status %d", status)
		}

		fzCheckHeaderBlock(t, src)

		// The other decoders of raw bytes must not panic either.
		if base, err := decodeFileHeader(src, logMagic); err == nil {
			if len(src) < fileHeaderSize || base != binary.LittleEndian.Uint64(src[16:]) {
				t.Fatal("file header misread")
			}
		}
		decodeFileHeader(src, indexMagic)
		if at := findValidRecord(src, 0, math.MinInt64); at >= 0 {
			if _, status, _ := decodeRecord(src[at:]); status != decodeOK {
				t.Fatalf("findValidRecord found an invalid record at %d", at)
			}
		}
		if len(src) >= indexEntrySize {
			e := readIndexEntry(src)
			var b [indexEntrySize]byte
			putIndexEntry(b[:], e)
			if !bytes.Equal(b[:], src[:indexEntrySize]) {
				t.Fatal("index entry does not round-trip")
			}
		}
	})
}

// ---- FuzzRecoverSegment ----

// The template log of FuzzRecoverSegment: a sealed segment of three large
// records, then the newest segment, at base offset 3, of five small ones.
// Everything is fixed, so that seeds can refer to its bytes.
const (
	fzNewestBase    = 3
	fzRecords       = 8
	fzMaxFuzzedSize = 64 << 10
)

func fzRecord(i int) (int64, Headers, []byte) {
	ts := int64(1_000_000 + i*10)
	if i < fzNewestBase {
		var h Headers
		if i == 1 {
			h = Headers{"k": {"v"}}
		}
		size := 5000
		if i == fzNewestBase-1 {
			size = 6250 // the segment ends 12 bytes short of full: the next record rotates
		}
		return ts, h, bytes.Repeat([]byte{byte('A' + i)}, size)
	}
	var h Headers
	if i%2 == 1 {
		h = Headers{"n": {fmt.Sprint(i)}, "multi": {"x", ""}}
	}
	return ts, h, []byte(fmt.Sprintf("small record %d", i))
}

func fzOptions() Options {
	return Options{
		SegmentBytes:        16 << 10,
		InitialSegmentBytes: 4 << 10,
		Sync:                SyncNone,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

type fzTemplate struct {
	files     map[string][]byte
	positions []int64 // of the newest segment's records
	end       int64   // where they end
}

var (
	fzTemplateOnce sync.Once
	fzTemplateVal  *fzTemplate
	fzTemplateErr  error
)

func fzBuildTemplate() (*fzTemplate, error) {
	dir, err := os.MkdirTemp("", "voik-fuzz-template-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	l, err := OpenLog(dir, "fuzz", fzOptions())
	if err != nil {
		return nil, err
	}
	for i := 0; i < fzRecords; i++ {
		ts, h, data := fzRecord(i)
		if off, _, err := l.Append(ts, h, data); err != nil || off != uint64(i) {
			l.Close()
			return nil, fmt.Errorf("append %d: %d, %v", i, off, err)
		}
	}
	if err := l.Close(); err != nil {
		return nil, err
	}
	tpl := &fzTemplate{files: map[string][]byte{}}
	for _, base := range []uint64{0, fzNewestBase} {
		for _, ext := range []string{".log", ".idx"} {
			name := segmentFileName(base, ext)
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			tpl.files[name] = b
		}
	}
	if len(tpl.files) != 4 {
		return nil, errors.New("template: unexpected files")
	}
	tpl.positions, tpl.end = rcvWalk(tpl.files[segmentFileName(fzNewestBase, ".log")])
	if len(tpl.positions) != fzRecords-fzNewestBase {
		return nil, fmt.Errorf("template: newest segment holds %d records", len(tpl.positions))
	}
	return tpl, nil
}

func fzGetTemplate(t testing.TB) *fzTemplate {
	fzTemplateOnce.Do(func() { fzTemplateVal, fzTemplateErr = fzBuildTemplate() })
	if fzTemplateErr != nil {
		t.Fatal(fzTemplateErr)
	}
	return fzTemplateVal
}

// fzSplice applies the fuzz input to the newest segment's files. keep
// chooses how many of its records stay intact: the input goes right after
// them. mode&3 chooses what follows the input: 0 zeros (the file keeps its
// size), 1 the original bytes (the input overwrites in place), 2 nothing
// (the file ends with the input). mode>>2&3 chooses the newest index: 0 as
// written, 1 missing, 2 empty, 3 the input after a valid header.
func fzSplice(tpl *fzTemplate, keep, mode byte, input []byte) (log, idx []byte, position int64, k int) {
	k = int(keep) % (len(tpl.positions) + 1)
	position = tpl.end
	if k < len(tpl.positions) {
		position = tpl.positions[k]
	}
	original := tpl.files[segmentFileName(fzNewestBase, ".log")]
	switch mode & 3 {
	case 0, 3:
		log = slices.Clone(original)
		clear(log[position:])
		copy(log[position:], input)
	case 1:
		log = slices.Clone(original)
		copy(log[position:], input)
	case 2:
		log = append(slices.Clone(original[:position]), input...)
	}
	idx = tpl.files[segmentFileName(fzNewestBase, ".idx")]
	switch mode >> 2 & 3 {
	case 1:
		idx = nil
	case 2:
		idx = []byte{}
	case 3:
		idx = append(slices.Clone(idx[:fileHeaderSize]), input...)
	}
	return log, idx, position, k
}

// fzExpect is what recovery must make of the newest segment's bytes, by
// the rules of the package documentation, computed by brute force: the
// records that are valid and in sequence from the start, and whether a
// valid record (an offset that could follow) lies anywhere after them.
type fzExpect struct {
	count   int
	end     int64 // where the valid records end
	corrupt bool
	views   []RecordView
}

func fzExpected(log []byte, base uint64) fzExpect {
	var e fzExpect
	e.end = fileHeaderSize
	var last int64
	for e.end < int64(len(log)) {
		view, status, _ := decodeRecord(log[e.end:])
		if status != decodeOK || view.Offset != base+uint64(e.count) || view.Timestamp < last {
			break
		}
		e.views = append(e.views, view)
		last = view.Timestamp
		e.end += int64(view.size)
		e.count++
	}
	tail := log[e.end:]
	minOffset := base + uint64(e.count)
	// A record after the first bad one sits at least recordHeaderSize
	// bytes per record further on, which bounds the offsets it can hold.
	maxOffset := minOffset + uint64(len(tail))/recordHeaderSize
	// Timestamps never go back, so a record after the bad one cannot be
	// older than the last good one.
	minTimestamp := int64(math.MinInt64)
	if e.count > 0 {
		minTimestamp = last
	}
	for at := range tail {
		view, status, _ := decodeRecord(tail[at:])
		if status != decodeOK || view.Offset < minOffset || view.Offset > maxOffset || view.Timestamp < minTimestamp {
			continue
		}
		// Zeros from the end of the good records to the end of their page,
		// with the record past that page: a page lost in a power cut, a torn
		// tail.
		pageEnd := (e.end/pageSize + 1) * pageSize
		lost := e.end+int64(at) >= pageEnd && !slices.ContainsFunc(log[e.end:pageEnd], func(b byte) bool { return b != 0 })
		e.corrupt = !lost
		break
	}
	return e
}

func fzWriteDir(t *testing.T, tpl *fzTemplate, log, idx []byte) string {
	dir := t.TempDir()
	for name, b := range tpl.files {
		if base, ext, _ := parseSegmentName(name); base == fzNewestBase {
			if ext == ".log" {
				b = log
			} else if b = idx; b == nil {
				continue
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// FuzzRecoverSegment writes and syncs real files on every input, so its
// speed is the file system's: TMPDIR=/dev/shm runs it tens of times faster
// than a busy disk.
func FuzzRecoverSegment(f *testing.F) {
	for _, seed := range fzRecoverSegmentSeeds(fzGetTemplate(f)) {
		f.Add(seed.args[0].(byte), seed.args[1].(byte), seed.args[2].([]byte))
	}
	f.Fuzz(func(t *testing.T, keep, mode byte, input []byte) {
		if len(input) > fzMaxFuzzedSize {
			t.Skip("input larger than a segment")
		}
		tpl := fzGetTemplate(t)
		log, idx, _, k := fzSplice(tpl, keep, mode, input)
		want := fzExpected(log, fzNewestBase)
		if want.count < k {
			t.Fatalf("oracle: %d records, %d kept intact", want.count, k)
		}
		dir := fzWriteDir(t, tpl, log, idx)
		logPath := filepath.Join(dir, segmentFileName(fzNewestBase, ".log"))
		opts := fzOptions()

		l, err := OpenLog(dir, "fuzz", opts)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("OpenLog: %v (not ErrCorrupt)", err)
		}
		if l == nil {
			t.Fatalf("OpenLog returned no log: %v", err)
		}
		defer l.Close()
		if (err != nil) != want.corrupt {
			t.Fatalf("OpenLog: %v; a valid record after the bad one: %v", err, want.corrupt)
		}
		end := uint64(fzNewestBase + want.count)
		t.Logf("keep %d, mode %d: %d records recovered, corrupt %v, err %v", k, mode, end, want.corrupt, err)
		if l.FirstOffset() != 0 || l.EndOffset() != end {
			t.Fatalf("first %d end %d, want 0 %d (err %v)", l.FirstOffset(), l.EndOffset(), end, err)
		}
		// The records served: a contiguous prefix, the originals where the
		// input did not reach, otherwise valid records from the input.
		records, rerr := l.Read(0, fzRecords+100)
		if rerr != nil || uint64(len(records)) != end {
			t.Fatalf("read: %d records, %v; want %d", len(records), rerr, end)
		}
		for i, r := range records {
			var ts int64
			var h Headers
			var data []byte
			if i < fzNewestBase+k {
				ts, h, data = fzRecord(i)
			} else {
				v := want.views[i-fzNewestBase]
				ts, data = v.Timestamp, v.Data
				h, _ = decodeHeaders(v.headers)
			}
			if r.Offset != uint64(i) || r.Timestamp != ts || !bytes.Equal(r.Data, data) || !goldenHeadersEqual(r.Headers, h) {
				t.Fatalf("record %d: %+v", i, r)
			}
		}
		after, ferr := os.ReadFile(logPath)
		if ferr != nil {
			t.Fatal(ferr)
		}
		if want.corrupt {
			if !bytes.Equal(after, log) {
				t.Fatal("recovery changed a corrupt segment")
			}
			if _, _, err := l.Append(0, nil, []byte("x")); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("append to a corrupt log: %v", err)
			}
		} else {
			if len(after) != len(log) || !bytes.Equal(after[:want.end], log[:want.end]) {
				t.Fatal("recovery changed the valid records or the file size")
			}
			if i := lastNonZero(after[want.end:]); i >= 0 {
				t.Fatalf("torn tail not zeroed: byte %d", want.end+int64(i))
			}
		}
		l.Close()

		// Idempotent: the second open finds the same log.
		l2, err2 := OpenLog(dir, "fuzz", opts)
		if (err2 != nil) != (err != nil) || l2 == nil || l2.EndOffset() != end {
			t.Fatalf("second open: %v; first: %v", err2, err)
		}
		defer l2.Close()
		if err != nil {
			return
		}
		// A log recovered without error takes appends where it ends.
		off, _, aerr := l2.Append(0, Headers{"after": {"recovery"}}, []byte("appended"))
		if aerr != nil || off != end {
			t.Fatalf("append after recovery: offset %d (want %d), %v", off, end, aerr)
		}
		l2.Close()
		l3, err3 := OpenLog(dir, "fuzz", opts)
		if err3 != nil || l3.EndOffset() != end+1 {
			t.Fatalf("third open: %v", err3)
		}
		defer l3.Close()
		got, rerr := l3.Read(end, 1)
		if rerr != nil || len(got) != 1 || string(got[0].Data) != "appended" {
			t.Fatalf("appended record: %v, %v", got, rerr)
		}
	})
}

// ---- FuzzSubjectDirName ----

func FuzzSubjectDirName(f *testing.F) {
	for _, s := range subjectDirCases() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		if subject == "" {
			return // not a valid subject
		}
		name := checkSubjectDirName(t, subject)
		// Another subject with the same name would have to escape alike:
		// a one-byte change must give another name.
		other := []byte(subject)
		other[len(other)-1] ^= 1
		if subjectDirName(string(other)) == name {
			t.Fatalf("%q and %q share %q", subject, other, name)
		}
	})
}

// ---- seed corpora ----

// fzSeed is one seed file of testdata/fuzz/<target>/.
type fzSeed struct {
	name string
	args []any
}

func fzMarshal(args []any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch a := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", a)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", a)
		default:
			panic(fmt.Sprintf("fuzz seed of type %T", a))
		}
	}
	return []byte(b.String())
}

func fzEncode(offset uint64, ts int64, h Headers, data []byte) []byte {
	hlen := encodedHeadersSize(h)
	b := make([]byte, recordSize(hlen, len(data)))
	encodeRecord(b, offset, ts, h, hlen, data)
	return b
}

func fzDecodeRecordSeeds() []fzSeed {
	valid := fzEncode(42, 1_700_000_000_000_000_000, Headers{"Nats-Msg-Id": {"1"}, "multi": {"b", "a", ""}, "Empty": {}}, []byte("payload"))
	plain := fzEncode(7, 5, nil, []byte{0, 1, 2, 0xff})
	badCRC := slices.Clone(valid)
	badCRC[5] ^= 1
	resign := func(b []byte) []byte { rcvResign(b); return b }
	withBlock := func(block []byte) []byte {
		b := make([]byte, recordSize(len(block), 3))
		binary.LittleEndian.PutUint64(b[8:], 1)
		binary.LittleEndian.PutUint32(b[24:], uint32(len(block)))
		copy(b[recordHeaderSize:], block)
		copy(b[recordHeaderSize+len(block):], "abc")
		binary.LittleEndian.PutUint32(b[0:], uint32(len(b)-8))
		return resign(b)
	}
	hlenTooBig := slices.Clone(plain)
	binary.LittleEndian.PutUint32(hlenTooBig[24:], 1000)
	resign(hlenTooBig)
	lengthBelowMin := make([]byte, 40)
	binary.LittleEndian.PutUint32(lengthBelowMin, recordFixedBody-1)
	huge := slices.Clone(valid)
	binary.LittleEndian.PutUint32(huge, 0xffffffff)
	golden := []byte{}
	for i, r := range goldenRecords {
		golden = append(golden, fzEncode(uint64(i), r.timestamp, r.headers, r.data)...)
	}
	seeds := []fzSeed{
		{"valid", []any{valid}},
		{"valid-no-headers", []any{plain}},
		{"valid-then-zeros", []any{append(slices.Clone(valid), make([]byte, 16)...)}},
		{"golden-records", []any{golden}},
		{"truncated", []any{valid[:len(valid)-1]}},
		{"truncated-header", []any{valid[:10]}},
		{"zero-length", []any{make([]byte, 32)}},
		{"three-bytes", []any{[]byte{1, 0, 0}}},
		{"empty", []any{[]byte{}}},
		{"length-below-minimum", []any{lengthBelowMin}},
		{"huge-length", []any{huge}},
		{"bad-crc", []any{badCRC}},
		{"hlen-past-record", []any{hlenTooBig}},
		{"headers-count-too-big", []any{withBlock([]byte("\x7f\x01a\x00"))}},
		{"headers-out-of-order", []any{withBlock([]byte("\x02\x01b\x00\x01a\x00"))}},
		{"headers-trailing", []any{withBlock([]byte("\x01\x01a\x00\x00"))}},
		{"headers-value-count-too-big", []any{withBlock([]byte("\x01\x01a\x09\x01x"))}},
		{"headers-zero-count", []any{withBlock([]byte("\x00"))}},
		{"headers-overlong-uvarint", []any{withBlock([]byte("\x01\x81\x00a\x00"))}},
		{"header-block", []any{encodeHeaders(nil, Headers{"a": {"1", "2"}, "b": {}})}},
		{"file-header", []any{rcvHeaderOnly(logMagic, 9, fileHeaderSize)}},
	}
	return seeds
}

func fzRecoverSegmentSeeds(tpl *fzTemplate) []fzSeed {
	n := byte(len(tpl.positions)) // keep all records
	log := tpl.files[segmentFileName(fzNewestBase, ".log")]
	record := func(k int) []byte { // the k-th record of the newest segment, as written
		end := tpl.end
		if k+1 < len(tpl.positions) {
			end = tpl.positions[k+1]
		}
		return slices.Clone(log[tpl.positions[k]:end])
	}
	next := uint64(fzRecords)
	nextRecord := fzEncode(next, 2_000_000, Headers{"new": {"1"}}, []byte("a record from the input"))
	badCRC := record(2)
	badCRC[6] ^= 0xff
	timeBack := fzEncode(next, 1, nil, []byte("earlier"))
	junk := []byte("\x13\x37garbage that is not a record\xff\xfe\x01")
	seeds := []fzSeed{
		{"clean", []any{n, byte(0), []byte{}}},
		{"torn-half-record", []any{n - 1, byte(0), record(len(tpl.positions) - 1)[:20]}},
		{"garbage-tail", []any{n, byte(0), junk}},
		{"huge-length-tail", []any{n, byte(0), []byte("\xff\xff\xff\x7f\x01\x02\x03\x04")}},
		{"next-record-valid", []any{n, byte(0), nextRecord}},
		{"next-record-twice", []any{n, byte(0), append(slices.Clone(nextRecord), fzEncode(next+1, 2_000_001, nil, nil)...)}},
		{"garbage-then-valid-record", []any{n, byte(0), append(slices.Clone(junk), nextRecord...)}},
		{"skipped-offset", []any{n, byte(0), fzEncode(next+1, 2_000_000, nil, []byte("skip"))}},
		{"timestamp-back", []any{n, byte(0), timeBack}},
		{"bad-length-then-good", []any{byte(1), byte(1), []byte("\xff\xff\xff\xff")}},
		{"zero-length-then-good", []any{byte(1), byte(1), []byte{0, 0, 0, 0}}},
		{"bad-crc-then-good", []any{byte(2), byte(1), badCRC[:8]}},
		{"bad-crc-last", []any{n - 1, byte(1), badCRC[:8]}},
		{"truncated-file-at-record", []any{byte(2), byte(2), []byte{}}},
		{"truncated-file-in-record", []any{byte(2), byte(2), record(2)[:10]}},
		{"truncated-file-garbage", []any{n, byte(2), junk}},
		{"no-records", []any{byte(0), byte(0), []byte{}}},
		{"index-missing", []any{n, byte(4), []byte{}}},
		{"index-empty", []any{n - 2, byte(8), []byte{}}},
		{"index-garbage", []any{n, byte(12), junk}},
		{"index-garbage-torn", []any{n - 1, byte(13), junk}},
	}
	return seeds
}

// TestFuzzSeeds keeps the committed seed corpora in step with their
// generators: with -update it writes testdata/fuzz/<target>/seed-*, and
// otherwise checks that every generated seed is there, unchanged.
func TestFuzzSeeds(t *testing.T) {
	targets := map[string][]fzSeed{
		"FuzzDecodeRecord":   fzDecodeRecordSeeds(),
		"FuzzRecoverSegment": fzRecoverSegmentSeeds(fzGetTemplate(t)),
	}
	for target, seeds := range targets {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, seed := range seeds {
			path := filepath.Join(dir, "seed-"+seed.name)
			content := fzMarshal(seed.args)
			if *update {
				if err := os.WriteFile(path, content, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("%s: missing or stale (%v); regenerate with go test -run TestFuzzSeeds -update ./logstore", path, err)
			}
		}
	}
}
