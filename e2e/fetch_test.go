package e2e

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
)

// fill appends n acked records "<i>" to subject and returns their acks.
func (e *e2e) fill(subject string, n int) []*messages.AckReply {
	e.t.Helper()
	acks := make([]*messages.AckReply, n)
	for i := range acks {
		acks[i] = e.appendAcked(subject, nil, []byte(fmt.Sprint(i)))
	}
	return acks
}

// wantFetchReply checks a raw FETCH reply's shape and returns its records.
func wantFetchReply(t *testing.T, reply map[string]any, subject string, next, first, end uint64) []map[string]any {
	t.Helper()
	wantSuccess(t, "FETCH", reply)
	wantKeys(t, "FETCH reply", reply, "subject", "records", "next_offset", "first_offset", "end_offset")
	if reply["subject"] != subject {
		t.Fatalf("subject %#v, want %q", reply["subject"], subject)
	}
	if got := [3]uint64{unum(t, reply["next_offset"]), unum(t, reply["first_offset"]), unum(t, reply["end_offset"])}; got != [3]uint64{next, first, end} {
		t.Fatalf("next, first, end offsets %v, want %v", got, [3]uint64{next, first, end})
	}
	raw, ok := reply["records"].([]any)
	if !ok {
		t.Fatalf("records is %T, want an array", reply["records"])
	}
	records := make([]map[string]any, len(raw))
	for i, r := range raw {
		if records[i], ok = r.(map[string]any); !ok {
			t.Fatalf("record %d is %T, want a map", i, r)
		}
	}
	return records
}

// wantRecordOffsets checks records are exactly offsets from..to-1, each
// {offset, ts, data} with data as bin "<offset>", and headers only when
// the message had some (fill's acked appends carry Voik-Ack).
func wantRecordOffsets(t *testing.T, records []map[string]any, from, to uint64) {
	t.Helper()
	if uint64(len(records)) != to-from {
		t.Fatalf("%d records, want offsets [%d, %d)", len(records), from, to)
	}
	for i, r := range records {
		offset := from + uint64(i)
		if headers, ok := r["headers"]; ok {
			if _, isMap := headers.(map[string]any); !isMap {
				t.Fatalf("record %d headers is %T, want a map", offset, headers)
			}
			wantKeys(t, fmt.Sprintf("record %d", offset), r, "offset", "ts", "headers", "data")
		} else {
			wantKeys(t, fmt.Sprintf("record %d", offset), r, "offset", "ts", "data")
		}
		if got := unum(t, r["offset"]); got != offset {
			t.Fatalf("record %d has offset %d", offset, got)
		}
		if num(t, r["ts"]) <= 0 {
			t.Fatalf("record %d has timestamp %v", offset, r["ts"])
		}
		data, ok := r["data"].([]byte)
		if !ok {
			t.Fatalf("record %d data is %T, want MessagePack bin", offset, r["data"])
		}
		if string(data) != fmt.Sprint(offset) {
			t.Fatalf("record %d data %q", offset, data)
		}
	}
}

func TestFetchByOffsetReturnsContiguousRecordsAndTheContractShape(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("shape.orders", 20)

	cases := []struct {
		name     string
		body     any
		from, to uint64
	}{
		{"empty body: from first_offset, default count", nil, 0, 20},
		{"nil body: all defaults", []byte{0xc0}, 0, 20},
		{"offset 0 means offset 0", map[string]any{"offset": 0}, 0, 20},
		{"offset 7, max_messages 5", map[string]any{"offset": 7, "max_messages": 5}, 7, 12},
		{"offset nil is the default", map[string]any{"offset": nil, "max_messages": 3}, 0, 3},
		{"integers of every width", map[string]any{"offset": uint8(2), "max_messages": int16(2)}, 2, 4},
		{"offset as uint64", map[string]any{"offset": uint64(19)}, 19, 20},
		{"unknown keys are ignored", map[string]any{"offset": 18, "colour": []any{"x", 1, map[string]any{"y": nil}}}, 18, 20},
		{"max_bytes 0 means the reply limit", map[string]any{"max_bytes": 0}, 0, 20},
		{"wait_ms with records present does not wait", map[string]any{"offset": 10, "wait_ms": 60000}, 10, 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reply := e.call("FETCH.shape.orders", c.body)
			records := wantFetchReply(t, reply, "shape.orders", c.to, 0, 20)
			wantRecordOffsets(t, records, c.from, c.to)
		})
	}
}

