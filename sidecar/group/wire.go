package group

import (
	"fmt"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/internal/msgp"
	"github.com/voik/voik/logstore"
)

// The leader's hot path: a pull's records encoded straight from the
// subjects' logs into the reply. Collect copies each record out of its
// log, and MessagePack's reflection copies it once more into a buffer it
// grows as it goes; on a leader that serves two followers, that was half
// of its CPU under load (docs/performance.md). Here each record is read
// through a view of the log and written once, with no reflection and no
// allocation per record, into buffers kept for reuse. The bytes decode
// to the same PullReply as the reflective encoding of what Collect
// returns (TestWireBatchDecodesAsCollectDoes), so followers need no
// change.
//
// A record too large for the reply alone is left to Collect and wire,
// which send it in chunks.

// wireBatch is a pull's records, encoded.
type wireBatch struct {
	// body holds each record's encoding (a WireRecord map), in the order
	// they were read: subject by subject.
	body []byte
	// spans says where in body each entry lies, in journal order; sizes
	// is each one's WireSize, by which the batch is cut.
	spans []span
	sizes []int
	// count is how many entries, from the first, the reply carries.
	count int
	out   []byte // the reply, once encoded
}

type span struct{ start, end int }

// wireHeadRoom is kept in front of the records for the reply's head
// (its fields, a few epochs): when the batch's records lie in body in
// journal order, one after another, the head is written into the room
// and the reply is body itself, not a copy of it. maxWireGrow bounds
// the memory set aside for the records before they are read.
const (
	wireHeadRoom = 512
	maxWireGrow  = 8 << 20
)

// wireBatches keeps a few batches' memory (a megabyte or so each) for the
// next pulls: a leader answers two or three followers, each with a pull
// ahead at most. A sync.Pool would hand it to the garbage collector at
// every cycle, and under load that is every few pulls.
var wireBatches = make(chan *wireBatch, 4)

func newWireBatch() *wireBatch {
	select {
	case b := <-wireBatches:
		return b
	default:
		return new(wireBatch)
	}
}

// release returns b's memory for the next pull; b is not used after.
func (b *wireBatch) release() {
	if b == nil {
		return
	}
	b.body, b.spans, b.sizes, b.out = b.body[:0], b.spans[:0], b.sizes[:0], b.out[:0]
	b.count = 0
	select {
	case wireBatches <- b:
	default: // enough kept
	}
}

// collectWire is Collect, encoded: the journal's records from offset
// from on, up to max of them and maxBytes of WireSize (always one). ok
// false: the first record is too large for maxBytes alone and must go in
// chunks (Collect's path); no batch is returned then. Otherwise a batch
// with no entries comes with the error that stopped the read.
func collectWire(store *logstore.Store, journal *Journal, from uint64, max, maxBytes int) (b *wireBatch, ok bool, err error) {
	b = newWireBatch()
	pointers, err := journal.Read(from, max)
	if err != nil {
		return b, true, err
	}
	b.spans = append(b.spans[:0], make([]span, len(pointers))...)
	b.sizes = append(b.sizes[:0], make([]int, len(pointers))...)
	// Room for the reply's head in front of the records, and for about a
	// batch of them: a record's encoding is never larger than its WireSize.
	b.body = slices.Grow(b.body[:0], wireHeadRoom+min(maxBytes, maxWireGrow)+len(pointers)*recordWireOverhead)
	b.body = b.body[:wireHeadRoom]
	bySubject, order := groupBySubject(pointers)
	readable := len(pointers) // pointers below it were read
	var readErr error
	for _, subject := range order {
		if err := b.encodeSubject(store, subject, pointers, bySubject[subject], from, maxBytes, &readable); err != nil && readErr == nil {
			readErr = err
		}
	}
	if readable > 0 && b.sizes[0] > maxBytes {
		b.release()
		return nil, false, nil
	}
	size := 0
	for i := range readable {
		size += b.sizes[i]
		if i > 0 && size > maxBytes {
			break
		}
		b.count++
	}
	if b.count == 0 {
		return b, true, readErr
	}
	return b, true, nil
}

