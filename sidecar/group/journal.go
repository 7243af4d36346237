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
// The leader's retention is journaled too, as a start marker: "the log
// of this subject starts at this offset". Every member holds its own
// retention; the leader journals where its limits would start each log,
// and every member, the leader too, deletes below a marker once it is
// committed (DropToStarts), so that no member deletes what the group has
// not agreed to, and every member's log of a subject starts at the same
// offset.
//
// # Pointer record (the journal record's data)
//
//	uvarint len(subject), subject, uint64 offset (little-endian)
//
// and a start marker has one more byte, 1, after the offset.

// Pointer is one journal record: where a record of the group's log is,
// and when the leader journaled it; or, with Start, a start marker.
type Pointer struct {
	Subject   string
	Offset    uint64
	Timestamp int64 // the journal record's, not the record's
	// Start: a start marker, no record: Subject's log starts at Offset,
	// by the leader's retention limits.
	Start bool
}

func encodePointer(dst []byte, p Pointer) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(p.Subject)))
	dst = append(dst, p.Subject...)
	dst = binary.LittleEndian.AppendUint64(dst, p.Offset)
	if p.Start {
		dst = append(dst, 1)
	}
	return dst
}

// decodePointer decodes a journal record. When its subject is prev's,
// the pointer shares prev's string: a run of one subject's records
// allocates it once.
func decodePointer(data []byte, prev string) (Pointer, error) {
	n, k := binary.Uvarint(data)
	if k <= 0 || n > uint64(len(data)-k) {
		return Pointer{}, fmt.Errorf("group: journal record of %d bytes is not a pointer", len(data))
	}
	rest := data[k+int(n):]
	switch {
	case len(rest) == 8:
	case len(rest) == 9 && rest[8] == 1:
	default:
		return Pointer{}, fmt.Errorf("group: journal record of %d bytes is not a pointer", len(data))
	}
	subject := prev
	if name := data[k : k+int(n)]; string(name) != prev {
		subject = string(name)
	}
	return Pointer{Subject: subject, Offset: binary.LittleEndian.Uint64(rest), Start: len(rest) == 9}, nil
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

// Mark journals a start marker on the leader, its retention limits
// would have subject's log start at first, and returns its journal
// offset.
func (j *Journal) Mark(subject string, first uint64) (uint64, error) {
	return j.Append([]Pointer{{Subject: subject, Offset: first, Start: true}})
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
		buf = encodePointer(buf, p)
		entries[i] = logstore.Entry{Data: buf[start:len(buf):len(buf)]}
	}
	return entries
}