func TestFetchAtEndOffsetIsAnEmptyPageNotAnError(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("at.end", 3)
	records := wantFetchReply(t, e.call("FETCH.at.end", map[string]any{"offset": 3}), "at.end", 3, 0, 3)
	if len(records) != 0 {
		t.Fatalf("%d records at end_offset", len(records))
	}
}

func TestFetchByStartTimeStartsAtFirstRecordAtOrAfterIt(t *testing.T) {
	t.Parallel()
	e := start(t)
	acks := e.fill("by.time", 10)
	all := e.fetchAll("by.time")
	for i, r := range all {
		if r.Timestamp != acks[i].Timestamp {
			t.Fatalf("record %d ts %d, its ack said %d", i, r.Timestamp, acks[i].Timestamp)
		}
	}
	// The first offset whose timestamp is >= that of record k (records may
	// share a timestamp; the contract says "first record at or after").
	firstAtOrAfter := func(ts int64) uint64 {
		for i, r := range all {
			if r.Timestamp >= ts {
				return uint64(i)
			}
		}
		return uint64(len(all))
	}
	for _, k := range []int{0, 4, 9} {
		ts := acks[k].Timestamp
		want := firstAtOrAfter(ts)
		// offset is ignored when start_time is given, even out of range.
		reply := e.call("FETCH.by.time", map[string]any{"start_time": ts, "offset": 1 << 40})
		wantRecordOffsets(t, wantFetchReply(t, reply, "by.time", 10, 0, 10), want, 10)
	}
	after := acks[9].Timestamp + 1
	records := wantFetchReply(t, e.call("FETCH.by.time", map[string]any{"start_time": after}), "by.time", 10, 0, 10)
	if len(records) != 0 {
		t.Fatalf("start_time after the last record returned %d records", len(records))
	}
	// 0 is "not given": offset applies.
	wantRecordOffsets(t, wantFetchReply(t, e.call("FETCH.by.time", map[string]any{"start_time": 0, "offset": 8}), "by.time", 10, 0, 10), 8, 10)
}

func TestFetchMaxMessagesDefaultsTo100AndIsCappedAt10000(t *testing.T) {
	t.Parallel()
	e := start(t)
	const n = messages.MaxMessagesCap + 50
	for i := 0; i < n; i++ {
		e.publish("many.records", nil, []byte(fmt.Sprint(i)))
	}
	e.flush()
	e.waitForEnd("many.records", n)
	cases := []struct {
		name string
		body map[string]any
		want uint64
	}{
		{"absent: 100", map[string]any{}, 100},
		{"0: the default, 100", map[string]any{"max_messages": 0}, 100},
		{"exactly the cap", map[string]any{"max_messages": 10000}, 10000},
		{"above the cap is the cap", map[string]any{"max_messages": 20000}, 10000},
		{"the largest uint64 is the cap", map[string]any{"max_messages": uint64(math.MaxUint64)}, 10000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			records := wantFetchReply(t, e.call("FETCH.many.records", c.body), "many.records", c.want, 0, n)
			wantRecordOffsets(t, records, 0, c.want)
		})
	}
}

