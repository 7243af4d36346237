package messages

import (
	"bytes"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func u64(v uint64) *uint64 { return &v }

func TestDecodeFetchRequest(t *testing.T) {
	cases := []struct {
		name string
		body []byte
		want FetchRequest
		code int // 0: success
	}{
		{"empty body is all defaults", nil, FetchRequest{MaxMessages: 100}, 0},
		{"nil is all defaults", []byte{0xc0}, FetchRequest{MaxMessages: 100}, 0},
		{"empty map", mustMarshal(t, map[string]any{}), FetchRequest{MaxMessages: 100}, 0},
		{"offset 0 is offset 0", mustMarshal(t, map[string]any{"offset": 0}), FetchRequest{Offset: u64(0), MaxMessages: 100}, 0},
		{"offset nil is absent", mustMarshal(t, map[string]any{"offset": nil}), FetchRequest{MaxMessages: 100}, 0},
		{"every width", mustMarshal(t, map[string]any{"offset": uint8(7), "max_messages": int16(5), "max_bytes": uint32(9), "wait_ms": int64(10), "start_time": uint64(3)}),
			FetchRequest{Offset: u64(7), MaxMessages: 5, MaxBytes: 9, WaitMs: 10, StartTime: 3}, 0},
		{"uint64 offset", mustMarshal(t, map[string]any{"offset": uint64(1 << 63)}), FetchRequest{Offset: u64(1 << 63), MaxMessages: 100}, 0},
		{"caps as whole floats", mustMarshal(t, map[string]any{"max_messages": 1e6, "wait_ms": 1e9}), FetchRequest{MaxMessages: 10000, WaitMs: 60000}, 0},
		{"whole floats are their integers", mustMarshal(t, map[string]any{"offset": 100.0 / 4, "max_bytes": float32(512), "start_time": 1.7954e18}),
			FetchRequest{Offset: u64(25), MaxBytes: 512, StartTime: 1795400000000000000, MaxMessages: 100}, 0},
		{"fractional float offset", mustMarshal(t, map[string]any{"offset": 2.5}), FetchRequest{}, 400},
		{"NaN", mustMarshal(t, map[string]any{"offset": math.NaN()}), FetchRequest{}, 400},
		{"infinity", mustMarshal(t, map[string]any{"max_messages": math.Inf(1)}), FetchRequest{}, 400},
		{"negative float", mustMarshal(t, map[string]any{"wait_ms": -1.0}), FetchRequest{}, 400},
		{"float of 2^64", mustMarshal(t, map[string]any{"offset": 18446744073709551616.0}), FetchRequest{}, 400},
		{"float start_time of 2^63", mustMarshal(t, map[string]any{"start_time": 9223372036854775808.0}), FetchRequest{}, 400},
		{"caps as integers", mustMarshal(t, map[string]any{"max_messages": 1000000, "wait_ms": 1000000}), FetchRequest{MaxMessages: 10000, WaitMs: 60000}, 0},
		{"max_messages 0 is default", mustMarshal(t, map[string]any{"max_messages": 0}), FetchRequest{MaxMessages: 100}, 0},
		{"unknown keys ignored", mustMarshal(t, map[string]any{"shoe_size": []any{1, "x", map[string]any{"a": 1}}, "offset": 1}), FetchRequest{Offset: u64(1), MaxMessages: 100}, 0},
		{"negative offset", mustMarshal(t, map[string]any{"offset": -1}), FetchRequest{}, 400},
		{"negative start_time", mustMarshal(t, map[string]any{"start_time": -5}), FetchRequest{}, 400},
		{"string offset", mustMarshal(t, map[string]any{"offset": "3"}), FetchRequest{}, 400},
		{"float wait", mustMarshal(t, map[string]any{"wait_ms": 1.5}), FetchRequest{}, 400},
		{"start_time above int64", mustMarshal(t, map[string]any{"start_time": uint64(1 << 63)}), FetchRequest{}, 400},
		{"array body", mustMarshal(t, []int{1, 2}), FetchRequest{}, 400},
		{"string body", mustMarshal(t, "offset"), FetchRequest{}, 400},
		{"integer keys", mustMarshal(t, map[int]int{1: 2}), FetchRequest{}, 400},
		{"truncated map", mustMarshal(t, map[string]any{"offset": 1})[:3], FetchRequest{}, 400},
		{"trailing bytes", append(mustMarshal(t, map[string]any{"offset": 1}), 0x01), FetchRequest{}, 400},
		{"json", []byte(`{"offset": 1}`), FetchRequest{}, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeFetchRequest(c.body)
			if c.code != 0 {
				if err == nil || err.Code != c.code {
					t.Fatalf("got %+v, %v; want code %d", got, err, c.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v (offset %v), want %+v", got, got.Offset, c.want)
			}
		})
	}
}

func TestDecodeSubjectsAndReplayRequests(t *testing.T) {
	s, err := DecodeSubjectsRequest(nil)
	if err != nil || s.Filter != ">" || s.Limit != 1000 || s.Offset != 0 {
		t.Fatalf("subjects defaults: %+v %v", s, err)
	}
	if _, err := DecodeSubjectsRequest(mustMarshal(t, map[string]any{"filter": "a..b"})); err == nil || err.Code != 400 {
		t.Fatalf("bad filter: %v", err)
	}
	if _, err := DecodeSubjectsRequest(mustMarshal(t, map[string]any{"filter": 5})); err == nil || err.Code != 400 {
		t.Fatalf("filter of the wrong type: %v", err)
	}
	r, err := DecodeReplayRequest(mustMarshal(t, map[string]any{"deliver": []byte("_INBOX.x"), "offset": 0}))
	if err != nil || r.Deliver != "_INBOX.x" || r.Offset == nil || *r.Offset != 0 {
		t.Fatalf("replay with bin deliver: %+v %v", r, err)
	}
	for name, body := range map[string]map[string]any{
		"no deliver":       {"offset": 1},
		"wildcard deliver": {"deliver": "a.*"},
		"empty token":      {"deliver": "a..b"},
		"deliver not str":  {"deliver": 7},
	} {
		if _, err := DecodeReplayRequest(mustMarshal(t, body)); err == nil || err.Code != 400 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSubjectRules(t *testing.T) {
	for s, want := range map[string]bool{"a": true, "a.b": true, "a.*": false, "a.>": false, "": false, "a..b": false, ".a": false, "a.": false, "a b": false, "a*b.c": true} {
		if ValidSubject(s) != want {
			t.Errorf("ValidSubject(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{">": true, "a.*": true, "*.b.>": true, "a.>.b": false, "a..b": false} {
		if ValidFilter(s) != want {
			t.Errorf("ValidFilter(%q) = %v", s, !want)
		}
	}
	matches := []struct {
		filter, subject string
		want            bool
	}{
		{">", "a", true}, {">", "a.b", true}, {"a.>", "a", false}, {"a.>", "a.b.c", true},
		{"a.*", "a.b", true}, {"a.*", "a.b.c", false}, {"a.*", "a", false}, {"*.b", "a.b", true}, {"a.b", "a.b", true}, {"a.b", "a.c", false},
	}
	for _, m := range matches {
		if Matches(m.filter, m.subject) != m.want {
			t.Errorf("Matches(%q, %q) = %v", m.filter, m.subject, !m.want)
		}
	}
	if !Covers(">", "a.*") || !Covers("a.>", "a.b.*") || Covers("a.*", "a.>") || Covers("a.b", "a.*") {
		t.Error("Covers")
	}
	if !Overlap("a.*.c", "a.b.*") || Overlap("a.b", "a.c") || !Overlap("a.>", "*.b") || Overlap("a.>", "a") {
		t.Error("Overlap")
	}
}

func TestFetchReplyBuilderRoundTrip(t *testing.T) {
	var b FetchReplyBuilder
	records := []Record{
		{Offset: 7, Timestamp: 100, Data: []byte{}},
		{Offset: 8, Timestamp: 101, Headers: map[string][]string{"b": {"2", ""}, "A": {"1"}}, Data: []byte("hello")},
		{Offset: 9, Timestamp: 102, Data: bytes.Repeat([]byte{0xff}, 70000)},
	}
	for _, r := range records {
		b.Add(r.Offset, r.Timestamp, r.Headers, r.Data)
	}
	body := b.Finish("orders.eu", 10, 3, 12)
	var reply FetchReply
	if err := msgpack.Unmarshal(body, &reply); err != nil {
		t.Fatal(err)
	}
	want := FetchReply{Subject: "orders.eu", Records: records, NextOffset: 10, FirstOffset: 3, EndOffset: 12}
	if !reflect.DeepEqual(reply, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", reply, want)
	}
	// data is always bin, never nil, even when empty
	var raw map[string]any
	msgpack.Unmarshal(body, &raw)
	if first := raw["records"].([]any)[0].(map[string]any); first["data"] == nil {
		t.Fatal("empty data encoded as nil")
	} else if _, hasHeaders := first["headers"]; hasHeaders {
		t.Fatal("headers present on a record without any")
	}
}

// Finish writes the reply's head into room kept before the records; the
// builder must stay right when it is finished twice, added to after a
// Finish, reused after Reset, and when a subject is too long for the room.
func TestFetchReplyBuilderFinishesTheSameWayWhateverCameBefore(t *testing.T) {
	long := strings.Repeat("s", 5000) // longer than the room for the head
	for _, subject := range []string{"orders.eu", long} {
		want := func(records ...Record) []byte {
			body, err := msgpack.Marshal(FetchReply{Subject: subject, Records: records, NextOffset: 9, FirstOffset: 1, EndOffset: 9})
			if err != nil {
				t.Fatal(err)
			}
			return body
		}
		r1 := Record{Offset: 1, Timestamp: 5, Data: []byte("one")}
		r2 := Record{Offset: 2, Timestamp: 6, Headers: map[string][]string{"h": {"v"}}, Data: []byte("two")}
		var b FetchReplyBuilder
		check := func(step string, got []byte, records ...Record) {
			t.Helper()
			var gotReply, wantReply FetchReply
			if err := msgpack.Unmarshal(got, &gotReply); err != nil {
				t.Fatalf("%s, subject of %d bytes: %v", step, len(subject), err)
			}
			msgpack.Unmarshal(want(records...), &wantReply)
			if len(gotReply.Records) == 0 && len(wantReply.Records) == 0 {
				gotReply.Records, wantReply.Records = nil, nil // empty either way
			}
			if !reflect.DeepEqual(gotReply, wantReply) {
				t.Fatalf("%s, subject of %d bytes:\n got %+v\nwant %+v", step, len(subject), gotReply, wantReply)
			}
		}
		check("no records", b.Finish(subject, 9, 1, 9))
		b.Add(r1.Offset, r1.Timestamp, r1.Headers, r1.Data)
		check("one record", b.Finish(subject, 9, 1, 9), r1)
		check("finished again", b.Finish(subject, 9, 1, 9), r1)
		b.Add(r2.Offset, r2.Timestamp, r2.Headers, r2.Data)
		check("added after Finish", b.Finish(subject, 9, 1, 9), r1, r2)
		if !b.AddWithin(1<<20, subject, 3, 7, nil, []byte("three")) || b.AddWithin(10, subject, 4, 8, nil, nil) {
			t.Fatal("AddWithin after Finish")
		}
		check("AddWithin after Finish", b.Finish(subject, 9, 1, 9), r1, r2, Record{Offset: 3, Timestamp: 7, Data: []byte("three")})
		b.Reset()
		b.Add(r2.Offset, r2.Timestamp, r2.Headers, r2.Data)
		check("after Reset", b.Finish(subject, 9, 1, 9), r2)
	}
}

func TestErrorReplyShape(t *testing.T) {
	body := EncodeError(Errorf(416, "offset %d is out of range", 9))
	var raw map[string]map[string]any
	if err := msgpack.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 || raw["error"]["description"] != "offset 9 is out of range" {
		t.Fatalf("error reply %v", raw)
	}
	var decoded ErrorReply
	if err := msgpack.Unmarshal(body, &decoded); err != nil || decoded.Error == nil || decoded.Error.Code != 416 || !strings.Contains(decoded.Error.Error(), "416") {
		t.Fatalf("error reply decodes to %+v (%v)", decoded.Error, err)
	}
}

// FuzzDecodeRequests: no body, however malformed, panics a decoder; every
// failure is a 400; a decoded request respects the caps.
func FuzzDecodeRequests(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0xc0})
	f.Add(mustMarshal(f, map[string]any{"offset": 1, "max_messages": 5, "wait_ms": 100}))
	f.Add(mustMarshal(f, map[string]any{"filter": "a.>", "limit": 3}))
	f.Add(mustMarshal(f, map[string]any{"deliver": "_INBOX.x", "start_time": 12}))
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})                                              // map32 with 4G entries
	f.Add([]byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff})                                        // key str32 of 4 GiB
	f.Add([]byte{0x81, 0xa6, 'f', 'i', 'l', 't', 'e', 'r', 0xc6, 0xff, 0xff, 0xff, 0xff, 1}) // filter bin32 of 4 GiB
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := DecodeInfoRequest(body); err != nil && err.Code != 400 {
			t.Fatalf("info: code %d", err.Code)
		}
		if r, err := DecodeFetchRequest(body); err != nil {
			if err.Code != 400 {
				t.Fatalf("fetch: code %d", err.Code)
			}
		} else if r.MaxMessages == 0 || r.MaxMessages > MaxMessagesCap || r.WaitMs > MaxWaitMs || r.StartTime < 0 {
			t.Fatalf("fetch: %+v outside the caps", r)
		}
		if r, err := DecodeSubjectsRequest(body); err != nil {
			if err.Code != 400 {
				t.Fatalf("subjects: code %d", err.Code)
			}
		} else if !ValidFilter(r.Filter) || r.Limit == 0 {
			t.Fatalf("subjects: %+v", r)
		}
		if r, err := DecodeReplayRequest(body); err != nil {
			if err.Code != 400 {
				t.Fatalf("replay: code %d", err.Code)
			}
		} else if !ValidSubject(r.Deliver) {
			t.Fatalf("replay: %+v", r)
		}
	})
}

