package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
	"github.com/voik/voik/sidecar"
)

func TestAFirstAPIReplyMeansWhatIsPublishedAfterItIsCaptured(t *testing.T) {
	t.Parallel()
	ns := harness.StartNATS(t)
	nc := harness.Connect(t, ns.ClientURL())
	// Ask until voik answers, from before it starts; publish right after
	// the first answer.
	firstReply := make(chan struct{})
	go func() {
		defer close(firstReply)
		for {
			// Capture's '>' subscribes before the API does: a request in
			// between meets interest but no answer, and times out.
			if _, err := nc.Request("VOIK.API.SUBJECTS", nil, 500*time.Millisecond); err == nil {
				nc.Publish("early.bird", []byte("published after the first reply"))
				return
			}
		}
	}()
	v := harness.StartVoik(t, harness.TestConfig(t, ns.ClientURL()))
	waitUntil(t, firstReply, 30*time.Second, "a first API reply")
	harness.Eventually(t, 10*time.Second, "early.bird to be stored", func() bool {
		info, err := v.Client.Info(context.Background(), "early.bird")
		return err == nil && info.Messages == 1
	})
}

// logWatcher is a slog handler that reports each message on a channel.
type logWatcher struct{ messages chan string }

func (w logWatcher) Enabled(context.Context, slog.Level) bool { return true }
func (w logWatcher) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w logWatcher) WithGroup(string) slog.Handler            { return w }
func (w logWatcher) Handle(_ context.Context, r slog.Record) error {
	select {
	case w.messages <- r.Message:
	default: // nobody listening: drop
	}
	return nil
}

func TestVoikStartedBeforeNATSRetriesAndCapturesOnceNATSIsUp(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := harness.TestConfig(t, "nats://127.0.0.1:"+strconv.Itoa(port))
	watcher := logWatcher{messages: make(chan string, 64)}
	s, err := sidecar.New(cfg, slog.New(watcher))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop := func() {
		if cancel != nil {
			cancel()
			cancel = nil
			if err := <-done; err != nil {
				t.Errorf("voik: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	// Each failure is logged; after one, NATS comes up.
	for msg := ""; !strings.Contains(msg, "cannot reach NATS"); {
		msg = waitUntil(t, watcher.messages, 30*time.Second, "a log line saying NATS cannot be reached")
	}
	select {
	case <-s.Started():
		t.Fatal("voik says it started with no NATS")
	default:
	}
	ns := harness.StartNATS(t, harness.WithOptions(func(o *server.Options) { o.Port = port }))
	waitUntil(t, s.Started(), 30*time.Second, "voik to start once NATS is up")
	api := client.New(harness.Connect(t, ns.ClientURL()), "")
	if ack, err := api.Append(context.Background(), "late.nats", nil, []byte("x")); err != nil || ack.Offset != 0 {
		t.Fatalf("append: %+v, %v", ack, err)
	}
	stop() // while NATS is still up
}

func TestHealthReadinessAndMetricsAreServedOverHTTP(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.appendAcked("metered", nil, []byte("x"))
	get := func(path string) (int, string) { t.Helper(); return httpGet(t, e, path) }
	if code, body := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "ready") {
		t.Fatalf("/readyz %d %q", code, body)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `voik_messages_stored_total{filter=">"} 1`) || !strings.Contains(body, `voik_acks_total{result="ok"} 1`) {
		t.Fatalf("/metrics %d:\n%s", code, body)
	}
	if code, _ := httpGet(t, e, "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ answered %d without VOIK_PPROF", code)
	}
}

// VOIK_PPROF=true serves Go's profiles beside /metrics, for an operator
// who must find where the CPU goes; they are off unless asked for.
func TestPprofIsServedOnlyWhenAskedFor(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *config.Config) { c.Pprof = true })
	code, body := httpGet(t, e, "/debug/pprof/")
	if code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ %d %q", code, body)
	}
	code, body = httpGet(t, e, "/debug/pprof/profile?seconds=1")
	// A CPU profile is gzipped protobuf.
	if code != 200 || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Fatalf("/debug/pprof/profile %d, %d bytes", code, len(body))
	}
}

