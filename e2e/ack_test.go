package e2e

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// ackedMsg is a message with Voik-Ack on subject.
func ackedMsg(subject string, data []byte) *nats.Msg {
	msg := nats.NewMsg(subject)
	msg.Header.Set(messages.HeaderAck, "yes")
	msg.Data = data
	return msg
}

func TestAckedAppendIsAnsweredWithExactlySubjectOffsetAndTsUnderEverySyncPolicy(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"always", "batch", "interval", "none"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			e := startWith(t, nil, func(c *configT) { c.Sync = policy; c.SyncInterval = 20 * time.Millisecond })
			for i := 0; i < 5; i++ {
				reply, err := e.nc.RequestMsg(ackedMsg("acked.policy", []byte(fmt.Sprint(i))), requestTimeout)
				if err != nil {
					t.Fatalf("ack %d: %v", i, err)
				}
				ack := decodeReply(t, reply.Data)
				wantSuccess(t, "ack", ack)
				wantKeys(t, "ack", ack, "subject", "offset", "ts")
				if ack["subject"] != "acked.policy" || unum(t, ack["offset"]) != uint64(i) {
					t.Fatalf("ack %d: %v", i, ack)
				}
				record := e.fetch("acked.policy", messages.FetchRequest{Offset: ptr(uint64(i)), MaxMessages: 1}).Records[0]
				if record.Timestamp != num(t, ack["ts"]) || string(record.Data) != fmt.Sprint(i) {
					t.Fatalf("record %d: %+v, ack %v", i, record, ack)
				}
				// The header is stored like any other: "exactly as published".
				if got := record.Headers[messages.HeaderAck]; len(got) != 1 || got[0] != "yes" {
					t.Fatalf("record %d headers %v", i, record.Headers)
				}
			}
		})
	}
}

func TestAckedAppendsFromConcurrentPublishersGetDistinctContiguousOffsets(t *testing.T) {
	t.Parallel()
	e := start(t)
	const publishers, each = 8, 100
	acks := make(chan *messages.AckReply, publishers*each)
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		nc := harness.Connect(t, e.server.ClientURL())
		api := client.New(nc, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				ack, err := api.Append(context.Background(), "acked.crowd", nil, []byte(fmt.Sprintf("%d/%d", p, i)))
				if err != nil {
					errs <- err
					return
				}
				acks <- ack
			}
		}()
	}
	wg.Wait()
	close(acks)
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	byOffset := map[uint64]*messages.AckReply{}
	for ack := range acks {
		if byOffset[ack.Offset] != nil {
			t.Fatalf("offset %d acked twice", ack.Offset)
		}
		byOffset[ack.Offset] = ack
	}
	records := e.fetchAll("acked.crowd")
	if len(records) != publishers*each || len(byOffset) != publishers*each {
		t.Fatalf("%d records, %d acks", len(records), len(byOffset))
	}
	for _, r := range records {
		if ack := byOffset[r.Offset]; ack == nil || ack.Timestamp != r.Timestamp {
			t.Fatalf("record %d has no matching ack", r.Offset)
		}
	}
}

func TestOnlyMessagesWithVoikAckAndAReplySubjectAreAcked(t *testing.T) {
	t.Parallel()
	e := start(t)
	inbox := newInboxCollector(t, e.nc, 10)
	// A reply subject but no Voik-Ack: stored, not answered.
	plain := nats.NewMsg("ack.rules")
	plain.Reply = inbox.replyTo(0)
	plain.Data = []byte("no header")
	if err := e.nc.PublishMsg(plain); err != nil {
		t.Fatal(err)
	}
	// Voik-Ack in another case: not the header.
	lower := nats.NewMsg("ack.rules")
	lower.Reply = inbox.replyTo(1)
	lower.Header["voik-ack"] = []string{"1"}
	if err := e.nc.PublishMsg(lower); err != nil {
		t.Fatal(err)
	}
	// Voik-Ack without a reply subject: stored, nobody to answer.
	e.publish("ack.rules", nats.Header{messages.HeaderAck: {"1"}}, []byte("no reply"))
	// Voik-Ack with an empty value: "any value".
	empty := ackedMsg("ack.rules", []byte("empty value"))
	empty.Header.Set(messages.HeaderAck, "")
	reply, err := e.nc.RequestMsg(empty, requestTimeout)
	if err != nil {
		t.Fatalf("Voik-Ack with an empty value: %v", err)
	}
	if ack := decodeReply(t, reply.Data); unum(t, ack["offset"]) != 3 {
		t.Fatalf("ack %v, want offset 3", ack)
	}
	records := e.fetchAll("ack.rules")
	if len(records) != 4 {
		t.Fatalf("%d records, want 4", len(records))
	}
	// The two that wanted no ack got none. Capture answered a later one of
	// the same subject, through the same ack worker and connection, after
	// handling them: a wrong ack would have reached the inbox (filled by
	// this connection's reader, in order) before that reply did.
	select {
	case msg := <-inbox.msgs:
		t.Fatalf("a message without Voik-Ack was answered on %s", msg.Subject)
	default:
	}
}

