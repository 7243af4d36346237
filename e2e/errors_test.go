package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

func TestBadRequestsAre400WithTheErrorShape(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("bad.requests", 3)
	cases := []struct {
		name    string
		subject string // after the prefix
		body    any
	}{
		{"FETCH body not a map", "FETCH.bad.requests", encode(t, []int{1})},
		{"FETCH body JSON", "FETCH.bad.requests", []byte(`{"offset":1}`)},
		{"FETCH offset a string", "FETCH.bad.requests", map[string]any{"offset": "1"}},
		{"FETCH offset negative", "FETCH.bad.requests", map[string]any{"offset": -1}},
		{"FETCH start_time negative", "FETCH.bad.requests", map[string]any{"start_time": -1}},
		{"FETCH start_time above int64", "FETCH.bad.requests", map[string]any{"start_time": uint64(1 << 63)}},
		{"FETCH max_messages negative", "FETCH.bad.requests", map[string]any{"max_messages": int8(-3)}},
		{"FETCH max_bytes a fractional float", "FETCH.bad.requests", map[string]any{"max_bytes": 1.5}},
		{"FETCH offset NaN", "FETCH.bad.requests", map[string]any{"offset": math.NaN()}},
		{"FETCH wait_ms a bool", "FETCH.bad.requests", map[string]any{"wait_ms": true}},
		{"FETCH key not a string", "FETCH.bad.requests", map[int]int{1: 1}},
		{"FETCH truncated", "FETCH.bad.requests", encode(t, map[string]any{"offset": 1})[:4]},
		{"FETCH trailing bytes", "FETCH.bad.requests", append(encode(t, map[string]any{"offset": 1}), 0xc0)},
		{"FETCH of a subject with *", "FETCH.bad.*", nil},
		{"FETCH of a subject ending in >", "FETCH.bad.>", nil},
		{"FETCH without a subject", "FETCH", nil},
		{"INFO body not a map", "INFO.bad.requests", []byte("x")},
		{"INFO body a string", "INFO.bad.requests", encode(t, "bad.requests")},
		{"INFO of a subject with *", "INFO.*", nil},
		{"INFO without a subject", "INFO", nil},
		{"SUBJECTS invalid filter", "SUBJECTS", map[string]any{"filter": "a..b"}},
		{"SUBJECTS > not last", "SUBJECTS", map[string]any{"filter": ">.a"}},
		{"SUBJECTS filter a number", "SUBJECTS", map[string]any{"filter": 5}},
		{"SUBJECTS limit negative", "SUBJECTS", map[string]any{"limit": -1}},
		{"SUBJECTS offset a string", "SUBJECTS", map[string]any{"offset": "0"}},
		{"SUBJECTS with a subject", "SUBJECTS.bad.requests", nil},
		{"REPLAY without deliver", "REPLAY.bad.requests", map[string]any{}},
		{"REPLAY deliver with a wildcard", "REPLAY.bad.requests", map[string]any{"deliver": "x.*"}},
		{"REPLAY deliver under the prefix", "REPLAY.bad.requests", map[string]any{"deliver": "VOIK.API.x"}},
		{"REPLAY offset negative", "REPLAY.bad.requests", map[string]any{"deliver": "x", "offset": -5}},
		{"REPLAY of a subject with >", "REPLAY.bad.>", map[string]any{"deliver": "x"}},
		{"REPLAY without a subject", "REPLAY", map[string]any{"deliver": "x"}},
		{"an unknown verb", "DELETE", nil},
		{"an unknown verb with a subject", "DELETE.bad.requests", nil},
		{"a verb in the wrong case", "fetch", nil},
		{"a verb in the wrong case with a subject", "fetch.bad.requests", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, c.name, e.call(c.subject, c.body), 400)
		})
	}
	t.Run("the prefix alone", func(t *testing.T) {
		wantError(t, "the prefix alone", rawCall(t, e.nc, e.prefix(), nil), 400)
	})
	// A huge string in a request is not repeated whole in the error: the
	// reply still fits under max_payload.
	huge := strings.Repeat("é", 400<<10)
	for _, body := range []map[string]any{{"deliver": huge + ".*"}, {"deliver": "VOIK.API." + huge}} {
		desc := wantError(t, "REPLAY with an 800 KB deliver", e.call("REPLAY.bad.requests", body), 400)
		if len(desc) > 1024 {
			t.Fatalf("description of %d bytes", len(desc))
		}
	}
	desc := wantError(t, "SUBJECTS with an 800 KB filter", e.call("SUBJECTS", map[string]any{"filter": huge + ".>.x"}), 400)
	if len(desc) > 1024 {
		t.Fatalf("description of %d bytes", len(desc))
	}
}