// encodeSubject encodes the entries of subject that the pointers at
// indexes name, as collectSubject reads them: start markers and pointers
// below the log's first offset as drops, the others as records read
// through views. A read that fails, or a record that is not the one
// pointed at, lowers *readable to the first pointer not encoded.
//
// Once the subject's own entries come to more than maxBytes, the rest
// cannot be in the batch, which is cut in journal order at the first
// entry that brings the sizes of all before it past maxBytes: they are
// not read. (A pull of 1,000 records of 100 KiB reads eleven of them, not
// 100 MB.)
func (b *wireBatch) encodeSubject(store *logstore.Store, subject string, pointers []Pointer, indexes []int, from uint64, maxBytes int, readable *int) error {
	var named []int // pointers, not markers
	for _, i := range indexes {
		if pointers[i].Start {
			b.encodeDrop(i, from, pointers[i], pointers[i].Offset)
		} else {
			named = append(named, i)
		}
	}
	if len(named) == 0 {
		return nil
	}
	looked := false
	err := store.View(subject, func(l *logstore.Log) error {
		looked = true
		first := l.FirstOffset()
		var live []int
		for _, i := range named {
			if pointers[i].Offset < first {
				b.encodeDrop(i, from, pointers[i], first)
			} else {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			return nil
		}
		k, total := 0, 0
		var viewErr error
		_, err := l.Scan(pointers[live[0]].Offset, func(v logstore.RecordView) bool {
			i := live[k]
			if v.Offset != pointers[i].Offset {
				viewErr = fmt.Errorf("group: journal offset %d points at %q offset %d, the log has %d there",
					from+uint64(i), subject, pointers[i].Offset, v.Offset)
				return false
			}
			if viewErr = b.encodeRecord(i, from, pointers[i], v); viewErr != nil {
				return false
			}
			total += b.sizes[i]
			k++
			return k < len(live) && total <= maxBytes
		})
		if err == nil {
			err = viewErr
		}
		if err == nil && k < len(live) && total > maxBytes {
			return nil // the cut comes before the rest: left unread
		}
		if err == nil && k < len(live) {
			err = fmt.Errorf("group: journal offset %d points past the end of %q", from+uint64(live[k]), subject)
		}
		if k < len(live) {
			*readable = min(*readable, live[k])
		}
		return err
	})
	if err != nil && !looked {
		*readable = min(*readable, named[0]) // the log could not be looked at
	}
	return err
}

// The keys of a WireRecord (its msgpack tags).
const (
	keyJournal   = "j"
	keyJournaled = "jt"
	keySubject   = "s"
	keyOffset    = "o"
	keyTimestamp = "t"
	keyHeaders   = "h"
	keyData      = "d"
	keyDrop      = "x"
	keyStart     = "st"
)

// encodeRecord appends the entry at index i, the record v, to body.
func (b *wireBatch) encodeRecord(i int, from uint64, p Pointer, v logstore.RecordView) error {
	start := len(b.body)
	fields := 6
	if v.HasHeaders() {
		fields++
	}
	out := b.entryHead(msgp.AppendMapLen(b.body, fields), from+uint64(i), p)
	out = msgp.AppendInt64(msgp.AppendString(out, keyTimestamp), v.Timestamp)
	size := len(v.Data) + len(p.Subject) + recordWireOverhead
	if v.HasHeaders() {
		// The number of names comes first in the log's encoding, after
		// the map's head here: the head takes its widest form (any
		// decoder takes it) and is filled in once they are counted.
		out = msgp.AppendString(out, keyHeaders)
		at := len(out)
		out = append(out, 0xdf, 0, 0, 0, 0)
		names := 0
		err := v.EachHeader(func(name []byte, values int) {
			names++
			size += len(name) + 8 + 8*values
			out = msgp.AppendArrayLen(msgp.AppendStringBytes(out, name), values)
		}, func(value []byte) {
			size += len(value)
			out = msgp.AppendStringBytes(out, value)
		})
		if err != nil {
			b.body = out[:start]
			return fmt.Errorf("group: record %d of %q: %w", v.Offset, p.Subject, err)
		}
		out[at+1], out[at+2], out[at+3], out[at+4] = byte(names>>24), byte(names>>16), byte(names>>8), byte(names)
	}
	out = msgp.AppendString(out, keyData)
	if len(v.Data) == 0 {
		out = msgp.AppendNil(out) // as Collect's copy of no data, nil
	} else {
		out = append(msgp.AppendBinLen(out, len(v.Data)), v.Data...)
	}
	b.body = out
	b.spans[i], b.sizes[i] = span{start, len(b.body)}, size
	return nil
}

// encodeDrop appends the entry at index i, a start marker or a pointer
// whose record the leader no longer holds, to body.
func (b *wireBatch) encodeDrop(i int, from uint64, p Pointer, drop uint64) {
	start := len(b.body)
	fields := 7
	if p.Start {
		fields++
	}
	out := b.entryHead(msgp.AppendMapLen(b.body, fields), from+uint64(i), p)
	out = msgp.AppendInt64(msgp.AppendString(out, keyTimestamp), 0)
	out = msgp.AppendNil(msgp.AppendString(out, keyData))
	out = msgp.AppendUint64(msgp.AppendString(out, keyDrop), drop)
	if p.Start {
		out = msgp.AppendBool(msgp.AppendString(out, keyStart), true)
	}
	b.body = out
	b.spans[i], b.sizes[i] = span{start, len(b.body)}, len(p.Subject)+recordWireOverhead
}

// entryHead appends the fields every entry has but its timestamp and
// data: its journal offset and time, subject and offset.
func (b *wireBatch) entryHead(out []byte, journal uint64, p Pointer) []byte {
	out = msgp.AppendUint64(msgp.AppendString(out, keyJournal), journal)
	out = msgp.AppendInt64(msgp.AppendString(out, keyJournaled), p.Timestamp)
	out = msgp.AppendString(msgp.AppendString(out, keySubject), p.Subject)
	return msgp.AppendUint64(msgp.AppendString(out, keyOffset), p.Offset)
}

// reply encodes reply, with the batch's first count entries as its
// records, into the batch's own memory (valid until release). While the
// reply would pass maxPayload it carries half as many (one at least), as
// Source.encode does.
func (b *wireBatch) reply(reply *PullReply, maxPayload int) ([]byte, error) {
	var epochs []byte
	if len(reply.Epochs) > 0 {
		var err error
		if epochs, err = msgpack.Marshal(reply.Epochs); err != nil {
			return nil, err
		}
	}
	for {
		body := b.encodeReply(reply, epochs)
		if len(body) <= maxPayload || b.count <= 1 {
			return body, nil
		}
		b.count /= 2
	}
}

// encodeReply encodes the reply's map: the fields of a batch's reply,
// those the reflective encoding would write (omitempty ones only when
// set), then the records.
func (b *wireBatch) encodeReply(reply *PullReply, epochs []byte) []byte {
	fields := 4 // v, epoch, committed, records
	if reply.InSync {
		fields++
	}
	if reply.End != 0 {
		fields++
	}
	if epochs != nil {
		fields++
	}
	head := msgp.AppendMapLen(b.out[:0], fields)
	head = msgp.AppendInt64(msgp.AppendString(head, "v"), int64(reply.Version))
	head = msgp.AppendUint64(msgp.AppendString(head, "epoch"), reply.Epoch)
	head = msgp.AppendUint64(msgp.AppendString(head, "committed"), reply.Committed)
	if reply.InSync {
		head = msgp.AppendBool(msgp.AppendString(head, "in_sync"), true)
	}
	if reply.End != 0 {
		head = msgp.AppendUint64(msgp.AppendString(head, "end"), reply.End)
	}
	if epochs != nil {
		head = append(msgp.AppendString(head, "epochs"), epochs...)
	}
	head = msgp.AppendArrayLen(msgp.AppendString(head, "records"), b.count)
	records := b.spans[:b.count]
	inOrder := len(head) <= wireHeadRoom && (len(records) == 0 || records[0].start == wireHeadRoom)
	for i := 1; inOrder && i < len(records); i++ {
		inOrder = records[i-1].end == records[i].start
	}
	if inOrder {
		at := wireHeadRoom - len(head)
		copy(b.body[at:], head)
		b.out = head
		if len(records) == 0 {
			return b.body[at:wireHeadRoom]
		}
		return b.body[at:records[len(records)-1].end]
	}
	size := len(head)
	for _, s := range records {
		size += s.end - s.start
	}
	out := slices.Grow(head, size-len(head))
	for _, s := range records {
		out = append(out, b.body[s.start:s.end]...)
	}
	b.out = out
	return out
}
