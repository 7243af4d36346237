package messages

import (
	"bytes"
	"github.com/voik/voik/internal/msgp"
	"sort"

	"github.com/vmihailenco/msgpack/v5"
)

// Record is one stored message in a FETCH reply.
type Record struct {
	Offset    uint64              `msgpack:"offset" json:"offset"`
	Timestamp int64               `msgpack:"ts" json:"ts"`
	Headers   map[string][]string `msgpack:"headers,omitempty" json:"headers,omitempty"`
	Data      []byte              `msgpack:"data" json:"data"`
}

// FetchReply answers FETCH.
//
// A Record's Data returned by Client.Fetch shares memory with the reply it
// came in (no copy is made); keeping one record keeps that reply alive.
type FetchReply struct {
	Subject     string   `msgpack:"subject" json:"subject"`
	Records     []Record `msgpack:"records" json:"records"`
	NextOffset  uint64   `msgpack:"next_offset" json:"next_offset"`
	FirstOffset uint64   `msgpack:"first_offset" json:"first_offset"`
	EndOffset   uint64   `msgpack:"end_offset" json:"end_offset"`
}

// InfoReply answers INFO.
type InfoReply struct {
	Subject     string `msgpack:"subject" json:"subject"`
	FirstOffset uint64 `msgpack:"first_offset" json:"first_offset"`
	EndOffset   uint64 `msgpack:"end_offset" json:"end_offset"`
	Messages    uint64 `msgpack:"messages" json:"messages"`
	Bytes       uint64 `msgpack:"bytes" json:"bytes"`
	FirstTs     int64  `msgpack:"first_ts" json:"first_ts"`
	LastTs      int64  `msgpack:"last_ts" json:"last_ts"`
	Segments    uint64 `msgpack:"segments" json:"segments"`
}

// SubjectsReply answers SUBJECTS.
type SubjectsReply struct {
	Subjects []string `msgpack:"subjects" json:"subjects"`
	Total    uint64   `msgpack:"total" json:"total"`
}

// ReplayReply answers REPLAY before the records are delivered.
type ReplayReply struct {
	Subject     string `msgpack:"subject" json:"subject"`
	FirstOffset uint64 `msgpack:"first_offset" json:"first_offset"`
	EndOffset   uint64 `msgpack:"end_offset" json:"end_offset"`
	Deliver     string `msgpack:"deliver" json:"deliver"`
}

// GroupReply answers <prefix>.GROUP.<group>, from the group's leader
// (PROTOCOL.md section 8).
type GroupReply struct {
	Group    string        `msgpack:"group" json:"group"`
	Leader   string        `msgpack:"leader" json:"leader"`
	Epoch    uint64        `msgpack:"epoch" json:"epoch"`
	Replicas uint64        `msgpack:"replicas" json:"replicas"`
	Members  []GroupMember `msgpack:"members" json:"members"`
}

// GroupsReply is one of the replies to the scatter-gather request
// <prefix>.GROUPS (PROTOCOL.md section 9): one from every group (its
// leader, or one member while it has none) and every standalone voik that
// share a NATS system and an API prefix.
type GroupsReply struct {
	Group    string   `msgpack:"group" json:"group"`       // "" standalone
	Instance string   `msgpack:"instance" json:"instance"` // who answered
	Filters  []string `msgpack:"filters" json:"filters"`   // its VOIK_SUBJECTS
	Leader   string   `msgpack:"leader" json:"leader"`     // "" standalone, or while the group has none
}

// GroupMember is one member in a GroupReply: every member the leader has
// heard from or names in sync.
type GroupMember struct {
	Instance string `msgpack:"instance" json:"instance"`
	Role     string `msgpack:"role" json:"role"` // leader or follower
	InSync   bool   `msgpack:"in_sync" json:"in_sync"`
	// Lag is how many journal records the member does not hold
	// durably yet of those the leader holds.
	Lag uint64 `msgpack:"lag" json:"lag"`
}

// AckReply answers an acknowledged append.
type AckReply struct {
	Subject   string `msgpack:"subject" json:"subject"`
	Offset    uint64 `msgpack:"offset" json:"offset"`
	Timestamp int64  `msgpack:"ts" json:"ts"`
	// Duplicate: the message's Nats-Msg-Id was stored on the subject
	// within the dedupe window, so it was not stored again; Offset and
	// Timestamp are the first one's. Present only when true.
	Duplicate bool `msgpack:"duplicate,omitempty" json:"duplicate,omitempty"`
}

