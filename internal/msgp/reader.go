package msgp

import (
	"errors"
	"math"
)

// ErrUnexpected is a Reader's error: the bytes are not the form asked for
// (or end too soon). The decoders that use a Reader take only the forms
// voik writes and leave anything else to msgpack's general decoder, so
// this is their cue to do so, not a verdict on the body.
var ErrUnexpected = errors.New("msgp: not the form expected")

// Reader reads MessagePack forms from a body, without reflection and
// without copying: strings and bins point into the body. Its first error
// sticks, and every read after it returns a zero value.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads body.
func NewReader(body []byte) *Reader { return &Reader{b: body} }

// Err is the first error, or nil.
func (r *Reader) Err() error { return r.err }

// Fail makes ErrUnexpected the Reader's error, unless it has one.
func (r *Reader) Fail() {
	if r.err == nil {
		r.err = ErrUnexpected
	}
}

// Left is how many bytes are not read yet: every item takes a byte at
// least, so a count above it is a lie, and nothing is allocated by it.
func (r *Reader) Left() int { return len(r.b) }

// Take returns the next n bytes.
func (r *Reader) Take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.Fail()
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *Reader) byte1() byte {
	if b := r.Take(1); b != nil {
		return b[0]
	}
	return 0
}

// be reads an n-byte big-endian unsigned integer.
func (r *Reader) be(n int) uint64 {
	var v uint64
	for _, c := range r.Take(n) {
		v = v<<8 | uint64(c)
	}
	return v
}

// Nil reads a nil if one is next, and says whether it did.
func (r *Reader) Nil() bool {
	if r.err == nil && len(r.b) > 0 && r.b[0] == 0xc0 {
		r.b = r.b[1:]
		return true
	}
	return false
}

// MapLen reads the head of a map: its number of pairs.
func (r *Reader) MapLen() int { return r.length(0x80, 0xde) }

// ArrayLen reads the head of an array: its number of items.
func (r *Reader) ArrayLen() int { return r.length(0x90, 0xdc) }

func (r *Reader) length(fix, code16 byte) int {
	switch c := r.byte1(); {
	case c&0xf0 == fix:
		return int(c & 0x0f)
	case c == code16:
		return int(r.be(2))
	case c == code16+1:
		return int(r.be(4))
	}
	r.Fail()
	return 0
}

// Str reads a str.
func (r *Reader) Str() []byte {
	switch c := r.byte1(); {
	case c&0xe0 == 0xa0:
		return r.Take(int(c & 0x1f))
	case c == 0xd9:
		return r.Take(int(r.be(1)))
	case c == 0xda:
		return r.Take(int(r.be(2)))
	case c == 0xdb:
		return r.Take(int(r.be(4)))
	}
	r.Fail()
	return nil
}

// Bin reads a bin (not a nil: see Nil).
func (r *Reader) Bin() []byte {
	switch r.byte1() {
	case 0xc4:
		return r.Take(int(r.be(1)))
	case 0xc5:
		return r.Take(int(r.be(2)))
	case 0xc6:
		return r.Take(int(r.be(4)))
	}
	r.Fail()
	return nil
}

// Bool reads true or false.
func (r *Reader) Bool() bool {
	switch r.byte1() {
	case 0xc2:
		return false
	case 0xc3:
		return true
	}
	r.Fail()
	return false
}

// integer reads any integer form: its value as a uint64, and whether it
// is negative (then the value is its two's complement).
func (r *Reader) integer() (v uint64, negative bool) {
	switch c := r.byte1(); {
	case r.err != nil:
		return 0, false
	case c <= 0x7f:
		return uint64(c), false
	case c >= 0xe0:
		return uint64(int64(int8(c))), true
	case c >= 0xcc && c <= 0xcf:
		return r.be(1 << (c - 0xcc)), false
	case c >= 0xd0 && c <= 0xd3:
		n := 1 << (c - 0xd0)
		v := int64(r.be(n)<<(64-8*n)) >> (64 - 8*n) // sign-extended
		return uint64(v), v < 0
	}
	r.Fail()
	return 0, false
}

// Uint64 reads an integer that is not negative.
func (r *Reader) Uint64() uint64 {
	v, negative := r.integer()
	if negative {
		r.Fail()
		return 0
	}
	return v
}

// Int64 reads an integer that fits an int64.
func (r *Reader) Int64() int64 {
	v, negative := r.integer()
	if !negative && v > math.MaxInt64 {
		r.Fail()
		return 0
	}
	return int64(v)
}

// Int reads an integer that fits an int.
func (r *Reader) Int() int {
	v := r.Int64()
	if v > math.MaxInt || v < math.MinInt {
		r.Fail()
		return 0
	}
	return int(v)
}

// Headers reads NATS-style headers, a map of str to an array of str (or
// nil), or nil for none.
func (r *Reader) Headers() map[string][]string {
	if r.Nil() {
		return nil
	}
	n := r.MapLen()
	if r.err != nil || n > len(r.b) {
		r.Fail()
		return nil
	}
	headers := make(map[string][]string, n)
	for range n {
		name := string(r.Str())
		var values []string
		if !r.Nil() {
			count := r.ArrayLen()
			if r.err != nil || count > len(r.b) {
				r.Fail()
				return nil
			}
			values = make([]string, count)
			for k := range values {
				values[k] = string(r.Str())
			}
		}
		if r.err != nil {
			return nil
		}
		headers[name] = values
	}
	return headers
}
