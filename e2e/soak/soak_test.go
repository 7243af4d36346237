// Package soak runs voik, a child process with retention on and small
// segments, under a mixed load for a long time — capture on many subjects,
// acked appends, paging FETCH, long polls that follow the newest records,
// REPLAY — and watches its process: resident memory, open files and
// memory mappings must level off, not grow with time or with data written.
//
//	go test ./e2e/soak                          # 5 seconds, part of go test ./...
//	go test ./e2e/soak -v -soak.duration=10m    # make soak
package soak

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

var (
	duration  = flag.Duration("soak.duration", 5*time.Second, "how long TestSoak runs")
	rate      = flag.Int("soak.rate", 10000, "captured messages per second, all publishers together")
	size      = flag.Int("soak.size", 512, "message data bytes")
	nSubjects = flag.Int("soak.subjects", 24, "hot subjects: most of the traffic, all of the reads")
	nCold     = flag.Int("soak.cold", 200, "cold subjects, written now and then, so that logs are evicted and reopened")
	coldRate  = flag.Int("soak.cold.rate", 20, "messages per second to cold subjects")
	interval  = flag.Duration("soak.sample", 0, "sampling period (default: duration/40, at least 1s)")
)

// Retention and layout of the voik under soak: each subject keeps about
// retainBytes, in segments of segmentBytes; at most maxOpenLogs logs open.
const (
	segmentBytes = 128 << 10
	retainBytes  = 1 << 20
	retainAge    = 2 * time.Minute
	maxOpenLogs  = 32 // more than the hot subjects, fewer than all
)

// counters are what the workers did, read by the sampler.
type counters struct {
	published, acked, fetched, polled, replayed, errors atomic.Int64
	appendsUnanswered                                   atomic.Int64 // may or may not be stored
	firstErr                                            atomic.Value // string: the first request error
}

// failed counts a request error the contract does not allow for.
func (c *counters) failed(what string, err error) {
	c.errors.Add(1)
	c.firstErr.CompareAndSwap(nil, what+": "+err.Error())
}

