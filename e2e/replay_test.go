package e2e

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/messages"
)

// replayCollector subscribes to a deliver subject and gathers what a
// replay publishes there, up to and including its final status message.
type replayCollector struct {
	t       *testing.T
	deliver string
	sub     *nats.Subscription
}

func (e *e2e) collectReplay(deliver string) *replayCollector {
	e.t.Helper()
	sub, err := e.nc.SubscribeSync(deliver)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sub.Unsubscribe() })
	e.flush() // the server has the subscription before voik publishes
	return &replayCollector{t: e.t, deliver: deliver, sub: sub}
}

// until returns the replayed records and the final message (Voik-Status
// end, or the code of what cut it short).
func (c *replayCollector) until() (records []*nats.Msg, final *nats.Msg) {
	c.t.Helper()
	for {
		msg, err := c.sub.NextMsg(requestTimeout)
		if err != nil {
			c.t.Fatalf("replay to %s: %d records, then %v", c.deliver, len(records), err)
		}
		switch msg.Header.Get(messages.HeaderStatus) {
		case messages.StatusEnd, "503", "500", "416":
			return records, msg
		}
		records = append(records, msg)
	}
}

// wantReplayReply checks the reply sent before the records.
func wantReplayReply(t *testing.T, reply map[string]any, subject, deliver string, first, end uint64) {
	t.Helper()
	wantSuccess(t, "REPLAY", reply)
	wantKeys(t, "REPLAY reply", reply, "subject", "first_offset", "end_offset", "deliver")
	got := []any{reply["subject"], unum(t, reply["first_offset"]), unum(t, reply["end_offset"]), reply["deliver"]}
	if want := []any{subject, first, end, deliver}; !reflect.DeepEqual(got, want) {
		t.Fatalf("REPLAY reply %v, want %v", got, want)
	}
}

// wantEndMarker checks the last message: empty, Voik-Status end and the
// end offset, nothing else.
func wantEndMarker(t *testing.T, msg *nats.Msg, status string, offset uint64) {
	t.Helper()
	if len(msg.Data) != 0 {
		t.Fatalf("end marker has %d bytes of data", len(msg.Data))
	}
	want := nats.Header{messages.HeaderStatus: {status}, messages.HeaderOffset: {strconv.FormatUint(offset, 10)}}
	if !reflect.DeepEqual(msg.Header, want) {
		t.Fatalf("end marker headers %v, want %v", msg.Header, want)
	}
}

func TestReplayRepliesFirstThenDeliversEachRecordWithVoikHeadersThenTheEndMarker(t *testing.T) {
	t.Parallel()
	e := start(t)
	var acks []*messages.AckReply
	for i := 0; i < 6; i++ {
		var h nats.Header
		if i%2 == 1 {
			h = nats.Header{"Trace": {fmt.Sprint(i)}, "Multi": {"z", "a", "m"}}
		}
		acks = append(acks, e.appendAcked("replay.me", h, []byte(fmt.Sprintf("payload %d", i))))
	}
	c := e.collectReplay("_INBOX.replay.me")
	wantReplayReply(t, e.call("REPLAY.replay.me", map[string]any{"deliver": "_INBOX.replay.me"}), "replay.me", "_INBOX.replay.me", 0, 6)
	records, final := c.until()
	if len(records) != 6 {
		t.Fatalf("%d records delivered, want 6", len(records))
	}
	for i, msg := range records {
		want := nats.Header{
			messages.HeaderAck:       {"1"},
			messages.HeaderSubject:   {"replay.me"},
			messages.HeaderOffset:    {fmt.Sprint(i)},
			messages.HeaderTimestamp: {fmt.Sprint(acks[i].Timestamp)},
		}
		if i%2 == 1 {
			want["Trace"] = []string{fmt.Sprint(i)}
			want["Multi"] = []string{"z", "a", "m"}
		}
		if !reflect.DeepEqual(msg.Header, want) {
			t.Fatalf("record %d headers\n got %v\nwant %v", i, msg.Header, want)
		}
		if string(msg.Data) != fmt.Sprintf("payload %d", i) || msg.Subject != "_INBOX.replay.me" {
			t.Fatalf("record %d: %q on %s", i, msg.Data, msg.Subject)
		}
	}
	wantEndMarker(t, final, messages.StatusEnd, 6)
}