// Headers of replayed messages and acknowledged appends.
const (
	HeaderAck       = "Voik-Ack"
	HeaderOffset    = "Voik-Offset"
	HeaderSubject   = "Voik-Subject"
	HeaderTimestamp = "Voik-Timestamp"
	HeaderStatus    = "Voik-Status"
	// HeaderMsgID is NATS's message id: a message that carries one is
	// stored at most once per subject within the dedupe window.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderReply marks an API reply that voik sends to a reply subject
	// outside _INBOX. (a client's custom inbox prefix), so that a capture
	// filter that covers that subject never stores voik's own replies.
	HeaderReply = "Voik-Reply"
	StatusEnd   = "end"
)

// Encode marshals a reply. Replies are plain structs, so this cannot fail
// short of a bug; a failure is returned as an internal-error reply.
func Encode(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		b, _ = msgpack.Marshal(ErrorReply{Error: Errorf(CodeInternal, "encode reply: %v", err)})
	}
	return b
}

// AppendAckReply appends the MessagePack of AckReply{subject, offset, ts,
// duplicate} to dst without reflection: acks are the hot reply of
// acknowledged appends. Integers take the contract's fixed widths;
// duplicate is written only when true.
func AppendAckReply(dst []byte, subject string, offset uint64, ts int64, duplicate bool) []byte {
	if duplicate {
		dst = append(dst, 0x84) // a map of four
	} else {
		dst = append(dst, 0x83) // a map of three
	}
	dst = msgp.AppendString(dst, "subject")
	dst = msgp.AppendString(dst, subject)
	dst = msgp.AppendString(dst, "offset")
	dst = msgp.AppendUint64(dst, offset)
	dst = msgp.AppendString(dst, "ts")
	dst = msgp.AppendInt64(dst, ts)
	if duplicate {
		dst = msgp.AppendString(dst, "duplicate")
		dst = append(dst, 0xc3) // true
	}
	return dst
}

// EncodeMsgpack writes the error's code as uint 64, the width of every
// integer of a reply but timestamps (the struct's int would take the
// smallest form).
func (e *Error) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(2); err != nil {
		return err
	}
	if err := enc.EncodeString("code"); err != nil {
		return err
	}
	if err := enc.EncodeUint64(uint64(e.Code)); err != nil {
		return err
	}
	if err := enc.EncodeString("description"); err != nil {
		return err
	}
	return enc.EncodeString(e.Description)
}

// EncodeError marshals an error reply.
func EncodeError(e *Error) []byte { return Encode(ErrorReply{Error: e}) }

// FetchReplyBuilder builds a FETCH reply one record at a time, so that the
// server can stop where the next record would push the reply past its size
// limit. The zero value is ready; Reset makes it reusable.
type FetchReplyBuilder struct {
	out []byte // the finished reply, when its head did not fit in headRoom
	// records holds headRoom bytes, then the records as they are added,
	// then (after Finish) the reply's tail. Finish writes the head into
	// the room left before the records, so a reply of a megabyte is not
	// copied once more to put its head in front.
	records bytes.Buffer
	tail    int // where the records end once Finish wrote the tail; 0 before
	count   int
	names   []string
	head    []byte
}

// headRoom is the space kept in front of the records for the reply's head
// (a map, "subject", the subject, "records", the records' array length)
// with a subject of up to 4 KiB, the most a NATS server accepts by default
// (max_control_line); a longer one costs a copy.
const headRoom = 1 + strHeadSize + 3 + 4096 + strHeadSize + 5

// strHeadSize is the encoded size of "subject" and of "records".
const strHeadSize = 1 + 7

var zeroHead [headRoom]byte

// begin makes the room for the head in an empty builder, and takes away a
// tail that Finish wrote.
func (b *FetchReplyBuilder) begin() {
	if b.tail > 0 {
		b.records.Truncate(b.tail)
		b.tail = 0
	}
	if b.records.Len() == 0 {
		b.records.Write(zeroHead[:])
	}
}

// recordsLen is the size of the records encoded so far.
func (b *FetchReplyBuilder) recordsLen() int {
	switch {
	case b.tail > 0:
		return b.tail - headRoom
	case b.records.Len() == 0:
		return 0
	}
	return b.records.Len() - headRoom
}

// Reset empties the builder, keeping its memory.
func (b *FetchReplyBuilder) Reset() {
	b.records.Reset()
	b.count, b.tail = 0, 0
}

// Cap is the memory the builder holds, in bytes.
func (b *FetchReplyBuilder) Cap() int { return b.records.Cap() + cap(b.out) + cap(b.head) }