func TestFetchMaxBytesCountsDataAndHeadersAndAlwaysReturnsTheFirstRecord(t *testing.T) {
	t.Parallel()
	e := start(t)
	// Each record: 100 bytes of data and a header "K: vv" (3 bytes), 103 in all.
	for i := 0; i < 10; i++ {
		e.appendAcked("sized", nats.Header{"K": {"vv"}}, []byte(strings.Repeat("x", 97)))
	}
	// Voik-Ack: 1 is stored too (8+1 bytes): each record is 97 + 3 + 9 = 109.
	const size uint64 = 97 + 3 + uint64(len(messages.HeaderAck)) + 1
	info, err := e.api.Info(context.Background(), "sized")
	if err != nil || info.Bytes != 10*size {
		t.Fatalf("info %+v, %v; want %d bytes", info, err, 10*size)
	}
	cases := []struct {
		maxBytes uint64
		want     int
	}{
		{1, 1}, // the first record always comes, so a reader progresses
		{size - 1, 1},
		{size, 1},
		{2*size - 1, 1},
		{2 * size, 2},
		{5*size + 3, 5},
		{1 << 50, 10}, // above the reply limit: the reply limit
	}
	for _, c := range cases {
		t.Run(fmt.Sprint("max_bytes=", c.maxBytes), func(t *testing.T) {
			reply := e.fetch("sized", messages.FetchRequest{MaxBytes: c.maxBytes})
			if len(reply.Records) != c.want || reply.NextOffset != uint64(c.want) {
				t.Fatalf("%d records, next %d; want %d", len(reply.Records), reply.NextOffset, c.want)
			}
		})
	}
}

// longPollWokenBy sends a FETCH long poll (body) for subject, waits until
// voik has taken it up, publishes data on subject, and returns the reply
// and how long after the publish it came.
func (e *e2e) longPollWokenBy(subject string, body map[string]any, data string) (map[string]any, time.Duration) {
	e.t.Helper()
	got := e.sendFetch(subject, body)
	e.fetchesDispatched()
	published := time.Now()
	e.publish(subject, nil, []byte(data))
	reply := waitUntil(e.t, got, 35*time.Second, "the long poll's reply")
	return decodeReply(e.t, reply.Data), time.Since(published)
}

// sendFetch publishes a FETCH of subject with body and returns where its
// reply will arrive. It publishes on e.nc from the test's goroutine, so a
// fetchesDispatched after it is ordered after it.
func (e *e2e) sendFetch(subject string, body any) <-chan *nats.Msg {
	e.t.Helper()
	reply := e.nc.NewRespInbox()
	got := make(chan *nats.Msg, 1)
	sub, err := e.nc.ChanSubscribe(reply, got)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sub.Unsubscribe() })
	if err := e.nc.PublishRequest(e.prefix()+".FETCH."+subject, reply, encode(e.t, body)); err != nil {
		e.t.Fatal(err)
	}
	return got
}

func TestLongPollWithWaitMs30000ReturnsRightAfterThePublish(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.appendAcked("poll.prompt", nil, []byte("0"))
	reply, answered := e.longPollWokenBy("poll.prompt", map[string]any{"offset": 1, "wait_ms": 30000}, "1")
	wantRecordOffsets(t, wantFetchReply(t, reply, "poll.prompt", 2, 0, 2), 1, 2)
	// Woken by the append, not by a timer: far below the 30 s wait.
	if answered > 5*time.Second {
		t.Fatalf("long poll answered %v after the publish", answered)
	}
}

// fetchesDispatched returns once every FETCH sent before it on e.nc has
// been taken up by voik (the FETCH subscription delivers in order): it
// sends a quick FETCH and waits for its answer. A long poll sent before is
// then parked, or about to be: either way a later record must wake it.
func (e *e2e) fetchesDispatched() {
	e.t.Helper()
	e.call("FETCH.dispatch.marker.none", nil) // a 404 is an answer too
}

func TestLongPollOnEmptyWaitEndsAfterWaitMsWithAnEmptyPage(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("poll.quiet", 2)
	began := time.Now()
	records := wantFetchReply(t, e.call("FETCH.poll.quiet", map[string]any{"offset": 2, "wait_ms": 300}), "poll.quiet", 2, 0, 2)
	if elapsed := time.Since(began); elapsed < 300*time.Millisecond {
		t.Fatalf("wait_ms 300 answered after %v", elapsed)
	}
	if len(records) != 0 {
		t.Fatalf("%d records", len(records))
	}
}