func TestUnknownSubjectIs404ForEveryPerSubjectVerb(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("known.subject", 1)
	for _, call := range []struct {
		subject string
		body    any
	}{
		{"FETCH.unknown.subject", nil},
		{"FETCH.unknown.subject", map[string]any{"offset": 0, "wait_ms": 100}},
		{"INFO.unknown.subject", nil},
		{"REPLAY.unknown.subject", map[string]any{"deliver": "_INBOX.x"}},
		{"FETCH.known", nil},
		{"INFO.known.subject.deeper", nil},
	} {
		desc := wantError(t, call.subject, e.call(call.subject, call.body), 404)
		descriptionSays(t, desc, call.subject[strings.IndexByte(call.subject, '.')+1:])
	}
}

func TestOffsetAboveEndOffsetIs416AndTheDescriptionSaysBothBounds(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("bounded", 5)
	for _, offset := range []uint64{6, 7, 1 << 40, 1<<64 - 1} {
		desc := wantError(t, fmt.Sprint("FETCH at ", offset), e.call("FETCH.bounded", map[string]any{"offset": offset}), 416)
		descriptionSays(t, desc, fmt.Sprint(offset), "first_offset 0", "end_offset 5")
		desc = wantError(t, fmt.Sprint("REPLAY at ", offset), e.call("REPLAY.bounded", map[string]any{"offset": offset, "deliver": "x"}), 416)
		descriptionSays(t, desc, "first_offset 0", "end_offset 5")
	}
	// Long polls too: 416 at once, no wait.
	began := time.Now()
	wantError(t, "long poll past the end", e.call("FETCH.bounded", map[string]any{"offset": 6, "wait_ms": 60000}), 416)
	if elapsed := time.Since(began); elapsed > 10*time.Second {
		t.Fatalf("416 came after %v", elapsed)
	}
}

func TestOffsetBelowFirstOffsetAfterRetentionIs416(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *configT) {
		c.SegmentSize = 64 << 10
		c.RetentionMaxMessages = 50
	})
	for i := 0; i < 300; i++ {
		e.publish("retained", nil, append([]byte(fmt.Sprintf("%d;", i)), make([]byte, 1000)...))
	}
	e.flush()
	e.waitForEnd("retained", 300)
	info, err := e.api.Info(context.Background(), "retained")
	if err != nil {
		t.Fatal(err)
	}
	first := info.FirstOffset
	if first == 0 || info.Messages < 50 || info.EndOffset != 300 {
		t.Fatalf("retention kept %+v", info)
	}
	for _, offset := range []uint64{0, first - 1} {
		desc := wantError(t, fmt.Sprint("FETCH at ", offset), e.call("FETCH.retained", map[string]any{"offset": offset}), 416)
		descriptionSays(t, desc, fmt.Sprintf("first_offset %d", first), "end_offset 300")
		desc = wantError(t, fmt.Sprint("REPLAY at ", offset), e.call("REPLAY.retained", map[string]any{"offset": offset, "deliver": "x"}), 416)
		descriptionSays(t, desc, fmt.Sprintf("first_offset %d", first), "end_offset 300")
	}
	// Without an offset a FETCH starts at first_offset; a start_time
	// before everything held starts there too.
	reply := e.fetch("retained", messages.FetchRequest{MaxMessages: 1})
	if len(reply.Records) != 1 || reply.Records[0].Offset != first || reply.FirstOffset != first {
		t.Fatalf("default fetch after retention: %+v", reply)
	}
	reply = e.fetch("retained", messages.FetchRequest{StartTime: 1, MaxMessages: 1})
	if len(reply.Records) != 1 || reply.Records[0].Offset != first {
		t.Fatalf("start_time 1 after retention: %+v", reply)
	}
}