// Count is the number of records added.
func (b *FetchReplyBuilder) Count() int { return b.count }

// Add appends one record. Header names are written sorted, so the same
// record always encodes the same way.
func (b *FetchReplyBuilder) Add(offset uint64, timestamp int64, headers map[string][]string, data []byte) {
	b.begin()
	fields := 3
	if len(headers) > 0 {
		fields = 4
	}
	// The record's head is appended in the buffer's spare room and
	// written once: a page holds a thousand records, and an encoder call
	// per field cost as much as copying their data.
	head := append(b.records.AvailableBuffer(), 0x80|byte(fields)) // a small map
	head = msgp.AppendString(head, "offset")
	head = msgp.AppendUint64(head, offset)
	head = msgp.AppendString(head, "ts")
	head = msgp.AppendInt64(head, timestamp)
	if len(headers) > 0 {
		head = msgp.AppendString(head, "headers")
		b.names = b.names[:0]
		for name := range headers {
			b.names = append(b.names, name)
		}
		sort.Strings(b.names)
		head = msgp.AppendMapLen(head, len(b.names))
		for _, name := range b.names {
			head = msgp.AppendString(head, name)
			values := headers[name]
			head = msgp.AppendArrayLen(head, len(values))
			for _, v := range values {
				head = msgp.AppendString(head, v)
			}
		}
	}
	head = msgp.AppendString(head, "data")
	head = msgp.AppendBinLen(head, len(data)) // never nil: data is always bin
	b.records.Write(head)
	b.records.Write(data)
	b.count++
}

// AddWithin adds the record at offset unless the reply would then exceed
// limit bytes, and reports whether it did. The size is exact, that of
// Finish(subject, …) with this record last (its integers have one fixed
// width, so their values do not matter), so that a record is refused only
// when it really does not fit.
func (b *FetchReplyBuilder) AddWithin(limit int, subject string, offset uint64, timestamp int64, headers map[string][]string, data []byte) bool {
	b.begin()
	mark := b.records.Len()
	b.Add(offset, timestamp, headers, data)
	if b.finishedSize(len(subject)) <= limit {
		return true
	}
	b.records.Truncate(mark)
	b.count--
	return false
}

// finishedSize is the length of what Finish would return.
func (b *FetchReplyBuilder) finishedSize(subjectLen int) int {
	return 1 + msgp.StringSize(len("subject")) + msgp.StringSize(subjectLen) +
		msgp.StringSize(len("records")) + arrayHeaderSize(b.count) + b.recordsLen() +
		msgp.StringSize(len("next_offset")) + msgp.IntSize +
		msgp.StringSize(len("first_offset")) + msgp.IntSize +
		msgp.StringSize(len("end_offset")) + msgp.IntSize
}

// SubjectsReplySize is the largest encoded size of a SubjectsReply that
// holds subjects of the given lengths: every byte but the array header
// (counted at its largest) and total (at its largest) is exact, so a page
// filled up to max_payload with it is never refused by NATS.
func SubjectsReplySize(lengths ...int) int {
	size := 1 + msgp.StringSize(len("subjects")) + 5 + msgp.StringSize(len("total")) + msgp.IntSize
	for _, n := range lengths {
		size += msgp.StringSize(n)
	}
	return size
}

// arrayHeaderSize is the MessagePack size of an array head: always the
// smallest form.
func arrayHeaderSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n < 1<<16:
		return 3
	}
	return 5
}

// Finish encodes the whole reply into the builder's own memory: the
// bytes are valid until the builder is used again.
func (b *FetchReplyBuilder) Finish(subject string, next, first, end uint64) []byte {
	b.begin()
	head := append(b.head[:0], 0x85) // a map of five
	head = msgp.AppendString(head, "subject")
	head = msgp.AppendString(head, subject)
	head = msgp.AppendString(head, "records")
	head = msgp.AppendArrayLen(head, b.count)
	b.head = head
	b.tail = b.records.Len()
	tail := b.records.AvailableBuffer()
	tail = msgp.AppendString(tail, "next_offset")
	tail = msgp.AppendUint64(tail, next)
	tail = msgp.AppendString(tail, "first_offset")
	tail = msgp.AppendUint64(tail, first)
	tail = msgp.AppendString(tail, "end_offset")
	tail = msgp.AppendUint64(tail, end)
	b.records.Write(tail)
	whole := b.records.Bytes()
	if len(head) <= headRoom {
		start := headRoom - len(head)
		copy(whole[start:], head)
		return whole[start:]
	}
	b.out = append(append(b.out[:0], head...), whole[headRoom:]...)
	return b.out
}
