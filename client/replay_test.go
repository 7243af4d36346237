package client_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// fakeReplays answers REPLAY under the prefix T as voik would, with what
// voik cannot be made to do on demand: a marker other than the end, and
// strangers on the deliver subject.
func fakeReplays(t *testing.T) *nats.Conn {
	t.Helper()
	ns := harness.StartNATS(t)
	nc := harness.Connect(t, ns.ClientURL())
	record := func(deliver, subject string, offset uint64) *nats.Msg {
		m := nats.NewMsg(deliver)
		m.Header.Set(messages.HeaderSubject, subject)
		m.Header.Set(messages.HeaderOffset, strconv.FormatUint(offset, 10))
		m.Header.Set(messages.HeaderTimestamp, "7")
		m.Header.Set("Source", "web")
		m.Data = []byte("r" + strconv.FormatUint(offset, 10))
		return m
	}
	marker := func(deliver, subject, status string, offset uint64) *nats.Msg {
		m := nats.NewMsg(deliver)
		if subject == "another.subject" {
			m.Header.Set(messages.HeaderSubject, subject)
		}
		m.Header.Set(messages.HeaderStatus, status)
		m.Header.Set(messages.HeaderOffset, strconv.FormatUint(offset, 10))
		return m
	}
	if _, err := nc.Subscribe("T.REPLAY.>", func(m *nats.Msg) {
		var req messages.ReplayRequest
		msgpack.Unmarshal(m.Data, &req)
		subject := strings.TrimPrefix(m.Subject, "T.REPLAY.")
		m.Respond(messages.Encode(messages.ReplayReply{Subject: subject, FirstOffset: 0, EndOffset: 3, Deliver: req.Deliver}))
		if !strings.HasPrefix(req.Deliver, "_INBOX.") {
			nc.Publish(req.Deliver, []byte("published there by someone else"))
			nc.PublishMsg(record(req.Deliver, "another.subject", 0))
			// Another replay's marker, named (voik's own markers carry no
			// Voik-Subject, so the fake's below leave it out).
			nc.PublishMsg(marker(req.Deliver, "another.subject", messages.StatusEnd, 2))
		}
		nc.PublishMsg(record(req.Deliver, subject, 0))
		switch subject {
		case "deleted":
			nc.PublishMsg(marker(req.Deliver, subject, "416", 1))
		case "unreadable":
			nc.PublishMsg(marker(req.Deliver, subject, "500", 1))
		default:
			nc.PublishMsg(record(req.Deliver, subject, 1))
			nc.PublishMsg(marker(req.Deliver, subject, "413", 2))
			nc.PublishMsg(marker(req.Deliver, subject, messages.StatusEnd, 3))
		}
		nc.Flush()
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	return nc
}

// Replay delivers to a req.Deliver of the caller's when one is given,
// subscribed before it asks, and skips what is not this replay's there
// (another subject's records, and markers that name another subject);
// without one, to a fresh inbox, as before.
func TestReplayHonoursAGivenDeliverSubject(t *testing.T) {
	c := client.New(fakeReplays(t), "T")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, deliver := range []string{"my.copy", ""} {
		var got []string
		reply, err := c.Replay(ctx, "orders", messages.ReplayRequest{Deliver: deliver}, func(r client.ReplayedRecord) error {
			got = append(got, strconv.FormatUint(r.Offset, 10)+":"+string(r.Data)+":"+r.Headers.Get("Source")+":"+strconv.FormatBool(r.TooLarge))
			return nil
		})
		if err != nil {
			t.Fatalf("deliver %q: %v", deliver, err)
		}
		if deliver == "" && !strings.HasPrefix(reply.Deliver, "_INBOX.") || deliver != "" && reply.Deliver != deliver {
			t.Fatalf("deliver %q: delivered to %q", deliver, reply.Deliver)
		}
		want := "0:r0:web:false 1:r1:web:false 2:::true"
		if strings.Join(got, " ") != want {
			t.Fatalf("deliver %q: records %q, want %q", deliver, got, want)
		}
	}
}

// A marker other than the end (416: retention deleted the next record;
// 500: it cannot be read) ends the replay as interrupted; it is not a
// record.
func TestReplayEndsAtEveryMarkerNotJust503(t *testing.T) {
	c := client.New(fakeReplays(t), "T")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for subject, says := range map[string]string{"deleted": "Voik-Status 416", "unreadable": "Voik-Status 500"} {
		var got []uint64
		_, err := c.Replay(ctx, subject, messages.ReplayRequest{}, func(r client.ReplayedRecord) error {
			got = append(got, r.Offset)
			return nil
		})
		if !errors.Is(err, client.ErrReplayInterrupted) || !strings.Contains(err.Error(), "at offset 1") || !strings.Contains(err.Error(), says) || len(got) != 1 {
			t.Fatalf("%s: records %v, %v; want offset 0 only, then ErrReplayInterrupted at offset 1 saying %q", subject, got, err, says)
		}
	}
}