func TestHugeLengthsInARequestAllocateNothingLikeThem(t *testing.T) {
	bin32 := []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3} // claims 4 GiB, holds 3 bytes
	str32 := []byte{0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}
	bodies := map[string][]byte{
		"filter bin32":  append([]byte{0x81, 0xa6, 'f', 'i', 'l', 't', 'e', 'r'}, bin32...),
		"deliver bin32": append([]byte{0x81, 0xa7, 'd', 'e', 'l', 'i', 'v', 'e', 'r'}, bin32...),
		"filter str32":  append([]byte{0x81, 0xa6, 'f', 'i', 'l', 't', 'e', 'r'}, str32...),
		"unknown bin32": append([]byte{0x81, 0xa1, 'x'}, bin32...),
		"key str32":     append([]byte{0x81}, str32...),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, subjectsErr := DecodeSubjectsRequest(body)
			_, replayErr := DecodeReplayRequest(body)
			infoErr := DecodeInfoRequest(body)
			runtime.ReadMemStats(&after)
			if subjectsErr == nil || replayErr == nil || infoErr == nil || subjectsErr.Code != 400 || replayErr.Code != 400 || infoErr.Code != 400 {
				t.Fatalf("want 400s, got %v, %v, %v", subjectsErr, replayErr, infoErr)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
				t.Fatalf("decoding a %d-byte body allocated %d bytes", len(body), grew)
			}
		})
	}
}

