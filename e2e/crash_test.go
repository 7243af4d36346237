package e2e

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// crashHeaders are the headers of crash record i: names, several values
// and their order must all survive.
func crashHeaders(i int) nats.Header {
	return nats.Header{messages.HeaderAck: {"1"}, "I": {strconv.Itoa(i)}, "Multi": {"b", "a", strconv.Itoa(i % 7)}}
}

func crashData(i int) []byte { return []byte(fmt.Sprintf("crash record %d", i)) }

func TestAckedAppendsSurviveKillMinus9OfTheVoikProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a voik child process")
	}
	bin := harness.BuildVoik(t)
	for _, policy := range []string{"always", "batch", "interval", "none"} {
		t.Run(policy, func(t *testing.T) {
			ns := harness.StartNATS(t)
			cfg := harness.TestConfig(t, ns.ClientURL())
			cfg.Sync = policy
			cfg.SyncInterval = 50 * time.Millisecond
			cfg.SegmentSize = 64 << 10 // rotations under the load, too
			p := harness.StartVoikProcess(t, bin, cfg)
			nc := harness.Connect(t, ns.ClientURL())

			// Each round: acked appends pipelined as fast as they go, a
			// SIGKILL in the middle of them, a restart.
			acked := map[uint64]int{} // offset → record number
			next := 0
			for round := 0; round < 3; round++ {
				const window = 20_000
				inbox := newInboxCollector(t, nc, window)
				stopPublishing := make(chan struct{})
				published := make(chan int, 1)
				go func() {
					i := 0
					defer func() { published <- i }()
					for ; i < window; i++ {
						select {
						case <-stopPublishing:
							return
						default:
						}
						msg := nats.NewMsg("crash.acked")
						msg.Header = crashHeaders(next + i)
						msg.Data = crashData(next + i)
						msg.Reply = inbox.replyTo(next + i)
						if nc.PublishMsg(msg) != nil {
							return
						}
					}
				}()
				// Kill once 500 replies are in: acks are in flight then.
				var replies []*nats.Msg
				for len(replies) < 500 {
					replies = append(replies, waitUntil(t, inbox.msgs, 30*time.Second, fmt.Sprintf("ack %d of round %d", len(replies), round)))
				}
				p.Kill()
				close(stopPublishing)
				sent := <-published
				// Every ack the server had for us is in the channel once a
				// flush returns: NATS keeps a connection's order.
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				for drained := false; !drained; {
					select {
					case msg := <-inbox.msgs:
						replies = append(replies, msg)
					default:
						drained = true
					}
				}
				roundAcks := 0
				for _, msg := range replies {
					if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
						continue // NATS's "no responders": published while voik was dead
					}
					i := inbox.index(t, msg)
					reply := decodeReply(t, msg.Data)
					wantSuccess(t, fmt.Sprint("ack of record ", i), reply)
					offset := unum(t, reply["offset"])
					if other, dup := acked[offset]; dup {
						t.Fatalf("offset %d acked for records %d and %d", offset, other, i)
					}
					acked[offset] = i
					roundAcks++
				}
				t.Logf("round %d: %d published, %d acked before SIGKILL", round, sent, roundAcks)
				next += sent

				p.Restart(t)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				records := fetchEverything(t, ctx, p.Client, "crash.acked")
				cancel()
				for offset, i := range acked {
					if offset >= uint64(len(records)) {
						t.Fatalf("round %d: acked offset %d (record %d) lost: the log ends at %d", round, offset, i, len(records))
					}
					r := records[offset]
					if string(r.Data) != string(crashData(i)) || !reflect.DeepEqual(r.Headers, map[string][]string(crashHeaders(i))) {
						t.Fatalf("round %d: offset %d was acked for record %d; it holds %q %v", round, offset, i, r.Data, r.Headers)
					}
				}
				// Whatever else survived is whole and in order.
				for offset, r := range records {
					if uint64(offset) != r.Offset {
						t.Fatalf("round %d: position %d holds offset %d", round, offset, r.Offset)
					}
				}
			}
			// And the log takes appends at its end.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			info, err := p.Client.Info(ctx, "crash.acked")
			if err != nil {
				t.Fatal(err)
			}
			ack, err := p.Client.Append(ctx, "crash.acked", nil, []byte("after the crashes"))
			if err != nil || ack.Offset != info.EndOffset {
				t.Fatalf("append after the crashes: %+v, %v; end was %d", ack, err, info.EndOffset)
			}
			p.Stop(t)
		})
	}
}

// fetchEverything reads a whole log through client.
func fetchEverything(t *testing.T, ctx context.Context, api *client.Client, subject string) []messages.Record {
	t.Helper()
	var all []messages.Record
	req := messages.FetchRequest{MaxMessages: messages.MaxMessagesCap}
	for {
		reply, err := api.Fetch(ctx, subject, req)
		if err != nil {
			t.Fatalf("fetch %s: %v", subject, err)
		}
		all = append(all, reply.Records...)
		if reply.NextOffset >= reply.EndOffset {
			return all
		}
		next := reply.NextOffset
		req.Offset = &next
	}
}
