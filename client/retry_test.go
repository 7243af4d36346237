package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// A read that NATS drops, or that a member catching up answers 503, is
// sent again within the caller's context; the first real answer, an
// error one included, is the result.
func TestReadsAreTriedAgainAfterNoAnswerOrA503(t *testing.T) {
	nc := harness.Connect(t, harness.StartNATS(t).ClientURL())
	var asked atomic.Int32
	var answers atomic.Pointer[[][]byte]
	answers.Store(&[][]byte{
		nil, // dropped: no reply
		messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "this member is catching up with its group; retry")),
		messages.Encode(messages.InfoReply{Subject: "x", FirstOffset: 3, EndOffset: 7, Messages: 4}),
	})
	sub, err := nc.Subscribe("VOIK.API.INFO.x", func(m *nats.Msg) {
		all := *answers.Load()
		if n := int(asked.Add(1)) - 1; n < len(all) && all[n] != nil {
			m.Respond(all[n])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c := client.New(nc, "")
	c.AttemptTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "x")
	if err != nil || info.EndOffset != 7 || asked.Load() != 3 {
		t.Fatalf("INFO: %+v, %v after %d requests; want end 7 after 3", info, err, asked.Load())
	}

	// A 404 is an answer: not asked again.
	asked.Store(0)
	answers.Store(&[][]byte{messages.EncodeError(messages.Errorf(messages.CodeNotFound, "no such subject"))})
	var e *messages.Error
	if _, err := c.Info(ctx, "x"); !errors.As(err, &e) || e.Code != messages.CodeNotFound || asked.Load() != 1 {
		t.Fatalf("INFO of a missing subject: %v after %d requests; want a 404 after 1", err, asked.Load())
	}

	// Nobody answering at all: no retry past the context.
	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	if _, err := c.Info(short, "nobody"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("INFO with no responders: %v", err)
	}
}

// AppendUntilAcked sends the same record under the same Nats-Msg-Id again
// after a try NATS dropped and after a 503, and returns the first ack;
// any other answer is the result at once.
func TestAppendUntilAckedTriesTheSameIdAgainUntilAcked(t *testing.T) {
	nc := harness.Connect(t, harness.StartNATS(t).ClientURL())
	var answers atomic.Pointer[[][]byte]
	answers.Store(&[][]byte{
		nil, // dropped: a leader that died with the request
		messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "no leader yet")),
		messages.Encode(messages.AckReply{Subject: "orders.eu", Offset: 41, Timestamp: 7}),
	})
	tries := make(chan *nats.Msg, 10)
	sub, err := nc.Subscribe("orders.eu", func(m *nats.Msg) {
		tries <- m
		all := *answers.Load()
		if n := len(tries) - 1; n < len(all) && all[n] != nil {
			m.Respond(all[n])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c := client.New(nc, "")
	c.AppendAttemptTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ack, err := c.AppendUntilAcked(ctx, "orders.eu", "order-41", nats.Header{"Source": {"web"}}, []byte("an order"))
	if err != nil || ack.Offset != 41 {
		t.Fatalf("AppendUntilAcked: %+v, %v; want the ack of offset 41", ack, err)
	}
	if len(tries) != 3 {
		t.Fatalf("%d tries, want 3", len(tries))
	}
	for range 3 {
		m := <-tries
		if m.Header.Get(messages.HeaderMsgID) != "order-41" || m.Header.Get(messages.HeaderAck) == "" || m.Header.Get("Source") != "web" || string(m.Data) != "an order" {
			t.Errorf("a try was not the same record under the same id: headers %v, data %q", m.Header, m.Data)
		}
	}

	// A 413 is an answer: not sent again.
	answers.Store(&[][]byte{messages.EncodeError(messages.Errorf(messages.CodeTooLarge, "larger than a segment"))})
	var e *messages.Error
	if _, err := c.AppendUntilAcked(ctx, "orders.eu", "order-42", nil, []byte("x")); !errors.As(err, &e) || e.Code != messages.CodeTooLarge || len(tries) != 1 {
		t.Fatalf("AppendUntilAcked answered 413: %v after %d tries; want the 413 after 1", err, len(tries))
	}
	if _, err := c.AppendUntilAcked(ctx, "orders.eu", "", nil, []byte("x")); err == nil {
		t.Fatal("AppendUntilAcked without an id: no error")
	}
}

// While nothing captures the subject (a group between leaders), a try
// finds no responders at once; AppendUntilAcked keeps trying until its
// context ends.
func TestAppendUntilAckedKeepsTryingWhileNothingCaptures(t *testing.T) {
	nc := harness.Connect(t, harness.StartNATS(t).ClientURL())
	c := client.New(nc, "")
	before := nc.Stats().OutMsgs
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.AppendUntilAcked(ctx, "orders.eu", "order-1", nil, []byte("x")); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("AppendUntilAcked with nothing capturing: %v, want no responders", err)
	}
	if sent := nc.Stats().OutMsgs - before; sent < 2 {
		t.Fatalf("%d tries in 500 ms with nothing capturing; want it tried again", sent)
	}
}