func TestLongPollWaitMsAboveTheCapIsTheCapNotAnError(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.appendAcked("poll.capped", nil, []byte("0"))
	got := e.sendFetch("poll.capped", map[string]any{"offset": 1, "wait_ms": uint64(math.MaxUint64)})
	e.fetchesDispatched()
	e.publish("poll.capped", nil, []byte("1"))
	msg := waitUntil(t, got, 30*time.Second, "a capped long poll to be woken by the publish")
	wantRecordOffsets(t, wantFetchReply(t, decodeReply(t, msg.Data), "poll.capped", 2, 0, 2), 1, 2)
}

func TestLongPollByStartTimeWaitsAtEndOffsetAndWakesOnPublish(t *testing.T) {
	t.Parallel()
	e := start(t)
	last := e.fill("poll.since", 3)[2]
	reply, answered := e.longPollWokenBy("poll.since", map[string]any{"start_time": last.Timestamp + 1, "wait_ms": 30000}, "3")
	if answered > 5*time.Second {
		t.Fatalf("answered %v after the publish", answered)
	}
	wantRecordOffsets(t, wantFetchReply(t, reply, "poll.since", 4, 0, 4), 3, 4)
}

func TestManyLongPollsAreAllWokenByOnePublish(t *testing.T) {
	t.Parallel()
	e := start(t)
	const waiters = 50
	e.appendAcked("poll.crowd", nil, []byte("0"))
	inbox := newInboxCollector(t, e.nc, waiters)
	for i := 0; i < waiters; i++ {
		if err := e.nc.PublishRequest(e.prefix()+".FETCH.poll.crowd", inbox.replyTo(i), encode(t, map[string]any{"offset": 1, "wait_ms": 30000})); err != nil {
			t.Fatal(err)
		}
	}
	e.fetchesDispatched()
	published := time.Now()
	e.publish("poll.crowd", nil, []byte("1"))
	deadline := time.After(20 * time.Second)
	for answered := 0; answered < waiters; answered++ {
		select {
		case msg := <-inbox.msgs:
			wantRecordOffsets(t, wantFetchReply(t, decodeReply(t, msg.Data), "poll.crowd", 2, 0, 2), 1, 2)
		case <-deadline:
			t.Fatalf("only %d of %d long polls answered", answered, waiters)
		}
	}
	if elapsed := time.Since(published); elapsed > 10*time.Second {
		t.Fatalf("the long polls were answered %v after the publish", elapsed)
	}
}

func TestPagingByNextOffsetNeitherSkipsNorRepeatsARecord(t *testing.T) {
	t.Parallel()
	e := start(t)
	const n = 250
	for i := 0; i < n; i++ {
		e.publish("paged", nil, []byte(fmt.Sprint(i)))
	}
	e.flush()
	e.waitForEnd("paged", n)
	for _, req := range []messages.FetchRequest{{MaxMessages: 7}, {MaxBytes: 10}, {MaxMessages: 1}} {
		var seen []messages.Record
		for next := uint64(0); next < n; {
			req.Offset = ptr(next)
			reply := e.fetch("paged", req)
			if len(reply.Records) == 0 || reply.NextOffset != next+uint64(len(reply.Records)) {
				t.Fatalf("%+v at %d: %d records, next_offset %d", req, next, len(reply.Records), reply.NextOffset)
			}
			seen = append(seen, reply.Records...)
			next = reply.NextOffset
		}
		for i, r := range seen {
			if r.Offset != uint64(i) || string(r.Data) != fmt.Sprint(i) {
				t.Fatalf("%+v: record %d is offset %d %q", req, i, r.Offset, r.Data)
			}
		}
	}
}

// TestLongPollOnANewSubjectWakesOnItsFirstMessage: a consumer may start
// before its publisher: a long poll on a subject voik has never stored
// waits for the first record (and is a 404 only if none comes in time).
func TestLongPollOnANewSubjectWakesOnItsFirstMessage(t *testing.T) {
	t.Parallel()
	e := start(t)
	reply, answered := e.longPollWokenBy("poll.newborn", map[string]any{"wait_ms": 30000}, "0")
	wantRecordOffsets(t, wantFetchReply(t, reply, "poll.newborn", 1, 0, 1), 0, 1)
	if answered > 5*time.Second {
		t.Fatalf("long poll on a new subject answered %v after its first publish", answered)
	}
}