// Read returns up to max pointers from offset.
func (j *Journal) Read(offset uint64, max int) ([]Pointer, error) {
	var pointers []Pointer
	var decodeErr error
	_, err := j.log.Scan(offset, func(v logstore.RecordView) bool {
		var prev string
		if len(pointers) > 0 {
			prev = pointers[len(pointers)-1].Subject
		}
		p, err := decodePointer(v.Data, prev)
		if err != nil {
			decodeErr = fmt.Errorf("journal offset %d: %w", v.Offset, err)
			return false
		}
		p.Timestamp = v.Timestamp
		pointers = append(pointers, p)
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
// when it was journaled) and in its subject's log, and the record. Or,
// with Drop set, no record: a start marker (Start, Offset = Drop), which
// a follower journals and deletes by once it is committed; or a pointer
// at Offset whose record the leader no longer holds (Offset < Drop, its
// log's first offset, which committed markers set): a follower that
// copies it deletes its own below Drop, or starts its log of Subject
// there, however far behind it was.
type Entry struct {
	Journal   uint64
	Journaled int64
	Subject   string
	Offset    uint64
	Timestamp int64
	Headers   logstore.Headers
	Data      []byte
	Drop      uint64
	Start     bool
}

// record says whether the entry carries a record (not a start marker or
// a pointer whose record is gone).
func (e *Entry) record() bool { return e.Drop == 0 }

// pointer is the entry's journal record.
func (e *Entry) pointer() Pointer {
	return Pointer{Subject: e.Subject, Offset: e.Offset, Timestamp: e.Journaled, Start: e.Start}
}

// Collect is the leader's side of a copy: the records of the journal
// from offset on, up to max of them and about maxBytes of data and
// headers (always one, so that a copy moves on), read from store. The
// records of one subject are read with one look at its log. A start
// marker, and a pointer below its subject's first offset (retention
// deleted its record), become entries with Drop set.
func Collect(store *logstore.Store, journal *Journal, from uint64, max, maxBytes int) ([]Entry, error) {
	pointers, err := journal.Read(from, max)
	if err != nil {
		return nil, err
	}
	bySubject, order := groupBySubject(pointers)
	records := make([]logstore.Record, len(pointers))
	drops := make([]uint64, len(pointers))
	readable := len(pointers) // pointers below it were read
	var readErr error
	for _, subject := range order {
		err := collectSubject(store, subject, pointers, bySubject[subject], from, records, drops, &readable)
		if err != nil && readErr == nil {
			readErr = err
		}
	}
	entries := make([]Entry, 0, readable)
	size := 0
	for i, r := range records[:readable] {
		p := pointers[i]
		e := Entry{Journal: from + uint64(i), Journaled: p.Timestamp, Subject: p.Subject, Offset: p.Offset, Drop: drops[i], Start: p.Start}
		if e.record() {
			e.Timestamp, e.Headers, e.Data = r.Timestamp, r.Headers, r.Data
		}
		size += WireSize(p.Subject, e.Headers, e.Data)
		if i > 0 && size > maxBytes {
			return entries, nil
		}
		entries = append(entries, e)
	}
	if readable < len(pointers) {
		return entries, readErr
	}
	return entries, nil
}

// groupBySubject is the indexes of pointers by subject, and the subjects
// in the order they first come. A subject's records in a batch of the
// journal are at consecutive offsets: its pointers, in journal order,
// follow its log, which one look at the log can read.
func groupBySubject(pointers []Pointer) (bySubject map[string][]int, order []string) {
	bySubject = map[string][]int{}
	for i, p := range pointers {
		if _, ok := bySubject[p.Subject]; !ok {
			order = append(order, p.Subject)
		}
		bySubject[p.Subject] = append(bySubject[p.Subject], i)
	}
	return bySubject, order
}

// collectSubject reads the records of subject that the pointers at
// indexes name, into records, and sets drops for its start markers and
// for pointers below its log's first offset. A read that fails lowers
// *readable to the first pointer not read.
func collectSubject(store *logstore.Store, subject string, pointers []Pointer, indexes []int, from uint64, records []logstore.Record, drops []uint64, readable *int) error {
	var named []int // pointers, not markers
	for _, i := range indexes {
		if pointers[i].Start {
			drops[i] = pointers[i].Offset
		} else {
			named = append(named, i)
		}
	}
	if len(named) == 0 {
		return nil
	}
	var live []int
	looked := false
	err := store.View(subject, func(l *logstore.Log) error {
		looked = true
		first := l.FirstOffset()
		for _, i := range named {
			if pointers[i].Offset < first {
				drops[i] = first
			} else {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			return nil
		}
		got, err := l.Read(pointers[live[0]].Offset, len(live))
		for k, r := range got {
			if r.Offset != pointers[live[k]].Offset {
				*readable = min(*readable, live[k])
				return fmt.Errorf("group: journal offset %d points at %q offset %d, the log has %d there",
					from+uint64(live[k]), subject, pointers[live[k]].Offset, r.Offset)
			}
			records[live[k]] = r
		}
		if err == nil && len(got) < len(live) {
			err = fmt.Errorf("group: journal offset %d points past the end of %q", from+uint64(live[len(got)]), subject)
		}
		if err != nil && len(got) < len(live) {
			*readable = min(*readable, live[len(got)])
		}
		return err
	})
	if err != nil && !looked {
		*readable = min(*readable, named[0]) // the log could not be looked at
	}
	return err
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
	applied, applyErr, err := applyEntries(store, entries)
	if err != nil {
		return 0, err
	}
	// The records first, then their pointers in one append: a follower
	// that stops in between holds records its journal does not point at
	// yet, and applies them again, harmlessly, when it copies on.
	pointers := make([]Pointer, applied)
	for i := range entries[:applied] {
		pointers[i] = entries[i].pointer()
	}
	n, err := journal.AppendAt(entries[0].Journal, pointers)
	if err != nil {
		return n, err
	}
	return n, applyErr
}

// applyEntries stores entries in their subjects' logs: one append per
// subject and run of consecutive offsets, and, for an entry with Drop,
// its subject's records below Drop deleted (the run before it appended
// first). It returns how many entries, from the first, were applied
// whole, and why the next was not; err is for entries that are not a
// copy (offsets of a subject out of order), of which nothing was done.
func applyEntries(store *logstore.Store, entries []Entry) (applied int, applyErr, err error) {
	last := map[string]uint64{} // each subject's last record so far
	alone := true               // one subject's records and nothing else
	for i, e := range entries {
		alone = alone && e.record() && e.Subject == entries[0].Subject
		if !e.record() {
			delete(last, e.Subject) // a drop starts the subject's runs afresh
			continue
		}
		if before, ok := last[e.Subject]; ok && e.Offset != before+1 {
			return 0, nil, fmt.Errorf("group: entry %d is %q offset %d after offset %d: a subject's records in a batch are consecutive", i, e.Subject, e.Offset, before)
		}
		last[e.Subject] = e.Offset
	}
	if alone {
		// The batch is one run: applied as it is, not copied into one.
		n, err := applyRun(store, entries)
		if err != nil && n < len(entries) {
			return n, err, nil
		}
		return len(entries), nil, nil
	}
	runs := make(map[string][]Entry, len(last))
	applied = len(entries)
	cut := func(at uint64, err error) {
		if i := int(at - entries[0].Journal); i < applied {
			applied, applyErr = i, err
		}
	}
	flush := func(subject string) {
		run := runs[subject]
		delete(runs, subject)
		if n, err := applyRun(store, run); err != nil && n < len(run) {
			cut(run[n].Journal, err)
		}
	}
	var order []string
	for _, e := range entries {
		if !e.record() {
			flush(e.Subject)
			if e.Start {
				continue // deleted once committed (DropToStarts), as on every member
			}
			if _, err := store.DropBefore(e.Subject, e.Drop); err != nil {
				cut(e.Journal, fmt.Errorf("group: deleting %q below %d as the leader did: %w", e.Subject, e.Drop, err))
			}
			continue
		}
		if _, ok := runs[e.Subject]; !ok {
			order = append(order, e.Subject)
		}
		runs[e.Subject] = append(runs[e.Subject], e)
	}
	for _, subject := range order {
		if _, ok := runs[subject]; ok {
			flush(subject)
		}
	}
	return applied, applyErr, nil
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
		// Records below the log's first offset were deleted here by a
		// committed start marker: the group agreed that they go.
		for same < held && first+uint64(same) < l.FirstOffset() {
			same++
		}
		records, err := l.Read(first+uint64(same), held-same)
		for _, r := range records {
			e := run[same]
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

// DropToStarts deletes, in each subject's log, what is below its start
// (a committed start marker's offset): whole segments
// (Store.DropSegmentsBefore, which opens no log that has none to lose).
// It returns the first error, having tried every subject.
func DropToStarts(store *logstore.Store, starts map[string]uint64) error {
	var first error
	for subject, start := range starts {
		if _, err := store.DropSegmentsBefore(subject, start); err != nil && first == nil {
			first = fmt.Errorf("group: deleting %q below %d: %w", subject, start, err)
		}
	}
	return first
}
