package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
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

// startAsVoikUser runs NATS with voik's user as docs/operations.md
// configures it (no subscriptions to _INBOX.>), and voik logged in as it.
func startAsVoikUser(t *testing.T, configure func(*configT)) *e2e {
	return startWith(t, []harness.NATSOption{harness.WithVoikUser()}, func(c *configT) {
		c.NatsUser, c.NatsPassword = harness.VoikUser, harness.VoikPassword
		if configure != nil {
			configure(c)
		}
	})
}

// With the filter ">", every reply and ack voik sends matches capture too.
// NATS must not deliver them back to voik: a FETCH page would cross the
// server twice and be read only to be dropped. Acks leave on capture's
// own connection, whose echo is off; replies leave on the API's, and the
// server keeps them from capture because voik's user may not subscribe
// to _INBOX.>.
func TestVoiksOwnRepliesAndAcksAreNotDeliveredBackToCapture(t *testing.T) {
	t.Parallel()
	e := startAsVoikUser(t, nil) // VOIK_SUBJECTS ">"
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
		reply, err := e.api.Fetch(context.Background(), "echo.data", messages.FetchRequest{Offset: &offset})
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

// A client may take its replies outside _INBOX. (nats.go's
// CustomInboxPrefix), under a subject that a capture filter covers.
// voik's replies there carry Voik-Reply and are never stored, while any
// other message on that subject is.
func TestRepliesToACustomInboxThatCaptureCoversAreNotStored(t *testing.T) {
	t.Parallel()
	e := startAsVoikUser(t, nil) // VOIK_SUBJECTS ">"
	e.publish("custom.data", nil, []byte("x"))
	e.flush()
	e.waitForEnd("custom.data", 1)
	nc := harness.Connect(t, e.server.ClientURL(), nats.CustomInboxPrefix("myapp.inbox"))
	api := client.New(nc, e.prefix())
	const fetches = 5
	for range fetches {
		offset := uint64(0)
		if reply, err := api.Fetch(context.Background(), "custom.data", messages.FetchRequest{Offset: &offset}); err != nil || len(reply.Records) != 1 {
			t.Fatalf("fetch with a custom inbox: %v %+v", err, reply)
		}
	}
	// A message of the client's own on that prefix is stored; once it is,
	// everything published before it has been handled.
	if err := nc.Publish("myapp.inbox.marker", []byte("mine")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.waitForEnd("myapp.inbox.marker", 1)
	for _, subject := range e.subjects(">") {
		if strings.HasPrefix(subject, "myapp.inbox.") && subject != "myapp.inbox.marker" {
			t.Fatalf("voik stored its own reply on %s", subject)
		}
	}
}
