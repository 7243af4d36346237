package logstore

// This file is the single definition of voik's on-disk format. docs/storage.md
// repeats the diagrams; change both together and bump formatVersion.
//
// All integers are little-endian. Checksums are CRC-32C (Castagnoli).
//
// # File header
//
// Every .log and .idx file starts with the same 32-byte header:
//
//	 0               8       10      12              16                              24      28      32
//	+---------------+-------+-------+---------------+-------------------------------+-------+-------+
//	| magic (8)     | vers. | zero  | zero (4)      | base offset (uint64)          | zero  | crc32c|
//	+---------------+-------+-------+---------------+-------------------------------+-------+-------+
//
//	magic        "VOIKLOG\n" in a .log file, "VOIKIDX\n" in a .idx file
//	vers.        uint16 format version, currently 1
//	base offset  the offset of the first record the segment holds; also the file name
//	crc32c       checksum of bytes 0..28
//
// # Record (.log, from byte 32 on, back to back)
//
//	 0       4       8                       16                      24      28
//	+-------+-------+-----------------------+-----------------------+-------+----------------+-----------+
//	| length| crc32c| offset (uint64)       | timestamp (int64 ns)  | hlen  | headers (hlen) | data      |
//	+-------+-------+-----------------------+-----------------------+-------+----------------+-----------+
//	        |<------------------------------- length bytes, covered by crc32c -------------------------->|
//
//	length     uint32, bytes after the crc32c field: 20 + hlen + len(data)
//	crc32c     checksum of the length bytes that follow it
//	offset     the record's offset in its subject's log
//	timestamp  receive time, Unix nanoseconds, never lower than the record before it
//	hlen       uint32, length of the encoded headers; 0 when the message had none
//
// A length of zero marks the end of the records: segments are preallocated,
// so the bytes after the last record read as zeros. A record is valid only
// when its length is in bounds, its checksum matches and its offset is the
// one expected at that position.
//
// # Headers (inside a record)
//
//	uvarint count of names, then for each name in bytewise order:
//	uvarint len(name), name, uvarint count of values, then for each value
//	in the order published: uvarint len(value), value
//
// Names are sorted, so the same message always encodes to the same bytes.
//
// # Index entry (.idx, from byte 32 on)
//
//	 0               4               8                               16
//	+---------------+---------------+-------------------------------+
//	| position      | size          | timestamp (int64 ns)          |
//	+---------------+---------------+-------------------------------+
//
//	position   uint32, byte position of the record in the .log file
//	size       uint32, the record's payload bytes: data plus header names and values
//	timestamp  the record's timestamp
//
// Entry i describes offset base+i, so a lookup by offset is one read and a
// lookup by time is a binary search. An all-zero entry ends the index. The
// index is derived data: recovery rebuilds it from the .log when it is
// missing, short or wrong.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	formatVersion = 1

	fileHeaderSize   = 32
	recordHeaderSize = 28 // length, crc, offset, timestamp, hlen
	recordFixedBody  = recordHeaderSize - 8
	indexEntrySize   = 16

	// maxSegmentBytes keeps every position inside an index entry's uint32.
	maxSegmentBytes = math.MaxUint32
)

