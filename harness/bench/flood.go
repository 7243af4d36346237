package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// The read-flood part: reads must never cost capture. One voik captures
// the same burst twice, first with nothing reading, then while another
// connection floods it with FETCH requests, open loop, each for a whole
// page of a history subject. Under the flood the burst must still be
// stored whole, and voik's heap must stay within its reply budget plus a
// margin, however much the flood asks for.
const (
	floodHistorySubject = "bench.flood.history"
	floodQuietSubject   = "bench.flood.quiet" // phase A's burst
	floodBurstSubject   = "bench.flood.burst" // phase B's, a fresh log
	// floodRate is the flood's FETCH requests a second. Each asks for a
	// full page (offset 0, as many records as a page may hold, so that
	// max_payload bounds it): some 3 GB/s of pages asked for, far past any
	// reply budget, so voik has to refuse most of it.
	floodRate = 3000
	// floodHistoryBytes of records are stored before the flood: four full
	// pages at the 1 MiB max_payload of the benchmark's NATS servers
	// (4,096 records at 1 KiB), so every request can be answered in full.
	floodHistoryBytes = 4 << 20
	// The burst goes out once the flood is in full swing: voik has
	// answered this many of its requests, or a second's worth are out.
	floodSwingReplies = 1000
	// floodMemoryMargin is the anonymous memory allowed beyond the reply
	// budget: voik at rest (about 30 MiB) and capture's queue under the
	// burst, as sidecar's overload tests allow.
	floodMemoryMargin = 256 << 20
	// memorySampleEvery is how often voik's anonymous RSS is read for its
	// peak: often enough to see a burst of replies being built.
	memorySampleEvery = 20 * time.Millisecond
	// floodLongest only caps a flood nothing else stops; the part stops it
	// once the burst is stored (or storing has stalled).
	floodLongest = 10 * time.Minute
)

// flood runs the read-flood part at one size and records two figures
// (capture without and under the flood) and a FloodRun.
func (s *sizeRun) flood(e *Env) {
	ns := harness.StartNATS(e)
	v := s.startVoik(e, ns.ClientURL(), "bench.flood.>")
	pub := harness.Connect(e, ns.ClientURL())
	run := FloodRun{
		Size: s.size, Run: s.repeat, Messages: s.messages, Rate: floodRate,
		History:     (floodHistoryBytes + s.size - 1) / s.size,
		ReplyBudget: int64(v.cfg.ReplyBudget),
	}
	s.storeFloodHistory(e, v, pub, run.History)

	// Phase A: the burst with nothing reading, on the same voik with the
	// same history, so that the flood is the only difference.
	memory := v.watchAnonRSS(e)
	endPhase := s.phase("capture-no-flood")
	quiet := s.floodBurst(e, v, pub, floodQuietSubject, ScenarioVoikFloodQuiet)
	endPhase()
	run.NoFloodPeakAnonRSS = memory()
	quiet.Note = fmt.Sprintf("same voik, %d-record history, nothing reading", run.History)

	// Phase B: the same burst to a fresh subject under the flood.
	under := s.captureUnderFlood(e, ns.ClientURL(), v, pub, &run)

	s.recordFlood(v, &run, quiet, under)
	// A flood that got nothing back, or errors other than "overloaded",
	// did not test what the part is for.
	if run.Replies == 0 {
		e.Errorf("the read flood got no replies to %d requests", run.Sent)
	}
	if run.OtherErrors > 0 {
		e.Errorf("%d of the read flood's replies were errors other than 503", run.OtherErrors)
	}
}

// storeFloodHistory publishes the n records the flood's FETCHes ask for
// and waits until voik has stored them all: a flood of requests that
// could not be answered in full would not cost voik what it should.
func (s *sizeRun) storeFloodHistory(e *Env, v voikUnderTest, pub *nats.Conn, n int) {
	publishBurst(e, pub, floodHistorySubject, s.payload, n)
	if got, _ := waitCount(v.stored(s.ctx, floodHistorySubject), n, s.opts.Stall, 2*time.Millisecond); got != n {
		e.Fatalf("history for the flood: %d of %d records stored", got, n)
	}
}

// captureUnderFlood captures the burst to a fresh subject while another
// connection floods voik with FETCHes, once the flood is in full swing;
// it records the flood's counts and voik's peak memory in run and
// returns the capture's figure.
func (s *sizeRun) captureUnderFlood(e *Env, natsURL string, v voikUnderTest, pub *nats.Conn, run *FloodRun) Figure {
	flood := newReadFlood(e, v)
	// Another application's connection. Without a reconnect buffer a
	// flood that loses it fails, rather than queue requests and send them
	// later as a burst of its own.
	floodConn := harness.Connect(e, natsURL, nats.ReconnectBufSize(-1))
	memory := v.watchAnonRSS(e)
	start, stopFlood := startFlood(s.ctx, flood, floodConn)
	defer stopFlood() // a Fatal on the way must not leave it flooding
	if !waitUntil(func() bool { return flood.Replies() >= floodSwingReplies || flood.Sent() >= floodRate }, s.opts.Stall, 5*time.Millisecond) {
		e.Fatalf("the flood did not get going within %v: %d requests sent, %d replies", s.opts.Stall, flood.Sent(), flood.Replies())
	}
	endPhase := s.phase("capture-flood")
	under := s.floodBurst(e, v, pub, floodBurstSubject, ScenarioVoikFloodCapture)
	endPhase()
	r, err := stopFlood()
	run.FloodSeconds = time.Since(start).Seconds()
	run.FloodPeakAnonRSS = memory()
	if err != nil {
		e.Errorf("read flood: %v", err)
	}
	run.Sent, run.Replies, run.Overloaded, run.OtherErrors, run.ReplyBytes = r.Sent, r.Replies, r.Overloaded, r.OtherError, r.ReplyBytes
	under.Note = fmt.Sprintf("%d FETCH/s of full pages: %d sent, %d replies, %d were 503", floodRate, r.Sent, r.Replies, r.Overloaded)
	return under
}

