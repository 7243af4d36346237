package messages

import (
	"bytes"
	"math"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Limits of the contract.
const (
	DefaultMaxMessages = 100
	MaxMessagesCap     = 10000
	MaxWaitMs          = 60000
	DefaultLimit       = 1000
	DefaultFilter      = ">"
)

// FetchRequest is the body of <prefix>.FETCH.<subject>.
type FetchRequest struct {
	Offset      *uint64 `msgpack:"offset,omitempty"` // nil: from first_offset
	StartTime   int64   `msgpack:"start_time,omitempty"`
	MaxMessages uint64  `msgpack:"max_messages,omitempty"`
	MaxBytes    uint64  `msgpack:"max_bytes,omitempty"` // 0: the reply limit
	WaitMs      uint64  `msgpack:"wait_ms,omitempty"`
}

// SubjectsRequest is the body of <prefix>.SUBJECTS.
type SubjectsRequest struct {
	Filter string `msgpack:"filter,omitempty"`
	Offset uint64 `msgpack:"offset,omitempty"`
	Limit  uint64 `msgpack:"limit,omitempty"`
}

// ReplayRequest is the body of <prefix>.REPLAY.<subject>.
type ReplayRequest struct {
	Offset      *uint64 `msgpack:"offset,omitempty"`
	StartTime   int64   `msgpack:"start_time,omitempty"`
	Deliver     string  `msgpack:"deliver"`
	MaxMessages uint64  `msgpack:"max_messages,omitempty"` // 0: up to end_offset at request time
}

// DecodeFetchRequest decodes and checks a FETCH body, applying the
// contract's defaults and caps (max_bytes is left for the server, which
// knows its reply limit).
func DecodeFetchRequest(body []byte) (FetchRequest, *Error) {
	var r FetchRequest
	err := walkMap(body, func(d *msgpack.Decoder, key string) *Error {
		if shared, err := decodeStart(d, key, &r.Offset, &r.StartTime, &r.MaxMessages); shared {
			return err
		}
		var err *Error
		switch key {
		case "max_bytes":
			r.MaxBytes, _, err = decodeUint(d, key)
		case "wait_ms":
			r.WaitMs, _, err = decodeUint(d, key)
		default:
			err = skip(d)
		}
		return err
	})
	if err != nil {
		return FetchRequest{}, err
	}
	if r.MaxMessages == 0 {
		r.MaxMessages = DefaultMaxMessages
	}
	r.MaxMessages = min(r.MaxMessages, MaxMessagesCap)
	r.WaitMs = min(r.WaitMs, MaxWaitMs)
	return r, nil
}

// DecodeSubjectsRequest decodes and checks a SUBJECTS body.
func DecodeSubjectsRequest(body []byte) (SubjectsRequest, *Error) {
	var r SubjectsRequest
	err := walkMap(body, func(d *msgpack.Decoder, key string) *Error {
		var err *Error
		switch key {
		case "filter":
			r.Filter, err = decodeString(d, key)
		case "offset":
			r.Offset, _, err = decodeUint(d, key)
		case "limit":
			r.Limit, _, err = decodeUint(d, key)
		default:
			err = skip(d)
		}
		return err
	})
	if err != nil {
		return SubjectsRequest{}, err
	}
	if r.Filter == "" {
		r.Filter = DefaultFilter
	}
	if !ValidFilter(r.Filter) {
		return SubjectsRequest{}, Errorf(CodeBadRequest, "filter %s is not a valid subject filter", Quote(r.Filter))
	}
	if r.Limit == 0 {
		r.Limit = DefaultLimit
	}
	return r, nil
}

// DecodeReplayRequest decodes a REPLAY body and checks that deliver is a
// concrete subject. Whether deliver is under the API prefix is the
// server's check.
func DecodeReplayRequest(body []byte) (ReplayRequest, *Error) {
	var r ReplayRequest
	err := walkMap(body, func(d *msgpack.Decoder, key string) *Error {
		if shared, err := decodeStart(d, key, &r.Offset, &r.StartTime, &r.MaxMessages); shared {
			return err
		}
		var err *Error
		switch key {
		case "deliver":
			r.Deliver, err = decodeString(d, key)
		default:
			err = skip(d)
		}
		return err
	})
	if err != nil {
		return ReplayRequest{}, err
	}
	if r.Deliver == "" {
		return ReplayRequest{}, Errorf(CodeBadRequest, "deliver is required")
	}
	if !ValidSubject(r.Deliver) {
		return ReplayRequest{}, Errorf(CodeBadRequest, "deliver %s is not a valid subject without wildcards", Quote(r.Deliver))
	}
	return r, nil
}

// decodeStart reads a field that FETCH and REPLAY share (offset,
// start_time, max_messages) and reports whether key was one of them.
func decodeStart(d *msgpack.Decoder, key string, offset **uint64, startTime *int64, maxMessages *uint64) (bool, *Error) {
	var err *Error
	switch key {
	case "offset":
		var v uint64
		var present bool
		if v, present, err = decodeUint(d, key); present {
			*offset = &v
		}
	case "start_time":
		*startTime, err = decodeNonNegativeInt(d, key)
	case "max_messages":
		*maxMessages, _, err = decodeUint(d, key)
	default:
		return false, nil
	}
	return true, err
}

// DecodeInfoRequest checks an INFO body. INFO takes no fields, but its
// body is a request body like any other: empty, nil, or a map (whose keys
// are all ignored); anything else is a 400.
func DecodeInfoRequest(body []byte) *Error {
	return walkMap(body, func(d *msgpack.Decoder, _ string) *Error { return skip(d) })
}

// walkMap calls field for every key of the MessagePack map in body. An
// empty body or nil is an empty map. field must consume the key's value.
func walkMap(body []byte, field func(d *msgpack.Decoder, key string) *Error) *Error {
	if len(body) == 0 {
		return nil
	}
	d := msgpack.NewDecoder(bytes.NewReader(body))
	code, err := d.PeekCode()
	if err != nil {
		return Errorf(CodeBadRequest, "request body is not a MessagePack map")
	}
	if code == msgpcode.Nil {
		if len(body) != 1 {
			return Errorf(CodeBadRequest, "trailing bytes after the request body")
		}
		return nil
	}
	if !msgpcode.IsFixedMap(code) && code != msgpcode.Map16 && code != msgpcode.Map32 {
		return Errorf(CodeBadRequest, "request body is not a MessagePack map")
	}
	n, err := d.DecodeMapLen()
	if err != nil {
		return Errorf(CodeBadRequest, "request body: %v", err)
	}
	for i := 0; i < n; i++ {
		code, err := d.PeekCode()
		if err != nil {
			return Errorf(CodeBadRequest, "request body ends inside the map")
		}
		if !isStringCode(code) {
			return Errorf(CodeBadRequest, "request map keys must be strings")
		}
		key, err := d.DecodeString()
		if err != nil {
			return Errorf(CodeBadRequest, "request body: bad key: %v", err)
		}
		if err := field(d, key); err != nil {
			return err
		}
	}
	if _, err := d.PeekCode(); err == nil {
		return Errorf(CodeBadRequest, "trailing bytes after the request map")
	}
	return nil
}

func isStringCode(c byte) bool {
	return msgpcode.IsFixedString(c) || c == msgpcode.Str8 || c == msgpcode.Str16 || c == msgpcode.Str32
}

func isBinCode(c byte) bool {
	return c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32
}

func isIntCode(c byte) bool {
	return msgpcode.IsFixedNum(c) || c >= msgpcode.Uint8 && c <= msgpcode.Int64
}

func skip(d *msgpack.Decoder) *Error {
	if err := d.Skip(); err != nil {
		return Errorf(CodeBadRequest, "request body: %v", err)
	}
	return nil
}

// decodeUint reads an unsigned field. nil is an absent field. A float
// whose value is a whole number is that number (JavaScript sends a
// computed number, 100/4 or Date.now()*1e6, as a float64). A negative
// number, a fractional, infinite or NaN float, one of 2^64 or more, or a
// value of another type is a 400.
func decodeUint(d *msgpack.Decoder, key string) (uint64, bool, *Error) {
	code, err := d.PeekCode()
	if err != nil {
		return 0, false, Errorf(CodeBadRequest, "%s: missing value", key)
	}
	switch {
	case code == msgpcode.Nil:
		d.Skip()
		return 0, false, nil
	case code == msgpcode.Float || code == msgpcode.Double:
		f, err := d.DecodeFloat64()
		if err != nil {
			return 0, false, Errorf(CodeBadRequest, "%s: %v", key, err)
		}
		v, problem := wholeUint(f)
		if problem != "" {
			return 0, false, Errorf(CodeBadRequest, "%s must be an unsigned integer, got %v (%s)", key, f, problem)
		}
		return v, true, nil
	case !isIntCode(code):
		d.Skip()
		return 0, false, Errorf(CodeBadRequest, "%s must be an unsigned integer", key)
	case code == msgpcode.Uint64:
		v, err := d.DecodeUint64()
		if err != nil {
			return 0, false, Errorf(CodeBadRequest, "%s: %v", key, err)
		}
		return v, true, nil
	}
	v, err := d.DecodeInt64()
	if err != nil {
		return 0, false, Errorf(CodeBadRequest, "%s: %v", key, err)
	}
	if v < 0 {
		return 0, false, Errorf(CodeBadRequest, "%s must not be negative, got %d", key, v)
	}
	return uint64(v), true, nil
}

// wholeUint is f as a uint64 when f is a whole number in its range, or
// says why not.
func wholeUint(f float64) (uint64, string) {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, "not a finite number"
	case f != math.Trunc(f):
		return 0, "not a whole number"
	case f < 0:
		return 0, "negative"
	case f >= 1<<64:
		return 0, "out of range"
	}
	return uint64(f), ""
}