func TestDecodeInfoRequestTakesAnyMapOrNothing(t *testing.T) {
	for _, body := range [][]byte{nil, {0xc0}, {0x80}, mustMarshal(t, map[string]any{"x": []int{1}})} {
		if err := DecodeInfoRequest(body); err != nil {
			t.Fatalf("% x: %v", body, err)
		}
	}
	for _, body := range [][]byte{{0x01}, mustMarshal(t, "a"), {0x81, 0x01, 0x01}, {0x81}, {0x80, 0x80}} {
		if err := DecodeInfoRequest(body); err == nil || err.Code != 400 {
			t.Fatalf("% x: %v, want a 400", body, err)
		}
	}
}

func TestQuoteCutsLongStrings(t *testing.T) {
	if got := Quote("a.b"); got != `"a.b"` {
		t.Fatalf("Quote(a.b) = %s", got)
	}
	long := strings.Repeat("x", 10000)
	if got := Quote(long); len(got) > 200 || !strings.Contains(got, "10000 bytes") {
		t.Fatalf("Quote of 10000 bytes = %s", got)
	}
}

func TestAddWithinIsExactAtTheBoundary(t *testing.T) {
	headerSets := []map[string][]string{nil, {"A": {"1"}}, {"Multi": {"x", "", strings.Repeat("v", 300)}, strings.Repeat("N", 40): {"y"}}}
	for _, subject := range []string{"s", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("s", 300)} {
		for _, dataLen := range []int{0, 1, 31, 32, 255, 256, 65535, 65536, 70000} {
			for hi, headers := range headerSets {
				for _, offsets := range [][3]uint64{{0, 0, 1}, {127, 100, 128}, {255, 200, 70000}, {1 << 33, 1 << 32, 1<<33 + 1}} {
					offset, first, end := offsets[0], offsets[1], offsets[2]
					data := bytes.Repeat([]byte{'d'}, dataLen)
					var b FetchReplyBuilder
					for i := 0; i < 17; i++ { // past the fixarray limit of 15
						b.Add(offset, 1, nil, nil)
					}
					var probe FetchReplyBuilder
					for i := 0; i < 17; i++ {
						probe.Add(offset, 1, nil, nil)
					}
					probe.Add(offset, -5, headers, data)
					exact := len(probe.Finish(subject, offset+1, first, end))
					if b.AddWithin(exact-1, subject, offset, -5, headers, data) {
						t.Fatalf("subject %d, data %d, headers %d, offsets %v: accepted under %d bytes", len(subject), dataLen, hi, offsets, exact-1)
					}
					if b.Count() != 17 {
						t.Fatalf("a refused record was kept")
					}
					if !b.AddWithin(exact, subject, offset, -5, headers, data) {
						t.Fatalf("subject %d, data %d, headers %d, offsets %v: refused at its exact size %d", len(subject), dataLen, hi, offsets, exact)
					}
					if got := b.Finish(subject, offset+1, first, end); !bytes.Equal(got, probe.Finish(subject, offset+1, first, end)) {
						t.Fatalf("the reply after a refusal differs")
					}
				}
			}
		}
	}
}

