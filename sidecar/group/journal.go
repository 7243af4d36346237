package group

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"

	"github.com/voik/voik/logstore"
)

// The journal is a group's order of appends: one record per record the
// leader stored, holding a pointer to it (subject and offset), in the
// order the leader stored them across all subjects. It gives the group
// one position to replicate from, one committed offset and one place to
// truncate, however many subjects there are. It is a logstore log of its
// own. A pointer's timestamp is when the leader journaled it, not its
// record's: records of different subjects are stamped by different
// capture handlers, so theirs do not ascend across subjects, and a log's
// timestamps must.
//
// # Pointer record (the journal record's data)
//
//	uvarint len(subject), subject, uint64 offset (little-endian)

// Pointer is one journal record: where a record of the group's log is,
// and when the leader journaled it.
type Pointer struct {
	Subject   string
	Offset    uint64
	Timestamp int64 // the journal record's, not the record's
}

func encodePointer(dst []byte, subject string, offset uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(subject)))
	dst = append(dst, subject...)
	return binary.LittleEndian.AppendUint64(dst, offset)
}

func decodePointer(data []byte) (string, uint64, error) {
	n, k := binary.Uvarint(data)
	if k <= 0 || n > uint64(len(data)-k) || len(data)-k-int(n) != 8 {
		return "", 0, fmt.Errorf("group: journal record of %d bytes is not a pointer", len(data))
	}
	subject := string(data[k : k+int(n)])
	return subject, binary.LittleEndian.Uint64(data[k+int(n):]), nil
}

// Journal is a group member's journal.
type Journal struct {
	log *logstore.Log
}

// OpenJournal opens (or makes) the journal in dir.
func OpenJournal(dir string, opts logstore.Options) (*Journal, error) {
	log, err := logstore.OpenLog(dir, "$VOIK.JOURNAL", opts)
	if err != nil {
		return nil, err
	}
	return &Journal{log: log}, nil
}

// Append journals pointers on the leader, at the journal's end, stamped
// now (Pointer.Timestamp is ignored), and returns the journal offset of
// the first. Concurrent callers are serialised by the journal's log.
func (j *Journal) Append(pointers []Pointer) (uint64, error) {
	entries := pointerEntries(pointers)
	first, n, err := j.log.AppendBatch(entries)
	if err == nil && n < len(entries) {
		err = fmt.Errorf("group: journaled %d of %d pointers", n, len(entries))
	}
	return first, err
}

// Close closes the journal.
func (j *Journal) Close() error { return j.log.Close() }

// End is the journal offset the next pointer gets.
func (j *Journal) End() uint64 { return j.log.EndOffset() }

// Log is the journal's log, for its durability (DurableOffset,
// WaitDurable) and truncation.
func (j *Journal) Log() *logstore.Log { return j.log }

// AppendAt appends pointers as exact copies, timestamps included, the
// first at offset: a follower's journal copies its leader's.
func (j *Journal) AppendAt(offset uint64, pointers []Pointer) (int, error) {
	entries := pointerEntries(pointers)
	for i, p := range pointers {
		entries[i].Timestamp = p.Timestamp
	}
	return j.log.AppendAt(offset, entries)
}

// pointerEntries encodes pointers as journal records, untimed.
func pointerEntries(pointers []Pointer) []logstore.Entry {
	entries := make([]logstore.Entry, len(pointers))
	var buf []byte
	for i, p := range pointers {
		start := len(buf)
		buf = encodePointer(buf, p.Subject, p.Offset)
		entries[i] = logstore.Entry{Data: buf[start:len(buf):len(buf)]}
	}
	return entries
}

// Read returns up to max pointers from offset.
func (j *Journal) Read(offset uint64, max int) ([]Pointer, error) {
	var pointers []Pointer
	var decodeErr error
	_, err := j.log.Scan(offset, func(v logstore.RecordView) bool {
		subject, at, err := decodePointer(v.Data)
		if err != nil {
			decodeErr = fmt.Errorf("journal offset %d: %w", v.Offset, err)
			return false
		}
		pointers = append(pointers, Pointer{Subject: subject, Offset: at, Timestamp: v.Timestamp})
		return len(pointers) < max
	})
	if err == nil {
		err = decodeErr
	}
	return pointers, err
}