// sample is one look at voik.
type sample struct {
	at    time.Duration
	usage harness.ProcUsage
	disk  int64
	c     [6]int64 // counters, in the order of the struct
}

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs voik under load for -soak.duration")
	}
	every := *interval
	if every <= 0 {
		every = max(time.Second, *duration/40)
	}
	bin := harness.BuildVoik(t)
	ns := harness.StartNATS(t)
	cfg := harness.TestConfig(t, ns.ClientURL())
	cfg.Subjects = "soak.>"
	cfg.SegmentSize = segmentBytes
	cfg.RetentionMaxBytes = retainBytes
	cfg.RetentionMaxAge = retainAge
	cfg.MaxOpenLogs = maxOpenLogs
	cfg.LogLevel = "warn"
	v := harness.StartVoikProcess(t, bin, cfg)

	subjects := make([]string, *nSubjects)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("soak.s%03d", i)
	}
	var c counters
	ctx, stop := context.WithTimeout(context.Background(), *duration)
	defer stop()
	var wg sync.WaitGroup
	run := func(name string, fn func(ctx context.Context, nc *nats.Conn, rng *rand.Rand)) {
		nc := harness.Connect(t, ns.ClientURL(), nats.Name("soak-"+name))
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(name))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx, nc, rng)
		}()
	}
	payload := make([]byte, *size)
	for i := range payload {
		payload[i] = byte(i)
	}
	for p := range 2 {
		run(fmt.Sprintf("publisher-%d", p), func(ctx context.Context, nc *nats.Conn, rng *rand.Rand) {
			publish(ctx, nc, rng, subjects, payload, *rate/2, &c)
		})
	}
	cold := make([]string, *nCold)
	for i := range cold {
		cold[i] = fmt.Sprintf("soak.cold.c%03d", i)
	}
	if len(cold) > 0 {
		run("cold-publisher", func(ctx context.Context, nc *nats.Conn, rng *rand.Rand) {
			publish(ctx, nc, rng, cold, payload, *coldRate, &c)
		})
	}
	run("appender", func(ctx context.Context, nc *nats.Conn, rng *rand.Rand) {
		appendAcked(ctx, client.New(nc, cfg.APIPrefix), rng, subjects, payload, &c)
	})
	for f := range 2 {
		run(fmt.Sprintf("fetcher-%d", f), func(ctx context.Context, nc *nats.Conn, rng *rand.Rand) {
			fetchPages(ctx, client.New(nc, cfg.APIPrefix), rng, subjects, &c)
		})
	}
	for p := range 4 {
		run(fmt.Sprintf("poller-%d", p), func(ctx context.Context, nc *nats.Conn, rng *rand.Rand) {
			longPoll(ctx, client.New(nc, cfg.APIPrefix), subjects[p*len(subjects)/4], &c)
		})
	}
	run("replayer", func(ctx context.Context, nc *nats.Conn, rng *rand.Rand) {
		replay(ctx, client.New(nc, cfg.APIPrefix), rng, subjects, &c)
	})

	start := time.Now()
	var samples []sample
	t.Logf("%8s %9s %8s %9s %9s %9s %7s %8s %8s %8s %5s %5s %8s", "time", "capture/s", "acked/s", "fetched/s", "polled/s", "replay/s", "errors", "RSS", "anon", "peak", "fds", "maps", "disk")
	tick := time.NewTicker(every)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
		case <-ctx.Done():
			done = true
		}
		u, err := v.Usage()
		if err != nil {
			t.Fatalf("voik usage: %v", err)
		}
		s := sample{at: time.Since(start), usage: u, disk: diskBytes(cfg.DataDir),
			c: [6]int64{c.published.Load(), c.acked.Load(), c.fetched.Load(), c.polled.Load(), c.replayed.Load(), c.errors.Load()}}
		prev := sample{}
		if len(samples) > 0 {
			prev = samples[len(samples)-1]
		}
		secs := (s.at - prev.at).Seconds()
		per := func(i int) float64 { return float64(s.c[i]-prev.c[i]) / secs }
		t.Logf("%8s %9.0f %8.0f %9.0f %9.0f %9.0f %7d %8s %8s %8s %5d %5d %8s", s.at.Round(time.Second), per(0), per(1), per(2), per(3), per(4), s.c[5],
			mib(u.RSS), mib(u.AnonRSS), mib(u.PeakRSS), u.OpenFDs, u.Mappings, mib(s.disk))
		samples = append(samples, s)
	}
	wg.Wait()
	if n := c.errors.Load(); n > 0 {
		t.Errorf("%d requests failed; the first: %s", n, c.firstErr.Load())
	}
	if c.published.Load() == 0 || c.fetched.Load() == 0 || c.polled.Load() == 0 || c.replayed.Load() == 0 {
		t.Errorf("a worker did nothing: published %d, fetched %d, polled %d, replayed %d", c.published.Load(), c.fetched.Load(), c.polled.Load(), c.replayed.Load())
	}

	// Capture lost nothing: every message published (plain and acked) is
	// counted in the subjects' end offsets, retention or not.
	var end uint64
	want := uint64(c.published.Load() + c.acked.Load())
	harness.Eventually(t, 30*time.Second, "voik to store every published message (capture lost some)", func() bool {
		end = 0
		for _, subject := range append(subjects, cold...) {
			if info, err := v.Client.Info(context.Background(), subject); err == nil {
				end += info.EndOffset
			}
		}
		return end >= want
	})
	if unanswered := uint64(c.appendsUnanswered.Load()); end > want+unanswered {
		t.Errorf("voik stored %d messages; %d were published (%d appends unanswered)", end, want, unanswered)
	}
	checkBounded(t, samples)
	last := samples[len(samples)-1]
	t.Logf("soak: %v, %d captured, %d acked, %d fetched, %d long-polled, %d replayed, %d request errors; final RSS %s (anon %s), %d fds, %d maps, %s on disk",
		last.at.Round(time.Second), last.c[0], last.c[1], last.c[2], last.c[3], last.c[4], last.c[5], mib(last.usage.RSS), mib(last.usage.AnonRSS), last.usage.OpenFDs, last.usage.Mappings, mib(last.disk))
	v.Stop(t)
}

// checkBounded fails when a resource grows without bound: after a warm-up
// (the first fifth), the later half of the samples may not exceed the
// earlier half by more than a quarter plus some slack. A leak of one file
// or mapping per segment, or of memory per record, crosses that within
// minutes. Runs shorter than a minute only report.
func checkBounded(t *testing.T, samples []sample) {
	t.Helper()
	warm := samples[len(samples)/5:]
	if len(warm) < 4 || samples[len(samples)-1].at < time.Minute {
		t.Logf("run too short to judge growth (%d samples)", len(samples))
		return
	}
	half := len(warm) / 2
	for _, m := range []struct {
		name  string
		value func(harness.ProcUsage) int64
		slack int64
		unit  string
	}{
		{"anonymous RSS", func(u harness.ProcUsage) int64 { return u.AnonRSS }, 32 << 20, "bytes"},
		{"RSS", func(u harness.ProcUsage) int64 { return u.RSS }, 64 << 20, "bytes"},
		{"open files", func(u harness.ProcUsage) int64 { return int64(u.OpenFDs) }, 16, "files"},
		{"mappings", func(u harness.ProcUsage) int64 { return int64(u.Mappings) }, 32, "mappings"},
	} {
		var early, late int64
		for i, s := range warm {
			if i < half {
				early = max(early, m.value(s.usage))
			} else {
				late = max(late, m.value(s.usage))
			}
		}
		if limit := early + early/4 + m.slack; late > limit {
			t.Errorf("%s grows: at most %d %s in the first half after warm-up, %d in the second (limit %d)", m.name, early, m.unit, late, limit)
		} else {
			t.Logf("%s bounded: %d then %d %s", m.name, early, late, m.unit)
		}
	}
}

