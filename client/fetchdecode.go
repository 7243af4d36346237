package client

import (
	"encoding/binary"
	"errors"
	"github.com/voik/voik/messages"
)

// A FETCH reply can be a megabyte of records. decodeFetchReply reads the
// shape voik writes without reflection, and without copying record data:
// each messages.Record.Data points into the reply body, which the client owns. A
// body it does not expect (a key it does not know, an unusual type) makes
// it give up with errNotFast, and the caller decodes it the general way.

var errNotFast = errors.New("messages: reply needs the general decoder")

// reader walks MessagePack bytes; any problem is errNotFast.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() { r.err = errNotFast }

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.fail()
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte1() byte {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// length reads a big-endian length of n bytes.
func (r *reader) length(n int) int {
	b := r.take(n)
	switch n {
	case 1:
		if b != nil {
			return int(b[0])
		}
	case 2:
		if b != nil {
			return int(binary.BigEndian.Uint16(b))
		}
	case 4:
		if b != nil {
			return int(binary.BigEndian.Uint32(b))
		}
	}
	return 0
}

func (r *reader) mapLen() int {
	c := r.byte1()
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f)
	case c == 0xde:
		return r.length(2)
	case c == 0xdf:
		return r.length(4)
	}
	r.fail()
	return 0
}

func (r *reader) arrayLen() int {
	c := r.byte1()
	switch {
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return r.length(2)
	case c == 0xdd:
		return r.length(4)
	}
	r.fail()
	return 0
}

func (r *reader) str() []byte {
	c := r.byte1()
	switch {
	case c&0xe0 == 0xa0:
		return r.take(int(c & 0x1f))
	case c == 0xd9:
		return r.take(r.length(1))
	case c == 0xda:
		return r.take(r.length(2))
	case c == 0xdb:
		return r.take(r.length(4))
	}
	r.fail()
	return nil
}

func (r *reader) bin() []byte {
	switch r.byte1() {
	case 0xc4:
		return r.take(r.length(1))
	case 0xc5:
		return r.take(r.length(2))
	case 0xc6:
		return r.take(r.length(4))
	}
	r.fail()
	return nil
}

// int64 reads any MessagePack integer that fits an int64.
func (r *reader) int64() int64 {
	c := r.byte1()
	switch {
	case c <= 0x7f:
		return int64(c)
	case c >= 0xe0:
		return int64(int8(c))
	}
	switch c {
	case 0xcc:
		return int64(r.byte1())
	case 0xcd:
		if b := r.take(2); b != nil {
			return int64(binary.BigEndian.Uint16(b))
		}
	case 0xce:
		if b := r.take(4); b != nil {
			return int64(binary.BigEndian.Uint32(b))
		}
	case 0xcf:
		if b := r.take(8); b != nil {
			v := binary.BigEndian.Uint64(b)
			if v > 1<<63-1 {
				r.fail()
			}
			return int64(v)
		}
	case 0xd0:
		return int64(int8(r.byte1()))
	case 0xd1:
		if b := r.take(2); b != nil {
			return int64(int16(binary.BigEndian.Uint16(b)))
		}
	case 0xd2:
		if b := r.take(4); b != nil {
			return int64(int32(binary.BigEndian.Uint32(b)))
		}
	case 0xd3:
		if b := r.take(8); b != nil {
			return int64(binary.BigEndian.Uint64(b))
		}
	default:
		r.fail()
	}
	return 0
}

// uint64 reads a non-negative MessagePack integer.
func (r *reader) uint64() uint64 {
	if len(r.b) > 0 && r.b[0] == 0xcf {
		if b := r.take(9); b != nil {
			return binary.BigEndian.Uint64(b[1:])
		}
		return 0
	}
	v := r.int64()
	if v < 0 {
		r.fail()
	}
	return uint64(v)
}

func (r *reader) headers() map[string][]string {
	if len(r.b) > 0 && r.b[0] == 0xc0 {
		r.take(1)
		return nil
	}
	n := r.mapLen()
	if r.err != nil || n > len(r.b) {
		r.fail()
		return nil
	}
	headers := make(map[string][]string, n)
	for i := 0; i < n && r.err == nil; i++ {
		name := string(r.str())
		count := r.arrayLen()
		if r.err != nil || count > len(r.b) {
			r.fail()
			return nil
		}
		values := make([]string, count)
		for j := range values {
			values[j] = string(r.str())
		}
		headers[name] = values
	}
	return headers
}

func (r *reader) record(rec *messages.Record) {
	n := r.mapLen()
	for i := 0; i < n && r.err == nil; i++ {
		switch string(r.str()) {
		case "offset":
			rec.Offset = r.uint64()
		case "ts":
			rec.Timestamp = r.int64()
		case "headers":
			rec.Headers = r.headers()
		case "data":
			rec.Data = r.bin()
		default:
			r.fail()
		}
	}
}

// decodeFetchReply decodes body into reply, or returns errNotFast.
func decodeFetchReply(body []byte, reply *messages.FetchReply) error {
	r := &reader{b: body}
	n := r.mapLen()
	for i := 0; i < n && r.err == nil; i++ {
		switch string(r.str()) {
		case "subject":
			reply.Subject = string(r.str())
		case "records":
			count := r.arrayLen()
			if r.err != nil || count > len(r.b) {
				r.fail()
				break
			}
			reply.Records = make([]messages.Record, count)
			for j := range reply.Records {
				r.record(&reply.Records[j])
			}
		case "next_offset":
			reply.NextOffset = r.uint64()
		case "first_offset":
			reply.FirstOffset = r.uint64()
		case "end_offset":
			reply.EndOffset = r.uint64()
		default:
			r.fail()
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	return r.err
}