func TestCorruptRecordIs500AndVoikKeepsServing(t *testing.T) {
	// Not parallel: it stops voik and edits a segment file.
	e := startWith(t, nil, func(c *configT) { c.SegmentSize = 64 << 10 })
	for i := 0; i < 150; i++ {
		e.publish("corrupt.me", nil, append([]byte(fmt.Sprintf("RECORD-%04d;", i)), make([]byte, 1000)...))
	}
	e.flush()
	e.waitForEnd("corrupt.me", 150)
	e.appendAcked("healthy", nil, []byte("fine"))
	e.voik.Stop(t)

	// Flip a data byte of record 5, inside the first (sealed) segment:
	// its checksum no longer matches, and only reading it can tell.
	segment := filepath.Join(e.voik.Config.DataDir, "corrupt.me", "00000000000000000000.log")
	raw, err := os.ReadFile(segment)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(raw, []byte("RECORD-0005;"))
	if at < 0 {
		t.Fatalf("record 5 not found in %s", segment)
	}
	raw[at+len("RECORD-0005;")+10] ^= 0xff
	if err := os.WriteFile(segment, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	e.restart()
	desc := wantError(t, "FETCH of the corrupt record", e.call("FETCH.corrupt.me", map[string]any{"offset": 5}), 500)
	descriptionSays(t, desc, "corrupt")
	// What comes before it is served; next_offset points at it.
	records := wantFetchReply(t, e.call("FETCH.corrupt.me", map[string]any{"offset": 0}), "corrupt.me", 5, 0, 150)
	if len(records) != 5 {
		t.Fatalf("%d records before the corrupt one, want 5", len(records))
	}
	// And after it.
	reply := e.fetch("corrupt.me", messages.FetchRequest{Offset: ptr(6), MaxMessages: 1})
	if len(reply.Records) != 1 || !bytes.HasPrefix(reply.Records[0].Data, []byte("RECORD-0006;")) {
		t.Fatalf("record 6 after the corrupt one: %+v", reply)
	}
	// A replay across it stops there with the code a FETCH gets: 500,
	// not 503 (a retry would meet the same record).
	replay := e.collectReplay("_INBOX.corrupt.replay")
	wantReplayReply(t, e.call("REPLAY.corrupt.me", map[string]any{"offset": 0, "deliver": replay.deliver}), "corrupt.me", replay.deliver, 0, 150)
	replayed, final := replay.until()
	if len(replayed) != 5 {
		t.Fatalf("%d records replayed before the corrupt one, want 5", len(replayed))
	}
	wantEndMarker(t, final, "500", 5)
	// The process kept running: other subjects answer, capture stores.
	if got := e.fetchAll("healthy"); len(got) != 1 {
		t.Fatalf("healthy: %+v", got)
	}
	if ack := e.appendAcked("healthy", nil, []byte("still")); ack.Offset != 1 {
		t.Fatalf("append after the 500: %+v", ack)
	}
}

// Long polls wait in slots of their own (VOIK_MAX_LONG_POLLS): past the
// cap a long poll is a 503 at once, and requests that work are answered
// as ever, however many readers wait.
func TestLongPollsBeyondTheirCapAre503AndOtherRequestsStillAnswer(t *testing.T) {
	t.Parallel()
	const limit = 300
	e := startWith(t, nil, func(c *configT) { c.MaxLongPolls = limit })
	e.appendAcked("crowded", nil, []byte("0"))
	inbox := newInboxCollector(t, e.nc, limit+10)
	poll := encode(t, map[string]any{"offset": 1, "wait_ms": 60000})
	for i := 0; i < limit; i++ {
		if err := e.nc.PublishRequest(e.prefix()+".FETCH.crowded", inbox.replyTo(i), poll); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 30*time.Second, "every long poll parked", func() bool {
		return e.metric("voik_api_long_polls") == limit
	})
	desc := wantError(t, "the long poll past the cap", e.call("FETCH.crowded", map[string]any{"offset": 1, "wait_ms": 60000}), 503)
	descriptionSays(t, desc, "long polls", "VOIK_MAX_LONG_POLLS")
	// Requests that need no wait are answered while every slot is taken.
	wantRecordOffsets(t, wantFetchReply(t, e.call("FETCH.crowded", map[string]any{"offset": 0}), "crowded", 1, 0, 1), 0, 1)
	if info := e.call("INFO.crowded", nil); info["end_offset"] == nil {
		t.Fatalf("INFO while the long polls wait: %v", info)
	}
	select {
	case msg := <-inbox.msgs:
		t.Fatalf("a parked long poll answered early: %v", decodeReply(t, msg.Data))
	default:
	}
	// One record wakes every one of them, each with it.
	e.publish("crowded", nil, []byte("1"))
	answered := make([]bool, limit)
	deadline := time.After(60 * time.Second)
	for n := 0; n < limit; n++ {
		select {
		case msg := <-inbox.msgs:
			i := inbox.index(t, msg)
			if answered[i] {
				t.Fatalf("long poll %d answered twice", i)
			}
			answered[i] = true
			wantRecordOffsets(t, wantFetchReply(t, decodeReply(t, msg.Data), "crowded", 2, 0, 2), 1, 2)
		case <-deadline:
			t.Fatalf("%d of %d long polls answered", n, limit)
		}
	}
	// The slots are free again.
	harness.Eventually(t, 10*time.Second, "the long-poll slots freed", func() bool {
		return e.metric("voik_api_long_polls") == 0
	})
	wantRecordOffsets(t, wantFetchReply(t, e.call("FETCH.crowded", map[string]any{"offset": 2, "wait_ms": 10}), "crowded", 2, 0, 2), 2, 2)
}

func TestAckedAppendToACorruptLogIsAnErrorAck(t *testing.T) {
	e := startWith(t, nil, func(c *configT) { c.SegmentSize = 64 << 10 })
	for i := 0; i < 10; i++ {
		e.appendAcked("corrupt.tail", nil, append([]byte(fmt.Sprintf("REC-%02d;", i)), make([]byte, 100)...))
	}
	e.voik.Stop(t)
	// A bad record with good ones after it in the newest segment is
	// corruption, not a torn tail: the log refuses appends.
	segment := filepath.Join(e.voik.Config.DataDir, "corrupt.tail", "00000000000000000000.log")
	raw, err := os.ReadFile(segment)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(raw, []byte("REC-03;"))
	if at < 0 {
		t.Fatal("record 3 not found")
	}
	raw[at+20] ^= 0xff
	if err := os.WriteFile(segment, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	e.restart()
	msg := nats.NewMsg("corrupt.tail")
	msg.Header.Set(messages.HeaderAck, "1")
	reply, err := e.nc.RequestMsg(msg, requestTimeout)
	if err != nil {
		t.Fatalf("acked append to a corrupt log got no answer: %v", err)
	}
	wantError(t, "ack from a corrupt log", decodeReply(t, reply.Data), 500)
	// The records before the corruption are still served.
	records := wantFetchReply(t, e.call("FETCH.corrupt.tail", map[string]any{"offset": 0}), "corrupt.tail", 3, 0, 3)
	if len(records) != 3 {
		t.Fatalf("%d records served", len(records))
	}
	// At its end, and past it, a reader is told the log takes no more
	// records, not handed an empty page (or a 416) as if caught up.
	for _, body := range []map[string]any{{"offset": 3}, {"offset": 3, "wait_ms": 60000}, {"offset": 7}} {
		desc := wantError(t, fmt.Sprintf("FETCH %v at the end of a corrupt log", body), e.call("FETCH.corrupt.tail", body), 500)
		descriptionSays(t, desc, "takes no more records")
	}
}