// TestAppendAckReplyDecodesAsAckReply: the hand-written ack encoder
// writes, byte for byte, what the reflective encoder writes for the same
// AckReply, for every integer width and string length, with and without
// duplicate (written only when true).
func TestAppendAckReplyDecodesAsAckReply(t *testing.T) {
	subjects := []string{"a", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("s", 255), strings.Repeat("s", 256), strings.Repeat("s", 70000)}
	numbers := []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<63 - 1, 1<<64 - 1}
	timestamps := []int64{0, 1, 127, 128, -1, -32, -33, -128, -129, -32768, -32769, -1 << 31, -1<<31 - 1, -1 << 63, 1<<63 - 1, 1795657050823708284}
	for _, subject := range subjects {
		for _, offset := range numbers {
			for _, ts := range timestamps {
				for _, duplicate := range []bool{false, true} {
					want := AckReply{Subject: subject, Offset: offset, Timestamp: ts, Duplicate: duplicate}
					encoded := AppendAckReply(nil, subject, offset, ts, duplicate)
					var got AckReply
					if err := msgpack.Unmarshal(encoded, &got); err != nil || got != want {
						t.Fatalf("%+v encodes as %x, which decodes to %+v, %v", want, encoded[:min(len(encoded), 40)], got, err)
					}
					if !bytes.Equal(encoded, Encode(want)) {
						t.Fatalf("%+v: %x, the reflective encoder writes %x", want, encoded[:min(len(encoded), 40)], Encode(want)[:min(len(encoded), 40)])
					}
				}
			}
		}
	}
}