func TestReplayFromOffsetOrStartTimeWithMaxMessages(t *testing.T) {
	t.Parallel()
	e := start(t)
	acks := e.fill("replay.range", 10)
	cases := []struct {
		name        string
		body        map[string]any
		first, end  uint64
		deliverTail string
	}{
		{"offset 3, max_messages 4", map[string]any{"offset": 3, "max_messages": 4}, 3, 7, "a"},
		{"offset 0 is offset 0", map[string]any{"offset": 0, "max_messages": 2}, 0, 2, "b"},
		{"max_messages 0: up to end_offset", map[string]any{"offset": 8, "max_messages": 0}, 8, 10, "c"},
		{"max_messages past the end: up to end_offset", map[string]any{"offset": 8, "max_messages": 1000}, 8, 10, "d"},
		{"start_time of record 5, offset ignored", map[string]any{"start_time": acks[5].Timestamp, "offset": 1 << 40}, firstAtOrAfter(acks, acks[5].Timestamp), 10, "e"},
		{"at end_offset: nothing but the end marker", map[string]any{"offset": 10}, 10, 10, "f"},
		{"start_time after the last record", map[string]any{"start_time": acks[9].Timestamp + 1}, 10, 10, "g"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			deliver := "replayed.range." + tc.deliverTail
			c := e.collectReplay(deliver)
			tc.body["deliver"] = deliver
			wantReplayReply(t, e.call("REPLAY.replay.range", tc.body), "replay.range", deliver, tc.first, tc.end)
			records, final := c.until()
			if uint64(len(records)) != tc.end-tc.first {
				t.Fatalf("%d records, want [%d, %d)", len(records), tc.first, tc.end)
			}
			for i, msg := range records {
				offset := tc.first + uint64(i)
				if msg.Header.Get(messages.HeaderOffset) != fmt.Sprint(offset) || string(msg.Data) != fmt.Sprint(offset) {
					t.Fatalf("record %d: offset header %q, data %q", offset, msg.Header.Get(messages.HeaderOffset), msg.Data)
				}
			}
			wantEndMarker(t, final, messages.StatusEnd, tc.end)
		})
	}
}

// firstAtOrAfter is the offset of the first ack whose timestamp is >= ts.
func firstAtOrAfter(acks []*messages.AckReply, ts int64) uint64 {
	for _, a := range acks {
		if a.Timestamp >= ts {
			return a.Offset
		}
	}
	return uint64(len(acks))
}

func TestReplayDeliverMustBeAConcreteSubjectOutsideTheAPIPrefix(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("replay.checked", 2)
	bad := []struct {
		name string
		body any
	}{
		{"empty body: deliver is required", nil},
		{"nil body: deliver is required", []byte{0xc0}},
		{"no deliver", map[string]any{"offset": 0}},
		{"empty deliver", map[string]any{"deliver": ""}},
		{"nil deliver", map[string]any{"deliver": nil}},
		{"deliver with *", map[string]any{"deliver": "a.*"}},
		{"deliver with >", map[string]any{"deliver": "a.>"}},
		{"deliver with an empty token", map[string]any{"deliver": "a..b"}},
		{"deliver with a space", map[string]any{"deliver": "a b"}},
		{"deliver is the API prefix", map[string]any{"deliver": "VOIK.API"}},
		{"deliver under the API prefix", map[string]any{"deliver": "VOIK.API.FETCH.replay.checked"}},
		{"deliver of the wrong type", map[string]any{"deliver": 42}},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			wantError(t, b.name, e.call("REPLAY.replay.checked", b.body), 400)
		})
	}
	// Not under the prefix, though it starts the same way; and an inbox.
	for _, deliver := range []string{"VOIK.APIX.elsewhere", "_INBOX.fine"} {
		c := e.collectReplay(deliver)
		wantReplayReply(t, e.call("REPLAY.replay.checked", map[string]any{"deliver": deliver}), "replay.checked", deliver, 0, 2)
		if records, final := c.until(); len(records) != 2 {
			t.Fatalf("deliver %s: %d records", deliver, len(records))
		} else {
			wantEndMarker(t, final, messages.StatusEnd, 2)
		}
	}
}

