package e2e

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"
)

// garbage is one malformed request body and why it is malformed.
type garbage struct {
	kind string
	body []byte
}

// verbFields are the fields of each verb and the kind of value each takes.
var verbFields = map[string]map[string]string{
	"FETCH":    {"offset": "uint", "start_time": "uint", "max_messages": "uint", "max_bytes": "uint", "wait_ms": "uint"},
	"SUBJECTS": {"filter": "string", "offset": "uint", "limit": "uint"},
	"REPLAY":   {"offset": "uint", "start_time": "uint", "deliver": "string", "max_messages": "uint"},
	"INFO":     {},
}

// garbageBodies returns n request bodies for verb, every one of which the
// contract says is a 400: random bytes, wrong types, negative numbers,
// huge lengths, truncated MessagePack, keys that are not strings, trailing
// bytes, values out of range.
func garbageBodies(t *testing.T, verb string, n int, rng *rand.Rand) []garbage {
	t.Helper()
	fields := verbFields[verb]
	var names []string
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	pick := func() string { return names[rng.IntN(len(names))] }
	mapOf := func(key string, value []byte) []byte { // {key: value}, value raw
		return append(append([]byte{0x81}, encode(t, key)...), value...)
	}
	// A valid request of the verb, for truncation and trailing bytes.
	valid := map[string]any{"offset": uint64(3), "max_messages": 5, "filter": "a.>", "deliver": "_INBOX.g", "wait_ms": 0, "colour": "blue"}
	validBody := encode(t, valid)

	wrongValues := map[string][][]byte{
		"uint": {
			encode(t, "3"), encode(t, 1.5), encode(t, float32(2.5)), encode(t, true), encode(t, false),
			encode(t, []int{1}), encode(t, map[string]int{"a": 1}), {0xc4, 1, 1}, encode(t, time.Unix(1, 0)),
		},
		"string": {
			encode(t, 3), encode(t, -3), encode(t, 1.5), encode(t, true), encode(t, []string{"a"}),
			encode(t, map[string]string{"a": "b"}), encode(t, time.Unix(1, 0)),
		},
	}
	negatives := [][]byte{
		{0xff},                            // -1, negative fixnum
		{0xe0},                            // -32
		{0xd0, 0x80},                      // int8 -128
		{0xd1, 0xfe, 0xd4},                // int16 -300
		{0xd2, 0xff, 0xfe, 0xee, 0x90},    // int32 -70000
		{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, // int64 min
		{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // int64 -1
	}
	hugeLengths := [][]byte{
		{0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b'}, // str32 of 4 GiB, 2 bytes there
		{0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3},  // bin32
		{0xdd, 0xff, 0xff, 0xff, 0xff, 1},        // array32
		{0xdf, 0xff, 0xff, 0xff, 0xff},           // map32
		{0xc9, 0xff, 0xff, 0xff, 0xff, 1, 2},     // ext32
		{0xda, 0xff, 0xff, 'x'},                  // str16 of 64 KiB
		{0xd9, 0xff},                             // str8 of 255, nothing there
	}
	notMap := func(b []byte) bool {
		c := b[0]
		return !(c >= 0x80 && c <= 0x8f || c == 0xde || c == 0xdf || c == 0xc0)
	}

	var out []garbage
	for len(out) < n {
		var g garbage
		switch kind := len(out) % 10; {
		case kind == 0: // random bytes that do not start a map (nor nil)
			b := make([]byte, 1+rng.IntN(64))
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			if !notMap(b) {
				b[0] = 0xc1 // the one code MessagePack never uses
			}
			g = garbage{"random bytes", b}
		case kind == 1 && len(names) > 0: // a field of the wrong type
			name := pick()
			values := wrongValues[fields[name]]
			g = garbage{"wrong type for " + name, mapOf(name, values[rng.IntN(len(values))])}
		case kind == 2 && len(names) > 0: // a negative number for an unsigned field
			var uints []string
			for _, name := range names {
				if fields[name] == "uint" {
					uints = append(uints, name)
				}
			}
			name := uints[rng.IntN(len(uints))]
			g = garbage{"negative " + name, mapOf(name, negatives[rng.IntN(len(negatives))])}
		case kind == 3: // a huge length as the body
			g = garbage{"huge length body", hugeLengths[rng.IntN(len(hugeLengths))]}
		case kind == 4: // a huge length as a key or a value
			h := hugeLengths[rng.IntN(len(hugeLengths))]
			if len(names) > 0 && rng.IntN(2) == 0 {
				g = garbage{"huge length value", mapOf(pick(), h)}
			} else {
				g = garbage{"huge length key", append([]byte{0x81}, h...)}
			}
		case kind == 5: // truncated
			g = garbage{"truncated", validBody[:1+rng.IntN(len(validBody)-1)]}
		case kind == 6: // keys that are not strings
			keys := [][]byte{{0x01}, {0xc0}, append([]byte{0xc4, 6}, "offset"...), encode(t, 1.5), {0x90}}
			g = garbage{"non-string key", append(append([]byte{0x81}, keys[rng.IntN(len(keys))]...), 0x01)}
		case kind == 7: // trailing bytes after a valid map
			g = garbage{"trailing bytes", append(append([]byte(nil), validBody...), byte(rng.UintN(256)))}
		case kind == 8: // a whole body of another type
			others := [][]byte{encode(t, []any{1, 2}), encode(t, "offset"), encode(t, 42), encode(t, -1), encode(t, 3.14),
				encode(t, true), []byte(`{"offset": 1}`), {0xc4, 1, 0x80}, {0xc0, 0xc0}}
			g = garbage{"not a map", others[rng.IntN(len(others))]}
		default: // out of range, or an invalid string
			switch verb {
			case "FETCH":
				g = garbage{"start_time above int64", encode(t, map[string]any{"start_time": uint64(math.MaxInt64) + 1 + rng.Uint64N(1<<62)})}
			case "REPLAY":
				bad := []string{"", "a.*", "a.>", "a..b", ".a", "a.", "a b", "VOIK.API.x", "VOIK.API"}
				g = garbage{"bad deliver", encode(t, map[string]any{"deliver": bad[rng.IntN(len(bad))], "offset": 0})}
			case "SUBJECTS":
				bad := []string{"a..b", ">.a", "a.>.b", ".", "a b", "*.\t"}
				g = garbage{"bad filter", encode(t, map[string]any{"filter": bad[rng.IntN(len(bad))]})}
			default:
				g = garbage{"map32 header, no entries", []byte{0xdf, 0, 0, 0, 3}}
			}
		}
		if g.body == nil {
			continue
		}
		out = append(out, g)
	}
	return out
}

func TestThousandGarbageRequestsPerVerbAreEach400AndChangeNothing(t *testing.T) {
	t.Parallel()
	e := start(t)
	for i := 0; i < 20; i++ {
		e.publish("garbage.target", nil, []byte(fmt.Sprint(i)))
	}
	e.appendAcked("garbage.other", nil, []byte("x"))
	e.flush()
	e.waitForEnd("garbage.target", 20)
	before := e.snapshot()

	rng := rand.New(rand.NewPCG(3, 1415))
	const perVerb = 1000
	for _, verb := range []string{"FETCH", "INFO", "SUBJECTS", "REPLAY"} {
		t.Run(verb, func(t *testing.T) {
			subject := e.prefix() + "." + verb + ".garbage.target"
			if verb == "SUBJECTS" {
				subject = e.prefix() + ".SUBJECTS"
			}
			bodies := garbageBodies(t, verb, perVerb, rng)
			inbox := newInboxCollector(t, e.nc, perVerb)
			for i, g := range bodies {
				if err := e.nc.PublishRequest(subject, inbox.replyTo(i), g.body); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.After(60 * time.Second)
			seen := make([]bool, perVerb)
			for n := 0; n < perVerb; n++ {
				select {
				case msg := <-inbox.msgs:
					i := inbox.index(t, msg)
					if seen[i] {
						t.Fatalf("request %d answered twice", i)
					}
					seen[i] = true
					reply := decodeReply(t, msg.Data)
					if _, isError := reply["error"]; !isError {
						t.Fatalf("%s garbage %d (%s, % x) was answered as a success: %v", verb, i, bodies[i].kind, bodies[i].body, reply)
					}
					wantError(t, fmt.Sprintf("%s garbage %d (%s, % x)", verb, i, bodies[i].kind, bodies[i].body), reply, 400)
				case <-deadline:
					var missing []string
					for i, s := range seen {
						if !s && len(missing) < 5 {
							missing = append(missing, fmt.Sprintf("%d %s % x", i, bodies[i].kind, bodies[i].body))
						}
					}
					t.Fatalf("%d of %d garbage requests answered; unanswered include %v", n, perVerb, missing)
				}
			}
		})
	}
	if after := e.snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("garbage requests changed what is stored")
	}
	// And voik still answers well-formed requests.
	wantRecordOffsets(t, wantFetchReply(t, e.call("FETCH.garbage.target", map[string]any{"offset": 18}), "garbage.target", 20, 0, 20), 18, 20)
}

func TestNilAndEmptyBodiesMeanAllDefaults(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("defaults", 3)
	for _, body := range [][]byte{nil, {0xc0}, {0x80}, {0xde, 0, 0}, {0xdf, 0, 0, 0, 0}} {
		wantRecordOffsets(t, wantFetchReply(t, e.call("FETCH.defaults", body), "defaults", 3, 0, 3), 0, 3)
		wantSuccess(t, "INFO", e.call("INFO.defaults", body))
		if got := e.call("SUBJECTS", body); unum(t, got["total"]) != 1 {
			t.Fatalf("SUBJECTS %x: %v", body, got)
		}
		// REPLAY has a required field, so all defaults is a 400.
		wantError(t, "REPLAY with all defaults", e.call("REPLAY.defaults", body), 400)
	}
	// nil for a field is the field left out.
	wantRecordOffsets(t, wantFetchReply(t, e.call("FETCH.defaults", map[string]any{"offset": nil, "max_messages": nil, "max_bytes": nil, "wait_ms": nil, "start_time": nil}), "defaults", 3, 0, 3), 0, 3)
}

func TestDeeplyNestedUnknownValueIsIgnoredWithoutHarm(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("nested", 2)
	// {"x": [[[[ ... ]]]]} nested a million deep (just under max_payload), then a known field.
	const depth = 1_000_000
	var b bytes.Buffer
	b.WriteByte(0x82)
	b.Write(encode(t, "x"))
	b.Write(bytes.Repeat([]byte{0x91}, depth-1))
	b.WriteByte(0x90)
	b.Write(encode(t, "offset"))
	b.WriteByte(0x01)
	reply := e.call("FETCH.nested", b.Bytes())
	if _, isError := reply["error"]; isError {
		// A depth limit is a defensible answer too, as long as it is a 400.
		wantError(t, "deeply nested request", reply, 400)
	} else {
		wantRecordOffsets(t, wantFetchReply(t, reply, "nested", 2, 0, 2), 1, 2)
	}
	// The same, truncated in the middle of the nesting: a 400.
	wantError(t, "truncated deep nesting", e.call("FETCH.nested", b.Bytes()[:depth/2]), 400)
}