// validTokensBySplit is the plain statement of the subject rules that
// validTokens implements in one pass: the oracle for the test below.
func validTokensBySplit(s string, wildcards bool) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n\x00") {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return false
		case t == "*" && !wildcards:
			return false
		case t == ">" && (!wildcards || i != len(tokens)-1):
			return false
		}
	}
	return true
}

// Every string of up to five characters from an alphabet of the
// characters that matter gets the same answer from validTokens as from
// the split-based statement of the rules, and checking allocates nothing.
func TestValidTokensMatchesTheRules(t *testing.T) {
	alphabet := []string{"a", ".", "*", ">", " ", "\x00", "bc"}
	var walk func(prefix string, depth int)
	checked := 0
	walk = func(prefix string, depth int) {
		for _, wildcards := range []bool{false, true} {
			if got, want := validTokens(prefix, wildcards), validTokensBySplit(prefix, wildcards); got != want {
				t.Fatalf("validTokens(%q, %v) = %v, want %v", prefix, wildcards, got, want)
			}
		}
		checked++
		if depth == 5 {
			return
		}
		for _, c := range alphabet {
			walk(prefix+c, depth+1)
		}
	}
	walk("", 0)
	if checked < 10000 {
		t.Fatalf("only %d strings checked", checked)
	}
	if n := testing.AllocsPerRun(100, func() { ValidSubject("orders.eu.west.1234") }); n != 0 {
		t.Fatalf("ValidSubject allocates %v times", n)
	}
}

