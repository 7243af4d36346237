// Package crash is voik's end-to-end crash soak: publishers append with
// acknowledgements while voik, a child process, is killed with SIGKILL at
// random moments and restarted on the same data dir. After every restart
// every record ever acknowledged must be there, unchanged, at the offset
// its ack named; offsets must be contiguous; and every record stored must
// be one a publisher sent, once.
//
//	go test ./e2e/crash                      # 5 rounds, part of go test ./...
//	go test ./e2e/crash -v -rounds 50        # make crash
package crash

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

var (
	rounds     = flag.Int("rounds", 5, "kill-and-restart rounds of TestCrashSoak")
	publishers = flag.Int("publishers", 4, "publishers, each on its own connection")
	syncPolicy = flag.String("sync", "batch", "VOIK_SYNC of the voik under test (always or batch: acks must survive kill -9)")
	seed       = flag.Uint64("seed", 0, "random seed (0: from the clock; printed)")
)

var subjects = []string{"crash.orders", "crash.payments.eu", "crash.audit"}

const (
	headerID = "Crash-Id"
	window   = 32 // acked appends in flight per publisher
)

// sent is one message a publisher sent, acked or not.
type sent struct {
	subject string
	headers nats.Header
	data    []byte
}

// acked is what an ack said.
type acked struct {
	id     string
	offset uint64
	ts     int64
}

// ledger is every message sent and every ack received, over all rounds.
type ledger struct {
	mu    sync.Mutex
	sent  map[string]sent
	acked map[string][]acked // by subject
	count int
}

func (l *ledger) recordSent(id string, m sent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[id] = m
}

func (l *ledger) recordAck(subject string, a acked) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[subject] = append(l.acked[subject], a)
	l.count++
}

func TestCrashSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a voik child process")
	}
	s := *seed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", s, s)
	rng := rand.New(rand.NewPCG(s, s>>1))

	bin := harness.BuildVoik(t)
	ns := harness.StartNATS(t)
	cfg := harness.TestConfig(t, ns.ClientURL())
	cfg.Sync = *syncPolicy
	cfg.SegmentSize = 256 << 10 // rotate often: kills land around sealing too
	cfg.Subjects = "crash.>"
	cfg.LogLevel = "warn" // recovery warnings go to the test log on failure
	v := harness.StartVoikProcess(t, bin, cfg)

	conns := make([]*nats.Conn, *publishers)
	for i := range conns {
		conns[i] = harness.Connect(t, ns.ClientURL(), nats.Name(fmt.Sprintf("crash-publisher-%d", i)))
	}
	l := &ledger{sent: map[string]sent{}, acked: map[string][]acked{}}
	start := time.Now()
	checked, lost, invented := 0, 0, 0
	for round := 1; round <= *rounds; round++ {
		// Publish until a random moment, then SIGKILL voik mid-traffic.
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for p, nc := range conns {
			wg.Add(1)
			pubSeed := rng.Uint64()
			go func() {
				defer wg.Done()
				publish(ctx, t, nc, l, round, p, rand.New(rand.NewPCG(pubSeed, uint64(p))))
			}()
		}
		killAfter := time.Duration(rng.IntN(400)) * time.Millisecond
		time.Sleep(killAfter)
		v.Kill()
		// Acks voik sent before it died may still be on their way from
		// its socket through the server. Nothing orders them with the
		// publishers' connections, so this wait is best effort: an ack
		// that comes later is not recorded, which only leaves that record
		// unchecked; it can never make the check pass or fail wrongly.
		time.Sleep(100 * time.Millisecond)
		stop()
		wg.Wait()

		v.Restart(t)
		res := verify(t, v.Client, l)
		checked += res.checked
		lost += res.lost
		invented += res.invented
		if t.Failed() {
			t.Fatalf("round %d: %d lost, %d invented or altered (seed %d)", round, res.lost, res.invented, s)
		}
		if round%10 == 0 || round == *rounds {
			t.Logf("round %d: killed %v into the traffic; %d acked records verified", round, killAfter, res.checked)
		}
	}
	v.Stop(t)
	t.Logf("crash soak: %d rounds, %d acks received, %d ack checks, %d lost, %d invented or altered, %v",
		*rounds, l.ackCount(), checked, lost, invented, time.Since(start).Round(time.Millisecond))
}

// verified is what one verification found.
type verified struct {
	checked  int // acked records looked up
	lost     int // acked records missing or holding something else
	invented int // stored records never sent, sent elsewhere, altered or stored twice
}