// newReadFlood is the flood of the part: floodRate FETCHes a second, each
// for a whole page of the history subject, for at most floodLongest.
func newReadFlood(e *Env, v voikUnderTest) *harness.ReadFlood {
	body, err := msgpack.Marshal(map[string]any{"offset": 0, "max_messages": messages.MaxMessagesCap})
	if err != nil {
		e.Fatalf("flood request: %v", err)
	}
	return &harness.ReadFlood{
		Subject:  v.cfg.APIPrefix + ".FETCH." + floodHistorySubject,
		Body:     body,
		Rate:     floodRate,
		Duration: floodLongest,
	}
}

// startFlood runs flood on conn from start until stopFlood is called,
// which returns what the flood counted; stopFlood may be called again
// (as a deferred call after a Fatal would) and returns the same.
func startFlood(ctx context.Context, flood *harness.ReadFlood, conn *nats.Conn) (start time.Time, stopFlood func() (harness.FloodResult, error)) {
	floodCtx, cancel := context.WithCancel(ctx)
	type outcome struct {
		r   harness.FloodResult
		err error
	}
	done := make(chan outcome, 1)
	start = time.Now()
	go func() {
		r, err := flood.Run(floodCtx, conn, 0)
		done <- outcome{r, err}
	}()
	// Cancelling ends the flood at once: Run then counts the replies it
	// has had and waits for no more.
	stopFlood = sync.OnceValues(func() (harness.FloodResult, error) {
		cancel()
		out := <-done
		return out.r, out.err
	})
	return start, stopFlood
}

// recordFlood adds the two captures' figures and run, with their rates,
// to the report and shows run on the progress writer.
func (s *sizeRun) recordFlood(v voikUnderTest, run *FloodRun, quiet, under Figure) {
	run.NoFloodMsgPerS, run.NoFloodLost = quiet.MsgPerS, quiet.Lost
	run.FloodMsgPerS, run.FloodLost = under.MsgPerS, under.Lost
	if quiet.MsgPerS > 0 {
		run.Ratio = under.MsgPerS / quiet.MsgPerS
	}
	s.add(quiet)
	s.add(under)
	s.report.Floods = append(s.report.Floods, *run)
	line := fmt.Sprintf("  read flood: capture with/without %.2f; flood %d sent, %d replies, %d were 503, %s of replies", run.Ratio, run.Sent, run.Replies, run.Overloaded, mib(run.ReplyBytes))
	if v.proc != nil {
		line += fmt.Sprintf("; voik's peak anon RSS %s without, %s with (reply budget %s)", mib(run.NoFloodPeakAnonRSS), mib(run.FloodPeakAnonRSS), mib(run.ReplyBudget))
	}
	fmt.Fprintln(s.opts.Progress, line)
}

// floodBurst publishes the burst to subject and waits until voik has
// stored it, or until storing stalls: what is missing then is lost. The
// rate runs from the first publish to the last record stored.
func (s *sizeRun) floodBurst(e *Env, v voikUnderTest, pub *nats.Conn, subject, scenario string) Figure {
	stored := v.stored(s.ctx, subject)
	stop := watch(s.opts.Progress, scenario, s.messages, stored)
	defer stop()
	start := time.Now()
	publishBurst(e, pub, subject, s.payload, s.messages)
	got, at := waitCount(stored, s.messages, s.opts.Stall, 2*time.Millisecond)
	f := Figure{Size: s.size, Scenario: scenario, Messages: s.messages, Done: got}
	f.throughput(at.Sub(start))
	if got > s.messages {
		f.Err = fmt.Sprintf("%d records stored for %d published", got, s.messages)
	}
	return f
}

// stored returns a count of subject's records for waitCount and watch
// (which call it from two goroutines): INFO's end offset. An INFO that
// fails (404 before the first record, a timeout under load) counts as no
// progress, not as nothing stored.
func (v voikUnderTest) stored(ctx context.Context, subject string) func() int {
	var last atomic.Int64
	return func() int {
		if info, err := v.api.Info(ctx, subject); err == nil {
			n := int64(info.EndOffset)
			for old := last.Load(); n > old && !last.CompareAndSwap(old, n); old = last.Load() {
			}
		}
		return int(last.Load())
	}
}

// watchAnonRSS samples voik's anonymous resident memory (heap, stacks:
// what replies being built grow; mapped segments are the page cache's)
// every memorySampleEvery until finish is called, which returns the
// highest sample. The sampling also stops when e's scenario ends. In
// process there is nothing of voik's own to read: finish returns 0.
func (v voikUnderTest) watchAnonRSS(e *Env) (finish func() int64) {
	if v.proc == nil {
		return func() int64 { return 0 }
	}
	pid := v.proc.PID()
	stop, done := make(chan struct{}), make(chan struct{})
	var peak int64 // the goroutine's until done is closed
	go func() {
		defer close(done)
		tick := time.NewTicker(memorySampleEvery)
		defer tick.Stop()
		for {
			if u, err := harness.ReadProcUsage(pid); err == nil {
				peak = max(peak, u.AnonRSS)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	finish = sync.OnceValue(func() int64 {
		close(stop)
		<-done
		return peak
	})
	e.Cleanup(func() { finish() })
	return finish
}

// waitUntil polls cond every interval until it holds (true) or timeout
// has passed (false): for a condition with no event to wait on, such as
// a counter of the flood's.
func waitUntil(cond func() bool, timeout, interval time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}
