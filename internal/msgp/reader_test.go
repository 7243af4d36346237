package msgp

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The Reader reads back every form the appenders write, and every integer
// width msgpack's own encoder picks, with the value msgpack decodes.
func TestReaderReadsWhatTheEncodersWrite(t *testing.T) {
	var b []byte
	b = AppendMapLen(b, 20)
	b = AppendArrayLen(b, 70_000)
	b = AppendString(b, "subject")
	b = AppendBinLen(b, 3)
	b = append(b, "abc"...)
	b = AppendBool(AppendBool(b, true), false)
	b = AppendNil(b)
	b = AppendUint64(b, math.MaxUint64)
	b = AppendInt64(b, math.MinInt64)
	r := NewReader(b)
	if r.MapLen() != 20 || r.ArrayLen() != 70_000 || string(r.Str()) != "subject" || string(r.Bin()) != "abc" ||
		!r.Bool() || r.Bool() || !r.Nil() || r.Nil() || r.Uint64() != math.MaxUint64 || r.Int64() != math.MinInt64 ||
		r.Err() != nil || r.Left() != 0 {
		t.Fatalf("read back wrong: %v", r.Err())
	}
	for _, v := range []int64{0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 32, math.MaxInt64, -1, -32, -33, -128, -129, -32768, -32769, -1 << 31, -1<<31 - 1, math.MinInt64} {
		body, _ := msgpack.Marshal(v)
		if got := NewReader(body).Int64(); got != v {
			t.Errorf("int %d (% x): read %d", v, body, got)
		}
		r := NewReader(body)
		u := r.Uint64()
		if v >= 0 && (u != uint64(v) || r.Err() != nil) || v < 0 && !errors.Is(r.Err(), ErrUnexpected) {
			t.Errorf("uint of %d (% x): %d, %v", v, body, u, r.Err())
		}
	}
	headers := map[string][]string{"A": {"1", ""}, "B": nil, "C": {}}
	body, _ := msgpack.Marshal(headers)
	if got := NewReader(body).Headers(); !reflect.DeepEqual(got, headers) {
		t.Errorf("headers %#v", got)
	}
}

// A count larger than the bytes left, a body cut short, or a form other
// than the one asked for is ErrUnexpected, and the error sticks.
func TestReaderRefusesWhatItCannotRead(t *testing.T) {
	for name, body := range map[string][]byte{
		"cut short":        {0xda, 0x00},
		"str for a bin":    AppendString(nil, "x"),
		"headers too many": {0xdf, 0xff, 0xff, 0xff, 0xff},
		"empty":            {},
	} {
		r := NewReader(body)
		switch name {
		case "str for a bin":
			r.Bin()
		case "headers too many":
			r.Headers()
		default:
			r.Str()
		}
		if !errors.Is(r.Err(), ErrUnexpected) || r.Str() != nil || r.Take(0) != nil {
			t.Errorf("%s: %v", name, r.Err())
		}
	}
}