// publish sends plain messages to random subjects at perSecond.
func publish(ctx context.Context, nc *nats.Conn, rng *rand.Rand, subjects []string, payload []byte, perSecond int, c *counters) {
	batch := min(100, max(perSecond/10, 1))
	pause := time.Duration(float64(time.Second) * float64(batch) / float64(max(perSecond, 1)))
	next := time.Now()
	for ctx.Err() == nil {
		for range batch {
			if nc.Publish(subjects[rng.IntN(len(subjects))], payload) == nil {
				c.published.Add(1)
			}
		}
		next = next.Add(pause)
		time.Sleep(time.Until(next))
	}
	nc.Flush()
}

// appendAcked sends acked appends one at a time.
func appendAcked(ctx context.Context, api *client.Client, rng *rand.Rand, subjects []string, payload []byte, c *counters) {
	for ctx.Err() == nil {
		if _, err := api.Append(ctx, subjects[rng.IntN(len(subjects))], nats.Header{"Soak": {"1"}}, payload); err != nil {
			c.appendsUnanswered.Add(1)
			if ctx.Err() == nil {
				c.failed("acked append", err)
			}
			continue
		}
		c.acked.Add(1)
		time.Sleep(time.Millisecond)
	}
}

// fetchPages reads a random subject from its first offset, a few pages.
func fetchPages(ctx context.Context, api *client.Client, rng *rand.Rand, subjects []string, c *counters) {
	for ctx.Err() == nil {
		subject := subjects[rng.IntN(len(subjects))]
		var offset *uint64 // first_offset
		for range 4 {
			reply, err := api.Fetch(ctx, subject, messages.FetchRequest{Offset: offset, MaxMessages: 1000})
			if err != nil {
				if ctx.Err() == nil && !isOutOfRange(err) && !isNotFound(err) {
					c.failed("fetch", err)
				}
				break
			}
			c.fetched.Add(int64(len(reply.Records)))
			next := reply.NextOffset
			offset = &next
			if next >= reply.EndOffset {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// longPoll follows one subject's newest records with wait_ms, as a tail
// would; when retention overtakes it, it starts again at first_offset.
func longPoll(ctx context.Context, api *client.Client, subject string, c *counters) {
	var offset *uint64
	for ctx.Err() == nil {
		reply, err := api.Fetch(ctx, subject, messages.FetchRequest{Offset: offset, MaxMessages: 500, WaitMs: 1000})
		if err != nil {
			switch {
			case isOutOfRange(err):
				offset = nil
			case isNotFound(err):
				time.Sleep(50 * time.Millisecond)
			case ctx.Err() == nil:
				c.failed("long poll", err)
			}
			continue
		}
		c.polled.Add(int64(len(reply.Records)))
		next := reply.NextOffset
		offset = &next
	}
}

// replay replays up to 2000 records of a random subject, now and then.
func replay(ctx context.Context, api *client.Client, rng *rand.Rand, subjects []string, c *counters) {
	for ctx.Err() == nil {
		subject := subjects[rng.IntN(len(subjects))]
		_, err := api.Replay(ctx, subject, messages.ReplayRequest{MaxMessages: 2000}, func(client.ReplayedRecord) error {
			c.replayed.Add(1)
			return nil
		})
		// Retention may delete the next segment under a replay: it then
		// ends early with 503, as the contract says.
		if err != nil && ctx.Err() == nil && !isNotFound(err) && !isOutOfRange(err) && !errors.Is(err, client.ErrReplayInterrupted) {
			c.failed("replay", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func isOutOfRange(err error) bool { return hasCode(err, messages.CodeOutOfRange) }
func isNotFound(err error) bool   { return hasCode(err, messages.CodeNotFound) }

func hasCode(err error, code int) bool {
	var e *messages.Error
	return errors.As(err, &e) && e.Code == code
}

func diskBytes(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