func TestMessagesVoikDoesNotCaptureGetNoAck(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *configT) { c.Subjects = "orders.>" })
	// Outside the filters: voik does not even subscribe; NATS says so.
	_, err := e.nc.RequestMsg(ackedMsg("payments.eu", nil), requestTimeout)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("acked publish outside the filters: %v, want no responders", err)
	}
	// Inside a '>' filter but excluded: voik sees it and says nothing.
	wide := startWith(t, nil, nil)
	inbox := newInboxCollector(t, wide.nc, 10)
	for i, subject := range []string{"$ACK.x", "_INBOX.not.mine"} {
		msg := ackedMsg(subject, nil)
		msg.Reply = inbox.replyTo(i)
		if err := wide.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	replayed := ackedMsg("replayed.copy", nil)
	replayed.Header.Set(messages.HeaderOffset, "3")
	replayed.Reply = inbox.replyTo(2)
	if err := wide.nc.PublishMsg(replayed); err != nil {
		t.Fatal(err)
	}
	wide.appendAcked("ack.sync", nil, nil) // handled after the three above
	// Not stored, so not answered by an ack worker; an answer straight from
	// capture's handler would have left before ack.sync's, on the same
	// connection, and reached the inbox before appendAcked returned.
	if got := wide.subjects(">"); len(got) != 1 || got[0] != "ack.sync" {
		t.Fatalf("stored %v", got)
	}
	select {
	case msg := <-inbox.msgs:
		t.Fatalf("an excluded message was acked on %s: %v", msg.Subject, decodeReply(t, msg.Data))
	default:
	}
}

func TestRecordLargerThanASegmentGetsA413AckAndItsSubjectStays404(t *testing.T) {
	t.Parallel()
	// A 64 KiB segment cannot hold a 100 KB record; NATS carries it.
	e := startWith(t, nil, func(c *configT) { c.SegmentSize = 64 << 10 })
	reply, err := e.nc.RequestMsg(ackedMsg("oversized", make([]byte, 100_000)), requestTimeout)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	wantError(t, "ack of a record larger than a segment", decodeReply(t, reply.Data), 413)
	// Nothing was ever stored for the subject: 404, like any other.
	wantError(t, "INFO of a subject whose only message was refused", e.call("INFO.oversized", nil), 404)
	wantError(t, "FETCH of a subject whose only message was refused", e.call("FETCH.oversized", nil), 404)
	// Nor is it listed: no log was left behind for it.
	e.publish("oversized.plain", nil, make([]byte, 100_000)) // unacked, the same
	e.appendAcked("oversized.marker", nil, nil)              // behind it: it was handled
	if got := e.subjects(">"); !reflect.DeepEqual(got, []string{"oversized.marker"}) {
		t.Fatalf("SUBJECTS lists %q, want only the subject with a record", got)
	}
	// A long poll may wait for its first record, and gets what fits.
	polled := e.sendFetch("oversized", map[string]any{"wait_ms": 30000})
	e.fetchesDispatched()
	if ack := e.appendAcked("oversized", nil, []byte("fits")); ack.Offset != 0 {
		t.Fatalf("next append got offset %d", ack.Offset)
	}
	records := wantFetchReply(t, decodeReply(t, waitUntil(t, polled, 35*time.Second, "the long poll").Data), "oversized", 1, 0, 1)
	if len(records) != 1 || string(records[0]["data"].([]byte)) != "fits" {
		t.Fatalf("long poll got %v", records)
	}
}
