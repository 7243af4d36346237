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
// own; a pointer record's timestamp is the record's, so the journal is
// searchable by time like any log.
//
// # Pointer record (the journal record's data)
//
//	uvarint len(subject), subject, uint64 offset (little-endian)

// Pointer is one journal record: where a record of the group's log is.
type Pointer struct {
	Subject   string
	Offset    uint64
	Timestamp int64
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
	buf []byte
}

// OpenJournal opens (or makes) the journal in dir.
func OpenJournal(dir string, opts logstore.Options) (*Journal, error) {
	log, err := logstore.OpenLog(dir, "$VOIK.JOURNAL", opts)
	if err != nil {
		return nil, err
	}
	return &Journal{log: log}, nil
}

// Close closes the journal.
func (j *Journal) Close() error { return j.log.Close() }

// End is the journal offset the next pointer gets.
func (j *Journal) End() uint64 { return j.log.EndOffset() }

// Log is the journal's log, for its durability (DurableOffset,
// WaitDurable) and truncation.
func (j *Journal) Log() *logstore.Log { return j.log }

// AppendAt appends pointers as exact copies, the first at offset (a
// follower's journal copies its leader's). The leader appends the same
// way, at its own end.
func (j *Journal) AppendAt(offset uint64, pointers []Pointer) (int, error) {
	entries := make([]logstore.Entry, len(pointers))
	for i, p := range pointers {
		start := len(j.buf)
		j.buf = encodePointer(j.buf, p.Subject, p.Offset)
		entries[i] = logstore.Entry{Timestamp: p.Timestamp, Data: j.buf[start:len(j.buf):len(j.buf)]}
	}
	n, err := j.log.AppendAt(offset, entries)
	j.buf = j.buf[:0]
	return n, err
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

// Entry is one record as it is replicated: its place in the journal and
// in its subject's log, and the record.
type Entry struct {
	Journal   uint64
	Subject   string
	Offset    uint64
	Timestamp int64
	Headers   logstore.Headers
	Data      []byte
}

// Collect is the leader's side of a copy: the records of the journal
// from offset on, up to max of them and about maxBytes of data and
// headers (always one, so that a copy moves on), read from store.
func Collect(store *logstore.Store, journal *Journal, from uint64, max, maxBytes int) ([]Entry, error) {
	pointers, err := journal.Read(from, max)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(pointers))
	size := 0
	for i, p := range pointers {
		var record logstore.Record
		err := store.View(p.Subject, func(l *logstore.Log) error {
			records, err := l.Read(p.Offset, 1)
			if err == nil && len(records) == 1 {
				record = records[0]
			} else if err == nil {
				err = fmt.Errorf("group: journal offset %d points past the end of %q", from+uint64(i), p.Subject)
			}
			return err
		})
		if err != nil {
			return entries, err
		}
		size += logstore.PayloadSize(record.Headers, record.Data)
		if i > 0 && size > maxBytes {
			break
		}
		entries = append(entries, Entry{Journal: from + uint64(i), Subject: p.Subject, Offset: p.Offset,
			Timestamp: record.Timestamp, Headers: record.Headers, Data: record.Data})
	}
	return entries, nil
}

// ErrDiverged: a follower holds a different record where its leader's
// journal points. It must truncate (TruncationPoint) before it copies on.
var ErrDiverged = errors.New("group: follower diverged from its leader")

// Apply is a follower's side of a copy: it appends entries, which start
// at its journal's end, to their subjects' logs as exact copies, then
// their pointers to its journal. A record already in its subject's log
// (a follower that stopped between the two appends) is checked to be the
// same and not written again, so applying a batch twice is harmless. It
// returns how many entries it applied.
func Apply(store *logstore.Store, journal *Journal, entries []Entry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	if end := journal.End(); entries[0].Journal != end {
		return 0, &logstore.EndError{Offset: entries[0].Journal, End: end}
	}
	applied := len(entries)
	var applyErr error
	for i, e := range entries {
		if e.Journal != entries[0].Journal+uint64(i) {
			applied, applyErr = i, fmt.Errorf("group: entry %d has journal offset %d, want %d", i, e.Journal, entries[0].Journal+uint64(i))
			break
		}
		if err := applyRecord(store, e); err != nil {
			applied, applyErr = i, err
			break
		}
	}
	// The records first, then their pointers in one append: a follower
	// that stops in between holds records its journal does not point at
	// yet, and applies them again, harmlessly, when it copies on.
	pointers := make([]Pointer, applied)
	for i, e := range entries[:applied] {
		pointers[i] = Pointer{Subject: e.Subject, Offset: e.Offset, Timestamp: e.Timestamp}
	}
	n, err := journal.AppendAt(entries[0].Journal, pointers)
	if err != nil {
		return n, err
	}
	return n, applyErr
}

// applyRecord appends e to its subject's log, unless the log holds it.
func applyRecord(store *logstore.Store, e Entry) error {
	_, err := store.AppendAt(e.Subject, e.Offset, []logstore.Entry{{Timestamp: e.Timestamp, Headers: e.Headers, Data: e.Data}})
	var endErr *logstore.EndError
	if !errors.As(err, &endErr) || endErr.End <= e.Offset {
		return err
	}
	// The log is past e's offset: it holds e already, or diverged.
	return store.View(e.Subject, func(l *logstore.Log) error {
		records, err := l.Read(e.Offset, 1)
		if err != nil {
			return err
		}
		r := records[0]
		if r.Timestamp != e.Timestamp || !bytes.Equal(r.Data, e.Data) || !sameHeaders(r.Headers, e.Headers) {
			return fmt.Errorf("%w: %q offset %d differs", ErrDiverged, e.Subject, e.Offset)
		}
		return nil
	})
}

func sameHeaders(a, b logstore.Headers) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