// recordWireOverhead bounds what a WireRecord's encoding adds to its
// subject, headers and data: its field names, integers and length
// prefixes (about 60 bytes).
const recordWireOverhead = 80

// WireSize is about what a record takes in a pull reply: its data, its
// subject and headers, and their encoding. Batches are cut by it, so that
// a reply of many small records stays under max_payload (data alone
// left about 80 bytes a record uncounted: 1,000 records of 1 KiB came
// to more than 1 MiB).
func WireSize(subject string, headers logstore.Headers, data []byte) int {
	n := logstore.PayloadSize(headers, data) + len(subject) + recordWireOverhead
	for _, values := range headers {
		n += 8 + 8*len(values) // a header's map entry and each value's string prefix
	}
	return n
}

// Entry is one record as it is replicated: its place in the journal (and
// when it was journaled) and in its subject's log, and the record.
type Entry struct {
	Journal   uint64
	Journaled int64
	Subject   string
	Offset    uint64
	Timestamp int64
	Headers   logstore.Headers
	Data      []byte
}

// Collect is the leader's side of a copy: the records of the journal
// from offset on, up to max of them and about maxBytes of data and
// headers (always one, so that a copy moves on), read from store. The
// records of one subject are read with one look at its log.
func Collect(store *logstore.Store, journal *Journal, from uint64, max, maxBytes int) ([]Entry, error) {
	pointers, err := journal.Read(from, max)
	if err != nil {
		return nil, err
	}
	// A subject's records in a batch of the journal are at consecutive
	// offsets: its pointers, in journal order, follow its log.
	bySubject := map[string][]int{}
	var order []string
	for i, p := range pointers {
		if _, ok := bySubject[p.Subject]; !ok {
			order = append(order, p.Subject)
		}
		bySubject[p.Subject] = append(bySubject[p.Subject], i)
	}
	records := make([]logstore.Record, len(pointers))
	readable := len(pointers) // pointers below it were read
	var readErr error
	for _, subject := range order {
		indexes := bySubject[subject]
		first := pointers[indexes[0]]
		err := store.View(subject, func(l *logstore.Log) error {
			got, err := l.Read(first.Offset, len(indexes))
			for k, r := range got {
				if r.Offset != pointers[indexes[k]].Offset {
					return fmt.Errorf("group: journal offset %d points at %q offset %d, the log has %d there",
						from+uint64(indexes[k]), subject, pointers[indexes[k]].Offset, r.Offset)
				}
				records[indexes[k]] = r
			}
			if err == nil && len(got) < len(indexes) {
				err = fmt.Errorf("group: journal offset %d points past the end of %q", from+uint64(indexes[len(got)]), subject)
			}
			if err != nil && len(got) < len(indexes) {
				readable = min(readable, indexes[len(got)])
			}
			return err
		})
		if err != nil && readErr == nil {
			readErr = err
		}
	}
	entries := make([]Entry, 0, readable)
	size := 0
	for i, r := range records[:readable] {
		size += WireSize(pointers[i].Subject, r.Headers, r.Data)
		if i > 0 && size > maxBytes {
			return entries, nil
		}
		entries = append(entries, Entry{Journal: from + uint64(i), Journaled: pointers[i].Timestamp, Subject: pointers[i].Subject, Offset: r.Offset,
			Timestamp: r.Timestamp, Headers: r.Headers, Data: r.Data})
	}
	if readable < len(pointers) {
		return entries, readErr
	}
	return entries, nil
}

// ErrDiverged: a follower's journal runs past where its epoch ended on
// the leader (DivergedError says where to truncate).
var ErrDiverged = errors.New("group: follower diverged from its leader")