// Constants that Go cannot declare const; nothing writes them.
var (
	logMagic   = [8]byte{'V', 'O', 'I', 'K', 'L', 'O', 'G', '\n'}
	indexMagic = [8]byte{'V', 'O', 'I', 'K', 'I', 'D', 'X', '\n'}

	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Headers are a message's header names and their values, in the shape of
// net/http and nats.go headers. A name maps to its values in the order they
// were published.
type Headers = map[string][]string

// Record is one stored message.
type Record struct {
	Offset    uint64
	Timestamp int64 // Unix nanoseconds
	Headers   Headers
	Data      []byte
}

// PayloadSize is what voik counts as a record's bytes: its data plus its
// header names and values.
func PayloadSize(headers Headers, data []byte) int {
	n := len(data)
	for name, values := range headers {
		n += len(name)
		for _, v := range values {
			n += len(v)
		}
	}
	return n
}

// encodeFileHeader writes the 32-byte header of a .log or .idx file.
func encodeFileHeader(dst []byte, magic [8]byte, baseOffset uint64) {
	clear(dst[:fileHeaderSize])
	copy(dst[0:8], magic[:])
	binary.LittleEndian.PutUint16(dst[8:10], formatVersion)
	binary.LittleEndian.PutUint64(dst[16:24], baseOffset)
	binary.LittleEndian.PutUint32(dst[28:32], crc32.Checksum(dst[0:28], castagnoli))
}

// decodeFileHeader checks a file header and returns its base offset.
func decodeFileHeader(src []byte, magic [8]byte) (uint64, error) {
	if len(src) < fileHeaderSize {
		return 0, fmt.Errorf("file header: %d bytes, want %d", len(src), fileHeaderSize)
	}
	if !bytes.Equal(src[0:8], magic[:]) {
		return 0, fmt.Errorf("file header: bad magic %q", src[0:8])
	}
	if got, want := binary.LittleEndian.Uint32(src[28:32]), crc32.Checksum(src[0:28], castagnoli); got != want {
		return 0, fmt.Errorf("file header: checksum %08x, want %08x", got, want)
	}
	if v := binary.LittleEndian.Uint16(src[8:10]); v != formatVersion {
		return 0, fmt.Errorf("file header: format version %d, this build reads %d", v, formatVersion)
	}
	return binary.LittleEndian.Uint64(src[16:24]), nil
}

// encodedHeadersSize is the size of the header block for headers.
func encodedHeadersSize(headers Headers) int {
	if len(headers) == 0 {
		return 0
	}
	n := uvarintSize(uint64(len(headers)))
	for name, values := range headers {
		n += uvarintSize(uint64(len(name))) + len(name) + uvarintSize(uint64(len(values)))
		for _, v := range values {
			n += uvarintSize(uint64(len(v))) + len(v)
		}
	}
	return n
}

func uvarintSize(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// encodeHeaders appends the deterministic encoding of headers to dst.
func encodeHeaders(dst []byte, headers Headers) []byte {
	if len(headers) == 0 {
		return dst
	}
	var few [8]string // most messages have a few headers: no allocation for them
	names := few[:0]
	for name := range headers {
		names = append(names, name)
	}
	slices.Sort(names)
	dst = binary.AppendUvarint(dst, uint64(len(names)))
	for _, name := range names {
		values := headers[name]
		dst = binary.AppendUvarint(dst, uint64(len(name)))
		dst = append(dst, name...)
		dst = binary.AppendUvarint(dst, uint64(len(values)))
		for _, v := range values {
			dst = binary.AppendUvarint(dst, uint64(len(v)))
			dst = append(dst, v...)
		}
	}
	return dst
}

// readUvarintLen reads a length and bounds it by what is left, so that a
// hostile or corrupt length never makes the decoder allocate.
func readUvarintLen(src []byte, what string) (int, []byte, error) {
	v, n := binary.Uvarint(src)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: headers: bad %s", ErrCorrupt, what)
	}
	if n != uvarintSize(v) {
		return 0, nil, fmt.Errorf("%w: headers: %s is not in its shortest form", ErrCorrupt, what)
	}
	src = src[n:]
	if v > uint64(len(src)) {
		return 0, nil, fmt.Errorf("%w: headers: %s %d exceeds the %d bytes left", ErrCorrupt, what, v, len(src))
	}
	return int(v), src, nil
}

// parseHeaders is the one parser of a header block. It calls name for
// each name, with the number of its values, and then value for each of
// them; the slices point into block. Counts are bounded by the bytes left
// (every name and value takes at least one byte of length), so a caller
// that allocates by them never allocates more than the input justifies.
// Only the encoding encodeHeaders writes is accepted (shortest uvarints,
// sorted names, no empty block with a zero count, nothing after the
// last value), so one set of headers has one encoding. A block that does
// not parse is stored corruption: the error wraps ErrCorrupt.
func parseHeaders(block []byte, name func(name []byte, values int), value func(value []byte)) error {
	if len(block) == 0 {
		return nil
	}
	count, src, err := readUvarintLen(block, "name count")
	if err != nil {
		return err
	}
	if count == 0 {
		return fmt.Errorf("%w: headers: a block with no names", ErrCorrupt)
	}
	var prev []byte
	for i := 0; i < count; i++ {
		var n, values int
		if n, src, err = readUvarintLen(src, "name length"); err != nil {
			return err
		}
		current := src[:n]
		src = src[n:]
		if i > 0 && bytes.Compare(current, prev) <= 0 {
			return fmt.Errorf("%w: headers: names out of order at %q", ErrCorrupt, current)
		}
		prev = current
		if values, src, err = readUvarintLen(src, "value count"); err != nil {
			return err
		}
		name(current, values)
		for j := 0; j < values; j++ {
			if n, src, err = readUvarintLen(src, "value length"); err != nil {
				return err
			}
			value(src[:n])
			src = src[n:]
		}
	}
	if len(src) != 0 {
		return fmt.Errorf("%w: headers: %d trailing bytes", ErrCorrupt, len(src))
	}
	return nil
}

// decodeHeaders decodes a header block (see parseHeaders).
func decodeHeaders(block []byte) (Headers, error) {
	var headers Headers
	var values []string
	next := 0
	err := parseHeaders(block, func(name []byte, count int) {
		if headers == nil {
			headers = make(Headers)
		}
		values, next = make([]string, count), 0
		headers[string(name)] = values
	}, func(value []byte) {
		values[next] = string(value)
		next++
	})
	if err != nil {
		return nil, err
	}
	return headers, nil
}

// headerPayloadBytes counts the name and value bytes of an encoded header
// block (see parseHeaders) without decoding it. A block that does not
// parse counts as its length.
func headerPayloadBytes(block []byte) int {
	total := 0
	err := parseHeaders(block, func(name []byte, _ int) { total += len(name) }, func(value []byte) { total += len(value) })
	if err != nil {
		return len(block)
	}
	return total
}

// recordSize is the number of bytes a record takes in a .log file.
func recordSize(headersLen, dataLen int) int {
	return recordHeaderSize + headersLen + dataLen
}

// encodeRecord writes a record into dst, which must be exactly
// recordSize(encodedHeadersSize(headers), len(data)) bytes. The length
// field is written last, so that a writer killed mid-copy leaves a zero
// length behind rather than a length with a torn body.
func encodeRecord(dst []byte, offset uint64, timestamp int64, headers Headers, headersLen int, data []byte) {
	head := recordHeaderSize + headersLen
	copy(dst[head:], data)
	encodeRecordHead(dst[:head], offset, timestamp, headers, headersLen, dst[head:])
}

// encodeRecordHead writes the record's fixed header and its header block
// into dst (recordHeaderSize+headersLen bytes), checksummed over them and
// data: dst followed by data is the record, the data not copied. The
// length field is written last.
func encodeRecordHead(dst []byte, offset uint64, timestamp int64, headers Headers, headersLen int, data []byte) {
	binary.LittleEndian.PutUint64(dst[8:16], offset)
	binary.LittleEndian.PutUint64(dst[16:24], uint64(timestamp))
	binary.LittleEndian.PutUint32(dst[24:28], uint32(headersLen))
	encodeHeaders(dst[recordHeaderSize:recordHeaderSize], headers)
	crc := crc32.Update(crc32.Checksum(dst[8:], castagnoli), castagnoli, data)
	binary.LittleEndian.PutUint32(dst[4:8], crc)
	binary.LittleEndian.PutUint32(dst[0:4], uint32(len(dst)+len(data)-8))
}

// RecordView is a record as it lies in the bytes it was decoded from: a
// mapped segment, for readers. Data and the encoded headers point into
// those bytes and are valid only during the callback that received the
// view; copy what must outlive it.
type RecordView struct {
	Offset    uint64
	Timestamp int64
	Data      []byte
	headers   []byte // the encoded header block
	size      int    // bytes the record takes in the .log, framing included
}

// Headers decodes the record's headers; nil when it had none.
func (v RecordView) Headers() (Headers, error) { return decodeHeaders(v.headers) }

// EachHeader calls name for each of the record's header names, in order,
// with the number of its values, then value for each value, without
// decoding them into a map: the slices point into the log, and are valid
// only as long as the view. A block that does not parse is an error
// wrapping ErrCorrupt, as Headers says.
func (v RecordView) EachHeader(name func(name []byte, values int), value func(value []byte)) error {
	return parseHeaders(v.headers, name, value)
}

// HasHeaders says whether the record carries any headers, without decoding them.
func (v RecordView) HasHeaders() bool { return len(v.headers) > 0 }

// PayloadSize is the record's data plus header names and values.
func (v RecordView) PayloadSize() int { return len(v.Data) + headerPayloadBytes(v.headers) }

// Record returns a copy of the record that owns its memory.
func (v RecordView) Record() (Record, error) {
	headers, err := v.Headers()
	if err != nil {
		return Record{}, err
	}
	return Record{Offset: v.Offset, Timestamp: v.Timestamp, Headers: headers, Data: append([]byte(nil), v.Data...)}, nil
}

// decodeStatus says what lies at a position in a .log file.
type decodeStatus int

const (
	decodeOK  decodeStatus = iota
	decodeEnd              // a zero length: preallocated space, no record here
	decodeBad              // anything else that is not a valid record
)

// decodeRecord decodes the record at the start of src, checking its bounds
// and checksum. It never allocates.
func decodeRecord(src []byte) (RecordView, decodeStatus, string) {
	if len(src) < 4 {
		if allZero(src) {
			return RecordView{}, decodeEnd, ""
		}
		return RecordView{}, decodeBad, "truncated length"
	}
	length := binary.LittleEndian.Uint32(src[0:4])
	if length == 0 {
		return RecordView{}, decodeEnd, ""
	}
	if length < recordFixedBody {
		return RecordView{}, decodeBad, fmt.Sprintf("length %d below the minimum %d", length, recordFixedBody)
	}
	if len(src) < 8 || uint64(length) > uint64(len(src)-8) {
		return RecordView{}, decodeBad, fmt.Sprintf("length %d runs past the end of the segment", length)
	}
	body := src[8 : 8+int(length)]
	if got, want := binary.LittleEndian.Uint32(src[4:8]), crc32.Checksum(body, castagnoli); got != want {
		return RecordView{}, decodeBad, fmt.Sprintf("checksum %08x, want %08x", got, want)
	}
	headersLen := binary.LittleEndian.Uint32(body[16:20])
	if uint64(headersLen) > uint64(length-recordFixedBody) {
		return RecordView{}, decodeBad, fmt.Sprintf("header length %d exceeds the record", headersLen)
	}
	rest := body[recordFixedBody:]
	return RecordView{
		Offset:    binary.LittleEndian.Uint64(body[0:8]),
		Timestamp: int64(binary.LittleEndian.Uint64(body[8:16])),
		headers:   rest[:headersLen:headersLen],
		Data:      rest[headersLen:len(rest):len(rest)],
		size:      8 + int(length),
	}, decodeOK, ""
}

// allZero says whether b holds nothing but zero bytes. Recovery runs it
// over whole preallocated segments, so it compares eight bytes at a time.
func allZero(b []byte) bool {
	for len(b) >= 64 {
		if binary.LittleEndian.Uint64(b)|binary.LittleEndian.Uint64(b[8:])|
			binary.LittleEndian.Uint64(b[16:])|binary.LittleEndian.Uint64(b[24:])|
			binary.LittleEndian.Uint64(b[32:])|binary.LittleEndian.Uint64(b[40:])|
			binary.LittleEndian.Uint64(b[48:])|binary.LittleEndian.Uint64(b[56:]) != 0 {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// indexEntry is one decoded .idx entry.
type indexEntry struct {
	position  uint32
	size      uint32
	timestamp int64
}

func putIndexEntry(dst []byte, e indexEntry) {
	binary.LittleEndian.PutUint32(dst[0:4], e.position)
	binary.LittleEndian.PutUint32(dst[4:8], e.size)
	binary.LittleEndian.PutUint64(dst[8:16], uint64(e.timestamp))
}

func readIndexEntry(src []byte) indexEntry {
	return indexEntry{
		position:  binary.LittleEndian.Uint32(src[0:4]),
		size:      binary.LittleEndian.Uint32(src[4:8]),
		timestamp: int64(binary.LittleEndian.Uint64(src[8:16])),
	}
}

// # Files of a log directory
//
//	subject                 the subject, byte for byte (see subjectdir.go)
//	<base>.log, <base>.idx  a segment: base is its base offset in 20 digits
//	.prepared.log/.idx      a segment made ahead of a rotation (rotation.go):
//	                        without a header it is unused; with one it was
//	                        swapped in and is being given its <base> name
//	<base>.idx.tmp          an index being rebuilt by recovery
//	.truncate               a truncation's durable intent: its target
//	                        offset (truncate.go); .truncate.tmp while it
//	                        is written, .truncate.log/.idx the copy of
//	                        the segment that holds the target
const (
	preparedLogName   = ".prepared.log"
	preparedIndexName = ".prepared.idx"
)

// segmentFileName is the 20-digit base offset that names a segment's files.
func segmentFileName(baseOffset uint64, ext string) string {
	return fmt.Sprintf("%020d%s", baseOffset, ext)
}

// parseSegmentName parses "00000000000000000042.log" or ".idx".
func parseSegmentName(name string) (uint64, string, bool) {
	ext := filepath.Ext(name)
	if ext != ".log" && ext != ".idx" {
		return 0, "", false
	}
	digits := strings.TrimSuffix(name, ext)
	if len(digits) != 20 {
		return 0, "", false
	}
	base, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return base, ext, true
}
