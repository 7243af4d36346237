package harness

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
)

// TestVoikProcess proves the child-process helper does what crash tests
// rely on: an acknowledged append survives SIGKILL and a restart on the
// same data dir, the Client keeps working across it, and SIGTERM exits 0.
// It runs once with an external NATS server and once with voik's embedded
// one (which comes back on the same port).
func TestVoikProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the voik binary")
	}
	bin := BuildVoik(t)
	for _, tc := range []struct {
		name     string
		embedded bool
	}{{"external NATS", false}, {"embedded NATS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := TestConfig(t, "nats://unused")
			if tc.embedded {
				cfg.NatsURL, cfg.EmbeddedPort = "", -1
			} else {
				cfg.NatsURL = StartNATS(t).ClientURL()
			}
			p := StartVoikProcess(t, bin, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			headers := nats.Header{"Trace": {"a", "b"}}
			data := []byte("survives kill -9")
			ack, err := p.Client.Append(ctx, "orders.eu", headers, data)
			if err != nil {
				t.Fatalf("append: %v", err)
			}
			if ack.Offset != 0 || ack.Subject != "orders.eu" {
				t.Fatalf("ack %+v, want offset 0 of orders.eu", ack)
			}
			u, err := p.Usage()
			if err != nil || u.RSS <= 0 || u.OpenFDs <= 0 || u.Mappings <= 0 {
				t.Fatalf("usage %+v, %v", u, err)
			}

			firstPID := p.PID()
			p.Kill()
			p.Restart(t)
			if p.PID() == firstPID {
				t.Fatal("restart kept the same process")
			}
			reply, err := p.Client.Fetch(ctx, "orders.eu", messages.FetchRequest{})
			if err != nil {
				t.Fatalf("fetch after restart: %v", err)
			}
			if len(reply.Records) != 1 || reply.EndOffset != 1 {
				t.Fatalf("after kill and restart: %d records, end %d; want the one acked", len(reply.Records), reply.EndOffset)
			}
			r := reply.Records[0]
			if !bytes.Equal(r.Data, data) || len(r.Headers["Trace"]) != 2 || r.Headers["Trace"][1] != "b" || r.Timestamp != ack.Timestamp {
				t.Fatalf("record %+v differs from what was acked (%+v)", r, ack)
			}

			// Restart of a running child kills it first.
			p.Restart(t)
			if _, err := p.Client.Info(ctx, "orders.eu"); err != nil {
				t.Fatalf("info after second restart: %v", err)
			}
			p.Stop(t)
			select {
			case <-p.Exited():
			default:
				t.Fatal("Stop returned before the child exited")
			}
		})
	}
}