// Apply is a follower's side of a copy: it appends entries, which start
// at its journal's end, to their subjects' logs as exact copies, then
// their pointers to its journal, and returns how many it applied.
//
// A subject's log may hold records past what the journal points at: the
// follower stopped between the two appends. They were never pointed at,
// so never reported durable, never committed and never read. The same
// record is not written again (applying a batch twice is harmless); a
// different one (the batch of a leader that never committed, replaced
// by a new leader's) is dropped, with the records after it, and the new
// one written. That the journal agrees with the leader's up to its end
// (the pull's divergence check) is what makes this safe: a subject's
// records at the offsets of these entries cannot be pointed at by it.
func Apply(store *logstore.Store, journal *Journal, entries []Entry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	if end := journal.End(); entries[0].Journal != end {
		return 0, &logstore.EndError{Offset: entries[0].Journal, End: end}
	}
	for i, e := range entries {
		if e.Journal != entries[0].Journal+uint64(i) {
			return 0, fmt.Errorf("group: entry %d has journal offset %d, want %d", i, e.Journal, entries[0].Journal+uint64(i))
		}
	}
	// One append per subject; the pointers then go up to the first entry
	// whose record could not be stored.
	bySubject := map[string][]Entry{}
	var order []string
	for i, e := range entries {
		run, ok := bySubject[e.Subject]
		if !ok {
			order = append(order, e.Subject)
		} else if last := run[len(run)-1]; e.Offset != last.Offset+1 {
			return 0, fmt.Errorf("group: entry %d is %q offset %d after offset %d: a subject's records in a batch are consecutive", i, e.Subject, e.Offset, last.Offset)
		}
		bySubject[e.Subject] = append(run, e)
	}
	applied := len(entries)
	var applyErr error
	for _, subject := range order {
		run := bySubject[subject]
		n, err := applyRun(store, run)
		if err != nil && n < len(run) {
			if cut := int(run[n].Journal - entries[0].Journal); cut < applied {
				applied, applyErr = cut, err
			}
		}
	}
	// The records first, then their pointers in one append: a follower
	// that stops in between holds records its journal does not point at
	// yet, and applies them again, harmlessly, when it copies on.
	pointers := make([]Pointer, applied)
	for i, e := range entries[:applied] {
		pointers[i] = Pointer{Subject: e.Subject, Offset: e.Offset, Timestamp: e.Journaled}
	}
	n, err := journal.AppendAt(entries[0].Journal, pointers)
	if err != nil {
		return n, err
	}
	return n, applyErr
}

// applyRun appends run (one subject, consecutive offsets) to its log as
// exact copies, leaving out those the log holds already (checked to be
// the same), and returns how many of run the log now holds.
func applyRun(store *logstore.Store, run []Entry) (int, error) {
	if len(run) == 0 {
		return 0, nil
	}
	subject, first := run[0].Subject, run[0].Offset
	entries := make([]logstore.Entry, len(run))
	for i, e := range run {
		entries[i] = logstore.Entry{Timestamp: e.Timestamp, Headers: e.Headers, Data: e.Data}
	}
	n, err := store.AppendAt(subject, first, entries)
	var endErr *logstore.EndError
	if !errors.As(err, &endErr) || endErr.End <= first {
		return n, err
	}
	// The log is past first: records no pointer names (see Apply).
	held := int(min(endErr.End-first, uint64(len(run))))
	same := 0
	err = store.View(subject, func(l *logstore.Log) error {
		records, err := l.Read(first, held)
		for same < len(records) {
			r, e := records[same], run[same]
			if r.Timestamp != e.Timestamp || !bytes.Equal(r.Data, e.Data) || !sameHeaders(r.Headers, e.Headers) {
				break
			}
			same++
		}
		return err
	})
	if err != nil {
		return same, err
	}
	if same < held || uint64(held) < endErr.End-first {
		// Different from here, or more past the run: drop them.
		if _, err := store.TruncateTo(subject, first+uint64(same)); err != nil {
			return same, err
		}
	}
	if same == len(run) {
		return same, nil
	}
	n, err = store.AppendAt(subject, first+uint64(same), entries[same:])
	return same + n, err
}

func sameHeaders(a, b logstore.Headers) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
