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
