package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// Reads must never cost capture. These tests run voik as a child process
// (its memory is read from /proc) with the default reply budget, load it
// with readers as an adversary would, publish a capture burst meanwhile,
// and check that every message is stored, that another client is still
// answered promptly, and that voik's memory stays within the budget.

const (
	overloadBudget  = 256 << 20 // VOIK_REPLY_BUDGET's default
	overloadBurst   = 100_000   // messages of the capture burst
	overloadRecord  = 1024      // bytes each
	overloadHistory = 4_000     // records the flood reads: four full pages
	// Anonymous memory (heap, stacks) allowed beyond the budget: voik at
	// rest (about 30 MiB), and capture's queue under the burst (up to its
	// 100 MiB, with room for its garbage). The segment files' mapped pages
	// are the page cache's and are not counted.
	overloadMargin = 256 << 20
)

// overloadWorld is a NATS server, voik as a child, and a client.
type overloadWorld struct {
	t      *testing.T
	p      *harness.VoikProcess
	nc     *nats.Conn
	prefix string // the API prefix
}

// startOverload runs nats-server (with voik's user as docs/operations.md
// sets it when filters is ">") and voik capturing filters, each as a
// process of its own: an in-process server under the race detector would
// be the bottleneck of the load, not voik.
func startOverload(t *testing.T, bin, filters string) *overloadWorld {
	t.Helper()
	ns := harness.StartNATSProcess(t, filters == ">")
	cfg := harness.TestConfig(t, ns.URL)
	cfg.Subjects = filters
	if filters == ">" {
		cfg.NatsUser, cfg.NatsPassword = harness.VoikUser, harness.VoikPassword
	}
	w := &overloadWorld{t: t, p: harness.StartVoikProcess(t, bin, cfg), prefix: cfg.APIPrefix}
	w.nc = harness.Connect(t, ns.URL)
	if int64(cfg.ReplyBudget) != overloadBudget {
		t.Fatalf("test config's reply budget %d is not the default %d", cfg.ReplyBudget, overloadBudget)
	}
	return w
}

