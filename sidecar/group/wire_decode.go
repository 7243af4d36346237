package group

import (
	"errors"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// A follower's hot path: a pull reply decoded without reflection, its
// records' data left where they arrived (the reply's body, which the
// follower owns and keeps until the batch is applied) rather than copied
// into a slice each, and a batch's repeated subject decoded once. What
// it does not know (a snapshot's fields, a divergence, the epochs, any
// form it does not expect) it leaves to MessagePack's decoder, which
// then decodes the whole body: the two always agree on what they both
// take (FuzzDecodePullReply).

// errNotHot: the body has something the hot path leaves to msgpack.
var errNotHot = errors.New("group: not a batch reply")

// decodePullReply decodes body into reply. Data of its records points
// into body.
func decodePullReply(body []byte, reply *PullReply) error {
	var fast PullReply
	if decodeHot(body, &fast) == nil {
		*reply = fast
		return nil
	}
	*reply = PullReply{}
	return msgpack.Unmarshal(body, reply)
}

func decodeHot(body []byte, reply *PullReply) error {
	r := reader{b: body}
	n := r.mapLen()
	for range n {
		switch key := r.str(); string(key) {
		case "v":
			reply.Version = r.intValue()
		case "code":
			reply.Code = r.intValue()
		case "error":
			reply.Error = string(r.str())
		case "epoch":
			reply.Epoch = r.uint()
		case "committed":
			reply.Committed = r.uint()
		case "in_sync":
			reply.InSync = r.bool()
		case "end":
			reply.End = r.uint()
		case "records":
			reply.Records = r.records()
		default:
			return errNotHot
		}
		if r.err != nil {
			return r.err
		}
	}
	if r.err == nil && r.i != len(r.b) {
		return errNotHot // something after the map: msgpack's decoder says what
	}
	return r.err
}

// records decodes an array of WireRecords, or nil.
func (r *reader) records() []WireRecord {
	if r.nil() {
		return nil
	}
	n := r.arrayLen()
	if r.err != nil || n > len(r.b)-r.i { // each record takes a byte at least
		r.fail()
		return nil
	}
	records := make([]WireRecord, n)
	var subject []byte
	var subjectString string
	for k := range records {
		w := &records[k]
		fields := r.mapLen()
		for range fields {
			switch key := r.str(); string(key) {
			case keyJournal:
				w.Journal = r.uint()
			case keyJournaled:
				w.Journaled = r.int()
			case keySubject:
				s := r.str()
				if subject == nil || string(s) != string(subject) {
					subject, subjectString = s, string(s)
				}
				w.Subject = subjectString
			case keyOffset:
				w.Offset = r.uint()
			case keyTimestamp:
				w.Timestamp = r.int()
			case keyHeaders:
				w.Headers = r.headers()
			case keyData:
				w.Data = r.bin()
			case "c":
				w.Chunk = r.intValue()
			case "n":
				w.Chunks = r.intValue()
			case keyDrop:
				w.Drop = r.uint()
			case keyStart:
				w.Start = r.bool()
			default:
				r.err = errNotHot
			}
			if r.err != nil {
				return nil
			}
		}
	}
	return records
}

// headers decodes a map of string to an array of strings, or nil.
func (r *reader) headers() map[string][]string {
	if r.nil() {
		return nil
	}
	n := r.mapLen()
	if r.err != nil || n > len(r.b)-r.i {
		r.fail()
		return nil
	}
	headers := make(map[string][]string, n)
	for range n {
		name := string(r.str())
		var values []string
		if !r.nil() {
			count := r.arrayLen()
			if r.err != nil || count > len(r.b)-r.i {
				r.fail()
				return nil
			}
			values = make([]string, count)
			for k := range values {
				values[k] = string(r.str())
			}
		}
		if r.err != nil {
			return nil
		}
		headers[name] = values
	}
	return headers
}

// reader reads the MessagePack forms of a pull reply. Its first error
// sticks, and every read after it returns a zero value.
type reader struct {
	b   []byte
	i   int
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errNotHot
	}
}

// take returns the next n bytes.
func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b)-r.i {
		r.fail()
		return nil
	}
	out := r.b[r.i : r.i+n : r.i+n]
	r.i += n
	return out
}

func (r *reader) next() byte {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// be reads an n-byte big-endian unsigned integer.
func (r *reader) be(n int) uint64 {
	var v uint64
	for _, c := range r.take(n) {
		v = v<<8 | uint64(c)
	}
	return v
}

// nil reads a nil if there is one.
func (r *reader) nil() bool {
	if r.err == nil && r.i < len(r.b) && r.b[r.i] == 0xc0 {
		r.i++
		return true
	}
	return false
}

func (r *reader) mapLen() int {
	switch c := r.next(); {
	case c&0xf0 == 0x80:
		return int(c & 0x0f)
	case c == 0xde:
		return int(r.be(2))
	case c == 0xdf:
		return int(r.be(4))
	}
	r.fail()
	return 0
}

func (r *reader) arrayLen() int {
	switch c := r.next(); {
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return int(r.be(2))
	case c == 0xdd:
		return int(r.be(4))
	}
	r.fail()
	return 0
}

// str reads a str; the bytes point into the body.
func (r *reader) str() []byte {
	switch c := r.next(); {
	case c&0xe0 == 0xa0:
		return r.take(int(c & 0x1f))
	case c == 0xd9:
		return r.take(int(r.be(1)))
	case c == 0xda:
		return r.take(int(r.be(2)))
	case c == 0xdb:
		return r.take(int(r.be(4)))
	}
	r.fail()
	return nil
}

// bin reads a bin, or nil; the bytes point into the body.
func (r *reader) bin() []byte {
	if r.nil() {
		return nil
	}
	switch c := r.next(); c {
	case 0xc4:
		return r.take(int(r.be(1)))
	case 0xc5:
		return r.take(int(r.be(2)))
	case 0xc6:
		return r.take(int(r.be(4)))
	}
	r.fail()
	return nil
}

func (r *reader) bool() bool {
	switch r.next() {
	case 0xc2:
		return false
	case 0xc3:
		return true
	}
	r.fail()
	return false
}

// integer reads any integer form: its value as a uint64 and whether it
// is negative (then the value is its two's complement).
func (r *reader) integer() (v uint64, negative bool) {
	switch c := r.next(); {
	case c <= 0x7f:
		return uint64(c), false
	case c >= 0xe0:
		return uint64(int64(int8(c))), true
	case c == 0xcc:
		return r.be(1), false
	case c == 0xcd:
		return r.be(2), false
	case c == 0xce:
		return r.be(4), false
	case c == 0xcf:
		return r.be(8), false
	case c == 0xd0:
		v := int64(int8(r.be(1)))
		return uint64(v), v < 0
	case c == 0xd1:
		v := int64(int16(r.be(2)))
		return uint64(v), v < 0
	case c == 0xd2:
		v := int64(int32(r.be(4)))
		return uint64(v), v < 0
	case c == 0xd3:
		v := int64(r.be(8))
		return uint64(v), v < 0
	}
	r.fail()
	return 0, false
}

func (r *reader) uint() uint64 {
	v, negative := r.integer()
	if negative {
		r.fail() // msgpack's decoder has its own rule for these
		return 0
	}
	return v
}

func (r *reader) int() int64 {
	v, negative := r.integer()
	if !negative && v > math.MaxInt64 {
		r.fail()
		return 0
	}
	return int64(v)
}

func (r *reader) intValue() int {
	v := r.int()
	if v > math.MaxInt || v < math.MinInt {
		r.fail()
		return 0
	}
	return int(v)
}
