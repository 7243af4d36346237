package sidecar_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/voik/voik/messages"
)

// sentToConnection is how many messages the NATS server has delivered to
// the connection with this name.
func (e *e2e) sentToConnection(name string) int64 {
	e.t.Helper()
	connz, err := e.server.Connz(&server.ConnzOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range connz.Conns {
		if c.Name == name {
			return c.OutMsgs
		}
	}
	e.t.Fatalf("no connection named %q", name)
	return 0
}

// With the filter ">", every reply and ack voik sends matches capture too.
// NATS must not deliver them back to voik: a FETCH page would cross the
// server twice and be read only to be dropped.
func TestVoiksOwnRepliesAndAcksAreNotDeliveredBackToCapture(t *testing.T) {
	t.Parallel()
	e := start(t) // VOIK_SUBJECTS ">"
	capture := e.voik.Config.NatsName + "-capture"
	for range 10 {
		e.publish("echo.data", nil, make([]byte, 1000))
	}
	e.flush()
	e.waitForEnd("echo.data", 10)

	before := e.sentToConnection(capture)
	const fetches = 20
	for range fetches {
		offset := uint64(0)
		reply, err := e.client.Fetch(context.Background(), "echo.data", messages.FetchRequest{Offset: &offset})
		if err != nil || len(reply.Records) != 10 {
			t.Fatalf("fetch: %v %+v", err, reply)
		}
	}
	const acked = 20
	for range acked {
		e.appendAcked("echo.acked", nil, []byte("x"))
	}
	// Each request and each acked message matches ">" and reaches capture
	// once; the replies and acks voik sent for them do not.
	if got := e.sentToConnection(capture) - before; got != fetches+acked {
		t.Fatalf("NATS delivered %d messages to voik's capture connection for %d requests and %d acked appends; want %d (its own replies came back)", got, fetches, acked, fetches+acked)
	}
}