func TestReplayErrorsAre404ForAnUnknownSubjectAnd416OutsideTheLog(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.fill("replay.bounds", 3)
	wantError(t, "REPLAY of an unknown subject", e.call("REPLAY.replay.unknown", map[string]any{"deliver": "x"}), 404)
	desc := wantError(t, "REPLAY past end_offset", e.call("REPLAY.replay.bounds", map[string]any{"deliver": "x", "offset": 4}), 416)
	descriptionSays(t, desc, "first_offset 0", "end_offset 3")
}

func TestReplayOntoTheOriginalSubjectOrAnotherCapturedOneIsNotStoredAgain(t *testing.T) {
	t.Parallel()
	e := start(t)
	for i := 0; i < 20; i++ {
		e.appendAcked("redrive", nats.Header{"N": {fmt.Sprint(i)}}, []byte(fmt.Sprint(i)))
	}
	before := e.snapshot()
	for _, deliver := range []string{"redrive", "redrive.copy"} {
		c := e.collectReplay(deliver)
		wantReplayReply(t, e.call("REPLAY.redrive", map[string]any{"deliver": deliver}), "redrive", deliver, 0, 20)
		records, final := c.until()
		if len(records) != 20 {
			t.Fatalf("deliver %s: %d copies, want 20", deliver, len(records))
		}
		wantEndMarker(t, final, messages.StatusEnd, 20)
	}
	// Capture reads one subscription in order ('>' is one filter): once an
	// acked append published after the replays is stored, every replayed
	// copy has been seen by capture, and skipped.
	if ack := e.appendAcked("redrive", nil, []byte("after")); ack.Offset != 20 {
		t.Fatalf("append after the replays got offset %d: replayed copies were stored", ack.Offset)
	}
	after := e.snapshot()
	if len(after["redrive"]) != 21 {
		t.Fatalf("redrive has %d records, want 21", len(after["redrive"]))
	}
	after["redrive"] = after["redrive"][:20]
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("replays changed what is stored:\nbefore %v\n after %v", before, after)
	}
}

func TestReplayOf5000RecordsDeliversEveryOneInOrder(t *testing.T) {
	t.Parallel()
	e := start(t)
	const n = 5000
	for i := 0; i < n; i++ {
		e.publish("replay.bulk", nil, make([]byte, 512))
	}
	e.flush()
	e.waitForEnd("replay.bulk", n)
	c := e.collectReplay("_INBOX.bulk")
	began := time.Now()
	wantReplayReply(t, e.call("REPLAY.replay.bulk", map[string]any{"deliver": "_INBOX.bulk"}), "replay.bulk", "_INBOX.bulk", 0, n)
	records, final := c.until()
	if len(records) != n {
		t.Fatalf("%d of %d records delivered in %v", len(records), n, time.Since(began))
	}
	for i, msg := range records {
		if msg.Header.Get(messages.HeaderOffset) != fmt.Sprint(i) {
			t.Fatalf("record %d arrived as offset %s", i, msg.Header.Get(messages.HeaderOffset))
		}
	}
	wantEndMarker(t, final, messages.StatusEnd, n)
}

// TestClientReplayWithASlowCallbackLosesNothing: messages.Client.Replay
// queues what arrives while its callback works instead of dropping it, so
// a caller slower than voik still gets every record, in order (it used to
// receive on a fixed channel that nats.go drops from when full).
func TestClientReplayWithASlowCallbackLosesNothing(t *testing.T) {
	e := start(t)
	const n = 20_000
	for i := 0; i < n; i++ {
		e.publish("replay.slow", nil, []byte(strconv.Itoa(i)))
	}
	e.flush()
	e.waitForEnd("replay.slow", n)
	next := uint64(0)
	_, err := e.api.Replay(context.Background(), "replay.slow", messages.ReplayRequest{}, func(r client.ReplayedRecord) error {
		if r.Offset != next || string(r.Data) != strconv.Itoa(int(next)) {
			return fmt.Errorf("record %d (%q), want %d", r.Offset, r.Data, next)
		}
		next++
		if next%64 == 0 {
			time.Sleep(time.Millisecond) // a consumer slower than voik sends
		}
		return nil
	})
	if err != nil || next != n {
		t.Fatalf("replay: %v after %d of %d records", err, next, n)
	}
}