func httpGet(t *testing.T, e *e2e, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + e.voik.Sidecar.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReplayIsPacedForALiveSubscriberWithDefaultLimits(t *testing.T) {
	t.Parallel()
	e := start(t)
	// 80 MB: more than a subscriber's default pending limit (64 MB).
	const n, size = 20_000, 4 << 10
	for i := 0; i < n; i++ {
		e.publish("replay.live", nil, make([]byte, size))
	}
	e.flush()
	e.waitForEnd("replay.live", n)
	// A subscriber on its own connection with nats.go's default limits.
	sc := harness.Connect(t, e.server.ClientURL())
	var received, slow atomic.Int64
	sc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if err == nats.ErrSlowConsumer {
			slow.Add(1)
		}
	})
	ended := make(chan string, 1)
	if _, err := sc.Subscribe("replay.live.out", func(msg *nats.Msg) {
		if status := msg.Header.Get(messages.HeaderStatus); status != "" {
			ended <- status
			return
		}
		received.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	sc.Flush()
	wantReplayReply(t, e.call("REPLAY.replay.live", map[string]any{"deliver": "replay.live.out"}), "replay.live", "replay.live.out", 0, n)
	status := waitUntil(t, ended, 60*time.Second, "the end of the replay")
	if status != messages.StatusEnd || received.Load() != n || slow.Load() != 0 {
		t.Fatalf("status %s, %d of %d received, %d slow-consumer errors", status, received.Load(), n, slow.Load())
	}
}

func TestWithoutANATSURLVoikRunsAnEmbeddedServerAndCapturesThere(t *testing.T) {
	t.Parallel()
	cfg := harness.TestConfig(t, "")
	cfg.EmbeddedPort = -1 // a free port; the default is 4222
	v := harness.StartVoik(t, cfg)
	url := v.Sidecar.NatsURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("embedded server at %q, want 127.0.0.1", url)
	}
	api := client.New(harness.Connect(t, url), "")
	ack, err := api.Append(context.Background(), "embedded.capture", nil, []byte("x"))
	if err != nil || ack.Offset != 0 {
		t.Fatalf("append through the embedded server: %+v, %v", ack, err)
	}
	if reply, err := api.Fetch(context.Background(), "embedded.capture", messages.FetchRequest{}); err != nil || len(reply.Records) != 1 {
		t.Fatalf("fetch: %+v, %v", reply, err)
	}
}

// TestShutdownWhileNATSIsAwayDoesNotWaitForIt: with the NATS server gone,
// SIGTERM finishes what was delivered and exits without waiting for a
// reconnect (each drain used to wait 10 s for a round trip); what was
// stored is there after a restart.
func TestShutdownWhileNATSIsAwayDoesNotWaitForIt(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.appendAcked("before.outage", nil, []byte("kept"))
	e.server.Shutdown()
	// Every connection of voik's has seen NATS go (readiness flips with
	// the first of them).
	harness.Eventually(t, 10*time.Second, "voik_nats_connected 0 for every role", func() bool {
		families := scrape(t, e.voik.Sidecar.HTTPAddr())
		for _, role := range []string{"capture", "api", "replay"} {
			if metricValue(t, families, "voik_nats_connected", "role", role) != 0 {
				return false
			}
		}
		return true
	})
	began := time.Now()
	e.voik.Stop(t)
	// A bound far above a clean exit (milliseconds) and far below the
	// reconnect waits it replaces (25 s in all).
	if took := time.Since(began); took > 8*time.Second {
		t.Fatalf("shutdown with NATS away took %v", took)
	}
	ns := harness.StartNATS(t)
	cfg := *e.voik.Config
	cfg.NatsURL = ns.ClientURL()
	v := harness.StartVoik(t, &cfg)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	reply, err := v.Client.Fetch(ctx, "before.outage", messages.FetchRequest{})
	if err != nil || len(reply.Records) != 1 || string(reply.Records[0].Data) != "kept" {
		t.Fatalf("after the restart: %+v, %v", reply, err)
	}
}
