package e2e

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
)

// These tests stop voik the way SIGTERM does (the context Run watches is
// cancelled), so none of them runs in parallel with the others' load.

func TestRestartOnTheSameDataDirKeepsEverythingAndOffsetsContinue(t *testing.T) {
	e := startWith(t, nil, func(c *configT) { c.SegmentSize = 64 << 10 })
	subjects := []string{"restart.a", "restart.b.c", "restart.ü"}
	for i := 0; i < 300; i++ {
		subject := subjects[i%len(subjects)]
		e.publish(subject, nats.Header{"I": {strconv.Itoa(i)}, "Multi": {"x", "y"}}, append([]byte(fmt.Sprintf("%d;", i)), make([]byte, 1500)...))
	}
	e.flush()
	for _, s := range subjects {
		e.waitForEnd(s, 100)
	}
	before := e.snapshot()
	infos := map[string]*messages.InfoReply{}
	for _, s := range subjects {
		info, err := e.api.Info(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if info.Segments < 2 {
			t.Fatalf("%s: %d segments; the test wants rotated logs", s, info.Segments)
		}
		infos[s] = info
	}

	for round := 1; round <= 2; round++ {
		e.restart()
		if after := e.snapshot(); !reflect.DeepEqual(before, after) {
			t.Fatalf("restart %d changed the stored records", round)
		}
		for _, s := range subjects {
			info, err := e.api.Info(context.Background(), s)
			if err != nil || !reflect.DeepEqual(info, infos[s]) {
				t.Fatalf("restart %d: INFO %s\n got %+v, %v\nwant %+v", round, s, info, err, infos[s])
			}
		}
	}
	// Offsets continue where they were; timestamps do not go back.
	for _, s := range subjects {
		ack := e.appendAcked(s, nil, []byte("after the restarts"))
		if ack.Offset != 100 || ack.Timestamp < infos[s].LastTs {
			t.Fatalf("%s: append after restarts %+v, last ts before %d", s, ack, infos[s].LastTs)
		}
	}
}

func TestStopAnswersEveryAckInFlightAndAllOfItIsDurable(t *testing.T) {
	e := start(t)
	const n = 3000
	inbox := newInboxCollector(t, e.nc, n)
	for i := 0; i < n; i++ {
		msg := ackedMsg("stop.acks", []byte(strconv.Itoa(i)))
		msg.Reply = inbox.replyTo(i)
		if err := e.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		e.publish("stop.plain", nil, []byte(strconv.Itoa(i)))
	}
	// The server has every message, and has routed it to voik, before
	// voik is told to stop: all of it is accepted, so all of it is
	// appended, acked and durable.
	e.flush()
	e.voik.Stop(t)

	acks := make([]*messages.AckReply, n)
	for got := 0; got < n; got++ {
		msg := waitUntil(t, inbox.msgs, 30*time.Second, fmt.Sprintf("ack %d of %d after Stop", got+1, n))
		i := inbox.index(t, msg)
		reply := decodeReply(t, msg.Data)
		wantSuccess(t, fmt.Sprint("ack ", i), reply)
		acks[i] = &messages.AckReply{Subject: reply["subject"].(string), Offset: unum(t, reply["offset"]), Timestamp: num(t, reply["ts"])}
	}
	// Stopped: nothing answers, and what is published now is not stored.
	if _, err := e.nc.Request(e.prefix()+".SUBJECTS", nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to a stopped voik: %v, want no responders", err)
	}
	e.publish("stop.plain", nil, []byte("after stop"))
	e.flush()

	e.restart()
	records := e.fetchAll("stop.acks")
	if len(records) != n {
		t.Fatalf("%d acked records after restart, want %d", len(records), n)
	}
	for i, ack := range acks {
		r := records[ack.Offset]
		if string(r.Data) != strconv.Itoa(i) || r.Timestamp != ack.Timestamp {
			t.Fatalf("ack %d said offset %d ts %d; the record there is %q ts %d", i, ack.Offset, ack.Timestamp, r.Data, r.Timestamp)
		}
	}
	plain := e.fetchAll("stop.plain")
	if len(plain) != n {
		t.Fatalf("%d plain records after restart, want %d (the one published after Stop must not be there)", len(plain), n)
	}
	for i, r := range plain {
		if string(r.Data) != strconv.Itoa(i) {
			t.Fatalf("plain record %d is %q", i, r.Data)
		}
	}
}

func TestWaitingFetchIsAnsweredAtOnceWhenVoikStops(t *testing.T) {
	e := start(t)
	e.fill("stop.poll", 2)
	got := e.sendFetch("stop.poll", map[string]any{"offset": 2, "wait_ms": 60000})
	e.fetchesDispatched()
	stopping := time.Now()
	e.voik.Stop(t)
	reply := decodeReply(t, waitUntil(t, got, 30*time.Second, "the long poll's reply").Data)
	if elapsed := time.Since(stopping); elapsed > 10*time.Second {
		t.Fatalf("long poll answered %v after Stop began; its wait was 60 s", elapsed)
	}
	if records := wantFetchReply(t, reply, "stop.poll", 2, 0, 2); len(records) != 0 {
		t.Fatalf("%d records", len(records))
	}
}

func TestReplayCutShortByShutdownEndsWithA503MarkerAtWhereItStopped(t *testing.T) {
	e := start(t)
	const n = 40_000
	for i := 0; i < n; i++ {
		e.publish("stop.replay", nil, make([]byte, 1024))
	}
	e.flush()
	e.waitForEnd("stop.replay", n)
	c := e.collectReplay("_INBOX.stop.replay")
	wantReplayReply(t, e.call("REPLAY.stop.replay", map[string]any{"deliver": "_INBOX.stop.replay"}), "stop.replay", "_INBOX.stop.replay", 0, n)
	first, err := c.sub.NextMsg(requestTimeout)
	if err != nil || first.Header.Get(messages.HeaderOffset) != "0" {
		t.Fatalf("first replayed record: %v %v", first, err)
	}
	e.voik.Stop(t) // returns once the replay goroutine has finished
	records, final := c.until()
	delivered := uint64(1 + len(records))
	for i, msg := range records {
		if msg.Header.Get(messages.HeaderOffset) != strconv.Itoa(i+1) {
			t.Fatalf("record %d came as offset %s", i+1, msg.Header.Get(messages.HeaderOffset))
		}
	}
	if delivered == n {
		t.Skipf("the replay of %d records finished before Stop reached it; nothing to check", n)
	}
	wantEndMarker(t, final, "503", delivered)
}