// TestSubjectsReplySizeBoundsTheEncoding: SubjectsReplySize is never below
// the encoded size (a page sized by it always fits) and at most the array
// header's and total's slack above it, across the string and array
// header boundaries.
func TestSubjectsReplySizeBoundsTheEncoding(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17} {
		for _, length := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
			subjects := make([]string, n)
			lengths := make([]int, n)
			for i := range subjects {
				subjects[i] = strings.Repeat("s", length)
				lengths[i] = length
			}
			for _, total := range []uint64{0, 1 << 63} {
				got := len(Encode(SubjectsReply{Subjects: subjects, Total: total}))
				bound := SubjectsReplySize(lengths...)
				if got > bound || got < bound-12 {
					t.Errorf("%d subjects of %d bytes, total %d: encoded %d bytes, SubjectsReplySize says %d", n, length, total, got, bound)
				}
			}
		}
	}
}

// BenchmarkFetchReplyBuilderPage builds and finishes a page of 1,000
// records of 1 KiB, as a FETCH under the default max_payload does.
func BenchmarkFetchReplyBuilderPage(b *testing.B) {
	data := make([]byte, 1024)
	var builder FetchReplyBuilder
	b.SetBytes(1000 * 1024)
	for b.Loop() {
		builder.Reset()
		for i := range 1000 {
			builder.Add(uint64(i), 1, nil, data)
		}
		builder.Finish("orders.eu", 1000, 0, 1000)
	}
}

func TestParseFiltersDropsCoveredOnes(t *testing.T) {
	got, err := ParseFilters("orders.eu, orders.>,orders.>,metrics.*")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "orders.>,metrics.*" {
		t.Fatalf("filters %v", got)
	}
	if _, err := ParseFilters("orders..eu"); err == nil {
		t.Fatal("an invalid filter was accepted")
	}
}

func TestNeverStoredIsOneRule(t *testing.T) {
	for subject, want := range map[string]bool{
		"_INBOX.abc.1": true, "$JS.API.INFO": true, "$VOIK.INBOX.x": true,
		"VOIK.API": true, "VOIK.API.FETCH.orders": true,
		"VOIK.APIX": false, "orders.eu": false, "_INBOXES": false,
	} {
		if got := NeverStored(subject, "VOIK.API"); got != want {
			t.Errorf("NeverStored(%q) = %v, want %v", subject, got, want)
		}
	}
}
