package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

func withID(id string) nats.Header { return nats.Header{messages.HeaderMsgID: {id}} }

// A publisher that retries an acked append with the same Nats-Msg-Id gets
// the first one's ack, marked duplicate, and the record is stored once;
// the id counts per subject, and only its first value, byte for byte.
func TestARetriedNatsMsgIdIsStoredOnceAndAckedAsTheFirst(t *testing.T) {
	t.Parallel()
	e := start(t)
	first := e.appendAcked("dedupe.a", withID("order-1"), []byte("one"))
	if first.Duplicate {
		t.Fatalf("the first append is acked as a duplicate: %+v", first)
	}
	again := e.appendAcked("dedupe.a", withID("order-1"), []byte("one, retried"))
	if !again.Duplicate || again.Offset != first.Offset || again.Timestamp != first.Timestamp {
		t.Fatalf("retry acked %+v, want the first's %+v with duplicate", again, first)
	}
	other := e.appendAcked("dedupe.a", nats.Header{messages.HeaderMsgID: {"order-2", "order-1"}}, []byte("two"))
	lower := e.appendAcked("dedupe.a", withID("ORDER-1"), []byte("three"))
	elsewhere := e.appendAcked("dedupe.b", withID("order-1"), []byte("on another subject"))
	for _, ack := range []*messages.AckReply{other, lower, elsewhere} {
		if ack.Duplicate {
			t.Fatalf("%+v acked as a duplicate", ack)
		}
	}
	records := e.fetchAll("dedupe.a")
	if len(records) != 3 || string(records[0].Data) != "one" || string(records[1].Data) != "two" || string(records[2].Data) != "three" {
		t.Fatalf("stored %d records on dedupe.a, want one, two, three", len(records))
	}
}

// In a burst, capture appends what NATS has queued in batches; repeats
// inside one batch and across batches are left out alike, acked or not,
// and every acked repeat names its id's first record.
func TestRepeatsInABurstAreStoredOnceEachAckNamingTheFirst(t *testing.T) {
	t.Parallel()
	e := start(t)
	const n, ids = 2000, 50
	acks := make(chan *nats.Msg, n)
	inbox := nats.NewInbox()
	sub, err := e.nc.ChanSubscribe(inbox, acks)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	acked := 0
	for i := 0; i < n; i++ {
		msg := nats.NewMsg("dedupe.burst")
		msg.Header.Set(messages.HeaderMsgID, fmt.Sprintf("id-%d", i%ids))
		msg.Data = []byte(fmt.Sprint(i))
		if i%4 == 0 {
			msg.Header.Set(messages.HeaderAck, "1")
			msg.Reply = inbox
			acked++
		}
		if err := e.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	e.flush()
	firstOf := map[string]messages.AckReply{}
	var duplicates []messages.AckReply
	for range acked {
		select {
		case msg := <-acks:
			var ack messages.AckReply
			if err := msgpack.Unmarshal(msg.Data, &ack); err != nil {
				t.Fatal(err)
			}
			if ack.Duplicate {
				duplicates = append(duplicates, ack)
			} else {
				firstOf[fmt.Sprint(ack.Offset)] = ack
			}
		case <-time.After(requestTimeout):
			t.Fatalf("%d of %d acks came", len(firstOf)+len(duplicates), acked)
		}
	}
	records := e.fetchAll("dedupe.burst")
	if len(records) != ids {
		t.Fatalf("%d records stored for %d ids", len(records), ids)
	}
	for i, r := range records {
		if string(r.Data) != fmt.Sprint(i) || r.Offset != uint64(i) {
			t.Fatalf("record %d holds %q: want the first message of id-%d", r.Offset, r.Data, i)
		}
	}
	for _, ack := range duplicates {
		r := records[ack.Offset]
		if ack.Timestamp != r.Timestamp {
			t.Fatalf("duplicate ack %+v does not name record %d (ts %d)", ack, r.Offset, r.Timestamp)
		}
	}
	if len(duplicates) == 0 {
		t.Fatal("no acked repeat: the test publishes none")
	}
}

// The window holds across a restart: voik fills it from the log's tail.
func TestTheDedupeWindowHoldsAcrossARestart(t *testing.T) {
	t.Parallel()
	e := start(t)
	first := e.appendAcked("dedupe.restart", withID("x"), []byte("before"))
	e.restart()
	again := e.appendAcked("dedupe.restart", withID("x"), []byte("after"))
	if !again.Duplicate || again.Offset != first.Offset {
		t.Fatalf("after a restart the retry is acked %+v, want the first's %+v", again, first)
	}
	if records := e.fetchAll("dedupe.restart"); len(records) != 1 {
		t.Fatalf("%d records after the retry", len(records))
	}
}

// The window runs from the first record's stored ts: a repeat inside it
// is left out, and once it has passed the id is stored again.
func TestAnIdIsStoredAgainOnceItsWindowHasPassed(t *testing.T) {
	t.Parallel()
	const window = 400 * time.Millisecond
	e := startWith(t, nil, func(c *config.Config) { c.DedupeWindow = window })
	first := e.appendAcked("dedupe.window", withID("x"), []byte("first"))
	var stored *messages.AckReply
	harness.Eventually(t, 20*time.Second, "the id to be stored again", func() bool {
		ack := e.appendAcked("dedupe.window", withID("x"), []byte("again"))
		if ack.Duplicate {
			if ack.Offset != first.Offset {
				t.Fatalf("duplicate ack %+v names another record than %+v", ack, first)
			}
			return false
		}
		stored = ack
		return true
	})
	if gap := time.Duration(stored.Timestamp - first.Timestamp); gap < window {
		t.Fatalf("stored again %v after the first, inside the window of %v", gap, window)
	}
	if records := e.fetchAll("dedupe.window"); len(records) != 2 {
		t.Fatalf("%d records, want 2", len(records))
	}
}

// VOIK_DEDUPE_WINDOW=0 stores every message, ids or not.
func TestDedupeWindowZeroStoresEveryRepeat(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *config.Config) { c.DedupeWindow = 0 })
	for range 3 {
		if ack := e.appendAcked("dedupe.off", withID("x"), []byte("m")); ack.Duplicate {
			t.Fatalf("acked as a duplicate with dedupe off: %+v", ack)
		}
	}
	if records := e.fetchAll("dedupe.off"); len(records) != 3 {
		t.Fatalf("%d records, want 3", len(records))
	}
}