func (l *ledger) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// publish sends acked appends, window at a time, until ctx ends. Each
// message carries a unique id; its headers and data are random.
func publish(ctx context.Context, t *testing.T, nc *nats.Conn, l *ledger, round, p int, rng *rand.Rand) {
	inbox := nc.NewRespInbox()
	type pending struct{ id, subject string }
	var mu sync.Mutex
	inFlight := map[string]pending{}
	tokens := make(chan struct{}, window)
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		mu.Lock()
		pend, ok := inFlight[m.Subject]
		delete(inFlight, m.Subject)
		mu.Unlock()
		if !ok {
			return
		}
		defer func() { <-tokens }()
		if m.Header.Get("Status") == "503" {
			return // no responders: voik was down
		}
		ack, err := client.DecodeAckReply(m.Data)
		var apiErr *messages.Error
		if errors.As(err, &apiErr) {
			return // an error ack promises nothing
		}
		if err != nil {
			t.Errorf("ack of %s: %v", pend.id, err)
			return
		}
		if ack.Subject != pend.subject {
			t.Errorf("ack of %s names subject %q, sent to %q", pend.id, ack.Subject, pend.subject)
			return
		}
		l.recordAck(pend.subject, acked{id: pend.id, offset: ack.Offset, ts: ack.Timestamp})
	})
	if err != nil {
		t.Errorf("subscribe: %v", err)
		return
	}
	defer sub.Unsubscribe()
	for seq := 0; ; seq++ {
		select {
		case tokens <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if ctx.Err() != nil {
			return
		}
		id := fmt.Sprintf("r%d-p%d-%d", round, p, seq)
		subject := subjects[rng.IntN(len(subjects))]
		m := nats.NewMsg(subject)
		m.Reply = fmt.Sprintf("%s.%d", inbox, seq)
		m.Header[messages.HeaderAck] = []string{"1"}
		m.Header[headerID] = []string{id}
		if rng.IntN(2) == 0 {
			m.Header["Crash-Multi"] = []string{fmt.Sprint(rng.Uint32()), "", "second value"}
		}
		m.Data = make([]byte, rng.IntN(600))
		for i := range m.Data {
			m.Data[i] = byte(rng.Uint32())
		}
		l.recordSent(id, sent{subject: subject, headers: cloneHeader(m.Header), data: m.Data})
		mu.Lock()
		inFlight[m.Reply] = pending{id: id, subject: subject}
		mu.Unlock()
		if err := nc.PublishMsg(m); err != nil {
			mu.Lock()
			delete(inFlight, m.Reply)
			mu.Unlock()
			<-tokens
		}
	}
}

func cloneHeader(h nats.Header) nats.Header {
	c := nats.Header{}
	for k, v := range h {
		c[k] = slices.Clone(v)
	}
	return c
}

// verify reads every subject's whole log and checks it against the
// ledger.
func verify(t *testing.T, api *client.Client, l *ledger) (res verified) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	// The first problems say what went wrong; thousands more say nothing.
	problems := 0
	errorf := func(format string, args ...any) {
		t.Helper()
		if problems++; problems <= 20 {
			t.Errorf(format, args...)
		} else if problems == 21 {
			t.Error("more problems follow; not shown")
		}
	}
	for _, subject := range subjects {
		stored := map[uint64]string{}    // offset -> id
		timestamps := map[uint64]int64{} // offset -> ts
		seen := map[string]bool{}
		offset := uint64(0)
		for {
			reply, err := api.Fetch(ctx, subject, messages.FetchRequest{Offset: &offset, MaxMessages: messages.MaxMessagesCap})
			if err != nil {
				if len(l.acked[subject]) == 0 && offset == 0 {
					break // never acked, maybe never stored: 404 is fine
				}
				errorf("fetch %s at %d: %v", subject, offset, err)
				return res
			}
			if reply.FirstOffset != 0 {
				errorf("%s: first_offset %d without retention", subject, reply.FirstOffset)
			}
			for _, r := range reply.Records {
				if r.Offset != offset {
					errorf("%s: record at %d has offset %d: offsets not contiguous", subject, offset, r.Offset)
					res.invented++
					return res
				}
				offset++
				ids := r.Headers[headerID]
				if len(ids) != 1 {
					errorf("%s@%d: invented record: headers %v", subject, r.Offset, r.Headers)
					res.invented++
					continue
				}
				id := ids[0]
				want, ok := l.sent[id]
				good := false
				switch {
				case !ok:
					errorf("%s@%d: invented record: id %q was never sent", subject, r.Offset, id)
				case seen[id]:
					errorf("%s@%d: record %s stored twice", subject, r.Offset, id)
				case want.subject != subject:
					errorf("%s@%d: record %s was sent to %s", subject, r.Offset, id, want.subject)
				case !bytes.Equal(want.data, r.Data) || !sameHeaders(want.headers, r.Headers):
					errorf("%s@%d: record %s differs from what was sent: headers %v, %d bytes; sent %v, %d bytes",
						subject, r.Offset, id, r.Headers, len(r.Data), want.headers, len(want.data))
				default:
					good = true
				}
				if !good {
					res.invented++
				}
				seen[id] = true
				stored[r.Offset] = id
				timestamps[r.Offset] = r.Timestamp
			}
			if reply.NextOffset >= reply.EndOffset {
				if offset != reply.EndOffset {
					errorf("%s: read to %d, end_offset %d", subject, offset, reply.EndOffset)
				}
				break
			}
		}
		for _, a := range l.acked[subject] {
			res.checked++
			if got, ok := stored[a.offset]; !ok {
				res.lost++
				errorf("LOST: %s acked at offset %d (%s) is not stored (end %d)", subject, a.offset, a.id, offset)
			} else if got != a.id {
				res.lost++
				errorf("LOST: %s offset %d was acked for %s but holds %s", subject, a.offset, a.id, got)
			} else if ts := timestamps[a.offset]; ts != a.ts {
				res.lost++
				errorf("%s offset %d was acked with timestamp %d but holds %d", subject, a.offset, a.ts, ts)
			}
		}
	}
	return res
}

// sameHeaders compares headers as stored (names and value order exact).
func sameHeaders(want nats.Header, got map[string][]string) bool {
	if len(got) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(map[string][]string(want), got)
}