// decodeNonNegativeInt reads a signed field that must not be negative.
func decodeNonNegativeInt(d *msgpack.Decoder, key string) (int64, *Error) {
	v, _, err := decodeUint(d, key)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt64 {
		return 0, Errorf(CodeBadRequest, "%s %d is out of range", key, v)
	}
	return int64(v), nil
}

// decodeString reads a string field; MessagePack bin is accepted too, for
// clients whose libraries write strings that way. nil is empty.
func decodeString(d *msgpack.Decoder, key string) (string, *Error) {
	code, err := d.PeekCode()
	if err != nil {
		return "", Errorf(CodeBadRequest, "%s: missing value", key)
	}
	switch {
	case code == msgpcode.Nil:
		d.Skip()
		return "", nil
	case isStringCode(code):
		s, err := d.DecodeString()
		if err != nil {
			return "", Errorf(CodeBadRequest, "%s: %v", key, err)
		}
		return s, nil
	case isBinCode(code):
		// Not d.DecodeBytes: it allocates whatever length the bin header
		// claims (4 GiB for a 13-byte request) before reading a byte.
		n, err := d.DecodeBytesLen()
		if err == nil {
			var b []byte
			if b, err = readBounded(d, n); err == nil {
				return string(b), nil
			}
		}
		return "", Errorf(CodeBadRequest, "%s: %v", key, err)
	}
	d.Skip()
	return "", Errorf(CodeBadRequest, "%s must be a string", key)
}

// readBounded reads n bytes in steps, so that memory grows only as far as
// the body really goes: a length is trusted no further than its bytes.
func readBounded(d *msgpack.Decoder, n int) ([]byte, error) {
	const step = 64 << 10
	b := make([]byte, 0, min(n, step))
	for len(b) < n {
		at := len(b)
		b = append(b, make([]byte, min(n-at, step))...)
		if err := d.ReadFull(b[at:]); err != nil {
			return nil, err
		}
	}
	return b, nil
}