// publish sends n records of overloadRecord bytes to subject as fast as
// the client goes, then flushes.
func (w *overloadWorld) publish(subject string, n int) {
	w.t.Helper()
	data := make([]byte, overloadRecord)
	for i := range n {
		copy(data, fmt.Sprintf("%s %d ", subject, i))
		if err := w.nc.Publish(subject, data); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := w.nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
}

// endOffset asks INFO for subject's end offset (0 when it has no log).
func (w *overloadWorld) endOffset(api *client.Client, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := api.Info(ctx, subject)
	if isCode(err, 404) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return info.EndOffset, nil
}

// waitStored waits until subject holds want records, failing with how
// many it holds if they stop coming.
func (w *overloadWorld) waitStored(subject string, want uint64) {
	w.t.Helper()
	api := client.New(w.nc, w.prefix)
	var end uint64
	w.eventually(60*time.Second, fmt.Sprintf("%d records of %s stored", want, subject), func() bool {
		var err error
		end, err = w.endOffset(api, subject)
		return err == nil && end >= want
	})
	if end != want {
		w.t.Fatalf("%s holds %d records, want %d", subject, end, want)
	}
}

// eventually is harness.Eventually at a pace that leaves voik to its load:
// each look is a request to it (INFO, or a scrape of /metrics).
func (w *overloadWorld) eventually(timeout time.Duration, what string, cond func() bool) {
	w.t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			w.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// memoryWatch samples voik's anonymous resident memory every 20 ms and
// keeps the highest sample.
type memoryWatch struct {
	peak int64
	stop chan struct{}
	done chan struct{}
}

func (w *overloadWorld) watchMemory() *memoryWatch {
	m := &memoryWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if usage, err := w.p.Usage(); err == nil {
				m.peak = max(m.peak, usage.AnonRSS)
			}
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *memoryWatch) finish() int64 {
	close(m.stop)
	<-m.done
	return m.peak
}

// prober asks INFO of subject, FETCHes a page of it and makes an acked
// append to flood.acked, every 100 ms
// from a connection of its own until stopped, and keeps the slowest
// answer and every failure.
type prober struct {
	mu       sync.Mutex
	slowest  time.Duration
	answered int
	failures []string
	stop     chan struct{}
	done     chan struct{}
}

func (w *overloadWorld) startProber(url, subject string) *prober {
	nc := harness.Connect(w.t, url)
	api := client.New(nc, w.prefix)
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			// INFO, then a page of 100 records: the flood's share of the
			// budget leaves room for another reader's pages.
			start := time.Now()
			_, err := w.endOffset(api, subject)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				offset := uint64(0)
				var page *messages.FetchReply
				if page, err = api.Fetch(ctx, subject, messages.FetchRequest{Offset: &offset, MaxMessages: 100}); err == nil && len(page.Records) == 0 {
					err = fmt.Errorf("an empty page")
				}
				if err == nil {
					// An acknowledged append: capture's acks are not held
					// up by readers either.
					_, err = api.Append(ctx, "flood.acked", nil, []byte("probe"))
				}
				cancel()
			}
			took := time.Since(start)
			p.mu.Lock()
			p.answered++
			p.slowest = max(p.slowest, took)
			if err != nil {
				p.failures = append(p.failures, fmt.Sprintf("after %v: %v", took.Round(time.Millisecond), err))
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *prober) finish() (answered int, slowest time.Duration, failures []string) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answered, p.slowest, p.failures
}

// checkAfterLoad checks what every overload test promises: the burst all
// stored, nothing dropped or cut, the prober always answered within two
// seconds, and voik's peak RSS within the budget plus a margin.
func (w *overloadWorld) checkAfterLoad(p *prober, memory *memoryWatch) {
	w.t.Helper()
	w.waitStored("flood.burst", overloadBurst)
	answered, slowest, failures := p.finish()
	w.t.Logf("another client's INFO, FETCH and acked append: %d rounds, slowest %v", answered, slowest.Round(time.Millisecond))
	if len(failures) > 0 {
		w.t.Errorf("another client's INFO, FETCH or acked append failed %d times under the load, e.g. %s", len(failures), failures[0])
	}
	if slowest > 2*time.Second {
		w.t.Errorf("another client's INFO, FETCH and acked append took %v under the load, want at most 2s", slowest)
	}
	peak := memory.finish()
	usage, err := w.p.Usage()
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Logf("voik's anonymous memory: peak %d MiB (budget %d MiB), now %d MiB; peak RSS with mapped segments %d MiB",
		peak>>20, overloadBudget>>20, usage.AnonRSS>>20, usage.PeakRSS>>20)
	if peak > overloadBudget+overloadMargin {
		w.t.Errorf("voik's anonymous memory peaked at %d MiB, past the reply budget %d MiB plus %d MiB", peak>>20, overloadBudget>>20, overloadMargin>>20)
	}
	metrics := scrape(w.t, w.p.HTTPAddr)
	if dropped := metricValue(w.t, metrics, "voik_capture_dropped_total"); dropped != 0 {
		w.t.Errorf("capture dropped %v messages", dropped)
	}
	for _, series := range []string{"voik_nats_disconnects_total", "voik_nats_slow_consumer_total"} {
		if n := metricValue(w.t, metrics, series, "role", "capture"); n != 0 {
			w.t.Errorf("%s{role=capture} is %v", series, n)
		}
	}
}

// An open-loop FETCH flood (3,000 requests a second for 5 s, each asking
// for 10,000 records: about 15 GiB of pages asked for, far past the
// budget) while 100,000 messages are published to a captured subject.
func TestReadFloodCostsCaptureNothingAndVoikStaysWithinTheReplyBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs voik as a child under a read flood")
	}
	bin := harness.BuildVoik(t)
	for _, filters := range []string{"flood.>", ">"} {
		t.Run("filters "+filters, func(t *testing.T) {
			w := startOverload(t, bin, filters)
			w.publish("flood.history", overloadHistory)
			w.waitStored("flood.history", overloadHistory)

			flood := &harness.ReadFlood{
				Subject:  w.prefix + ".FETCH.flood.history",
				Body:     encode(t, map[string]any{"offset": 0, "max_messages": 10000}),
				Rate:     3000,
				Duration: 5 * time.Second,
			}
			probe := w.startProber(w.p.NatsURL, "flood.history")
			memory := w.watchMemory()
			running := harness.StartFlood(t, w.p.NatsURL, flood)
			// The burst goes out once the flood is in full swing: voik has
			// answered a thousand of its requests.
			w.eventually(10*time.Second, "the flood in full swing", func() bool { return running.Replies() >= 1000 })
			w.publish("flood.burst", overloadBurst)
			r, err := running.Wait()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("flood: %d requests sent (%d more not, its connection cut), %d replies (%d were 503), %d MiB of replies", r.Sent, r.Unsent, r.Replies, r.Overloaded, r.ReplyBytes>>20)
			if asked := int64(r.Sent) * int64(w.p.Conn.MaxPayload()); asked < 4*overloadBudget {
				t.Fatalf("the flood asked for %d MiB, less than four times the budget", asked>>20)
			}
			if r.Overloaded == 0 {
				t.Errorf("no request of the flood was refused: the budget did not bind")
			}
			w.checkAfterLoad(probe, memory)
			if filters != ">" {
				return // once is enough for what follows
			}
			// The pages go back once nobody reads: memory falls back.
			var anon int64
			w.eventually(30*time.Second, "voik's memory back under 160 MiB after the flood", func() bool {
				usage, err := w.p.Usage()
				anon = usage.AnonRSS
				return err == nil && anon < 160<<20
			})
			t.Logf("voik's anonymous memory after the flood: %d MiB", anon>>20)
		})
	}
}

