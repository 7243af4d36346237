package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

func startVoik(t *testing.T) (*harness.Voik, *nats.Conn) {
	t.Helper()
	ns := harness.StartNATS(t)
	v := harness.StartVoik(t, harness.TestConfig(t, ns.ClientURL()))
	return v, harness.Connect(t, ns.ClientURL())
}

// publishAndWait publishes n messages on subject and waits until INFO shows them.
func waitForEnd(t *testing.T, v *harness.Voik, subject string, end uint64) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, fmt.Sprintf("%s to reach offset %d", subject, end), func() bool {
		info, err := v.Client.Info(context.Background(), subject)
		return err == nil && info.EndOffset >= end
	})
}

func TestCaptureAndFetchKeepHeadersAndData(t *testing.T) {
	v, nc := startVoik(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		msg := nats.NewMsg("orders.eu")
		msg.Data = []byte(fmt.Sprintf("order %d", i))
		if i%2 == 0 {
			msg.Header["Trace-Id"] = []string{fmt.Sprint(i)}
			msg.Header["multi"] = []string{"b", "a"}
		}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	waitForEnd(t, v, "orders.eu", 5)
	reply, err := v.Client.Fetch(ctx, "orders.eu", messages.FetchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Records) != 5 || reply.NextOffset != 5 || reply.FirstOffset != 0 || reply.EndOffset != 5 {
		t.Fatalf("fetch: %d records, next %d first %d end %d", len(reply.Records), reply.NextOffset, reply.FirstOffset, reply.EndOffset)
	}
	for i, r := range reply.Records {
		if r.Offset != uint64(i) || string(r.Data) != fmt.Sprintf("order %d", i) {
			t.Fatalf("record %d: %+v", i, r)
		}
		var want map[string][]string
		if i%2 == 0 {
			want = map[string][]string{"Trace-Id": {fmt.Sprint(i)}, "multi": {"b", "a"}}
		}
		if !reflect.DeepEqual(r.Headers, want) {
			t.Fatalf("record %d headers %v, want %v", i, r.Headers, want)
		}
		if r.Timestamp == 0 || i > 0 && r.Timestamp < reply.Records[i-1].Timestamp {
			t.Fatalf("record %d timestamp %d", i, r.Timestamp)
		}
	}
}

func TestFetchUnknownSubjectIs404(t *testing.T) {
	v, _ := startVoik(t)
	_, err := v.Client.Fetch(context.Background(), "nothing.here", messages.FetchRequest{})
	var apiErr *messages.Error
	if !errors.As(err, &apiErr) || apiErr.Code != 404 {
		t.Fatalf("got %v, want a 404", err)
	}
}

func TestAckedAppendRepliesWithOffset(t *testing.T) {
	v, nc := startVoik(t)
	client := messages.NewClient(nc, "VOIK.API")
	for i := 0; i < 3; i++ {
		ack, err := client.Append(context.Background(), "payments", nil, []byte("p"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Offset != uint64(i) || ack.Subject != "payments" || ack.Timestamp == 0 {
			t.Fatalf("ack %d: %+v", i, ack)
		}
	}
	info, err := v.Client.Info(context.Background(), "payments")
	if err != nil || info.Messages != 3 {
		t.Fatalf("info %+v, %v", info, err)
	}
}

func TestLongPollWakesOnPublish(t *testing.T) {
	v, nc := startVoik(t)
	if _, err := messages.NewClient(nc, "").Append(context.Background(), "poll.me", nil, []byte("first")); err != nil {
		t.Fatal(err)
	}
	got := make(chan *messages.FetchReply, 1)
	errs := make(chan error, 1)
	go func() {
		offset := uint64(1)
		reply, err := v.Client.Fetch(context.Background(), "poll.me", messages.FetchRequest{Offset: &offset, WaitMs: 30000})
		if err != nil {
			errs <- err
			return
		}
		got <- reply
	}()
	// The fetch is parked (or about to be); the record must wake it, long
	// before its 30 s wait ends.
	if err := nc.Publish("poll.me", []byte("second")); err != nil {
		t.Fatal(err)
	}
	select {
	case reply := <-got:
		if len(reply.Records) != 1 || string(reply.Records[0].Data) != "second" {
			t.Fatalf("long poll got %+v", reply)
		}
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("long poll was not woken by the publish")
	}
}

func TestReplayOntoOriginalSubjectIsNotStoredAgain(t *testing.T) {
	v, nc := startVoik(t)
	client := messages.NewClient(nc, "")
	for i := 0; i < 10; i++ {
		if _, err := client.Append(context.Background(), "events", nil, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var replayed []string
	reply, err := client.Replay(context.Background(), "events", messages.ReplayRequest{}, func(r messages.ReplayedRecord) error {
		replayed = append(replayed, string(r.Data))
		return nil
	})
	if err != nil || reply.FirstOffset != 0 || reply.EndOffset != 10 || len(replayed) != 10 {
		t.Fatalf("replay: %+v %v %v", reply, replayed, err)
	}
	// Replay onto the original subject and wait for its end marker: by
	// then NATS has routed every replayed copy to voik's capture too. An
	// acked marker published after that lands after them.
	sub, err := nc.SubscribeSync("events")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if _, err := client.ReplayTo(context.Background(), "events", messages.ReplayRequest{Deliver: "events"}); err != nil {
		t.Fatal(err)
	}
	copies := 0
	for {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("replay end marker: %v", err)
		}
		if msg.Header.Get(messages.HeaderStatus) == messages.StatusEnd {
			break
		}
		copies++
	}
	if copies != 10 {
		t.Fatalf("replay delivered %d copies, want 10", copies)
	}
	ack, err := client.Append(context.Background(), "events", nil, []byte("marker"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Offset != 10 {
		t.Fatalf("marker got offset %d: replayed copies were stored", ack.Offset)
	}
	if info, err := v.Client.Info(context.Background(), "events"); err != nil || info.EndOffset != 11 {
		t.Fatalf("info after replay: %+v %v", info, err)
	}
}