// 5,000 long polls parked at the end of a subject, then the same burst;
// the polls are then woken by one record, and each gets it.
func TestFiveThousandLongPollsCostCaptureNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs voik as a child under 5,000 long polls")
	}
	bin := harness.BuildVoik(t)
	w := startOverload(t, bin, "flood.>")
	w.publish("flood.history", 1)
	w.waitStored("flood.history", 1)

	const polls = 5000
	pollConn := harness.Connect(t, w.p.NatsURL)
	inbox := newInboxCollector(t, pollConn, polls)
	body := encode(t, map[string]any{"offset": 1, "wait_ms": 60000})
	for i := range polls {
		if err := pollConn.PublishRequest(w.prefix+".FETCH.flood.history", inbox.replyTo(i), body); err != nil {
			t.Fatal(err)
		}
	}
	if err := pollConn.Flush(); err != nil {
		t.Fatal(err)
	}
	w.eventually(30*time.Second, "every long poll parked", func() bool {
		return metricValue(t, scrape(t, w.p.HTTPAddr), "voik_api_long_polls") == polls
	})
	probe := w.startProber(w.p.NatsURL, "flood.history")
	memory := w.watchMemory()
	w.publish("flood.burst", overloadBurst)
	w.checkAfterLoad(probe, memory)
	select {
	case msg := <-inbox.msgs:
		t.Fatalf("a parked long poll was answered before any record came: %v", decodeReply(t, msg.Data))
	default:
	}

	w.publish("flood.history", 1)
	for n := range polls {
		select {
		case msg := <-inbox.msgs:
			records := wantFetchReply(t, decodeReply(t, msg.Data), "flood.history", 2, 0, 2)
			if len(records) != 1 || fmt.Sprint(records[0]["offset"]) != "1" {
				t.Fatalf("a woken long poll got %d records, want the one at offset 1", len(records))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d long polls answered after the record that wakes them", n, polls)
		}
	}
}
