package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// publishBurst publishes n plain messages as fast as the connection takes
// them, then flushes. TCP is the only backpressure, as for any publisher.
func publishBurst(e *Env, nc *nats.Conn, subject string, payload []byte, n int) {
	for i := 0; i < n; i++ {
		if err := nc.Publish(subject, payload); err != nil {
			e.Fatalf("publish %d of %d: %v", i, n, err)
		}
	}
	if err := nc.FlushTimeout(time.Minute); err != nil {
		e.Fatalf("flush after publishing: %v", err)
	}
}

// waitCount polls count until it reaches target, or until it made no
// progress for stall. It returns the last count and when it reached it.
func waitCount(count func() int, target int, stall time.Duration, interval time.Duration) (int, time.Time) {
	last, lastChange := -1, time.Now()
	for {
		n := count()
		now := time.Now()
		if n >= target {
			return n, now
		}
		if n != last {
			last, lastChange = n, now
		} else if now.Sub(lastChange) > stall {
			return n, lastChange
		}
		time.Sleep(interval)
	}
}

// watch prints done()/total every two seconds until the returned stop is
// called.
func watch(w io.Writer, what string, total int, done func() int) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				n := done()
				fmt.Fprintf(w, "    %s: %d/%d (%.0f/s)\n", what, n, total, float64(n)/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// ackedLoad publishes messages that ask for an acknowledgement and keeps
// window of them in flight: the same machinery for voik (header Voik-Ack)
// and JetStream (a publish with a reply subject to a stream's subject),
// so that both are timed the same way, from Publish to the ack's arrival.
type ackedLoad struct {
	nc      *nats.Conn
	subject string
	header  nats.Header
	payload []byte
	n       int
	window  int
	stall   time.Duration
	// check decodes an ack and returns the position it names (offset or
	// sequence, from 0); an error counts the message as not acked. Each
	// position in [first, first+n) must come back once: the store gave
	// each message its own place and invented none. Acks may arrive in any
	// order. first is what the store held before (an earlier run's
	// messages).
	check func(i int, reply []byte) (uint64, error)
	first uint64
}

type ackedResult struct {
	acked     int
	failed    int
	firstErr  string
	elapsed   time.Duration
	latencies []time.Duration
	// longestGap is the longest wait for any ack.
	longestGap time.Duration
}

func (l ackedLoad) run(e *Env, progress io.Writer, what string) ackedResult {
	inbox := l.nc.NewRespInbox()
	sent := make([]atomic.Int64, l.n) // send time, Unix ns
	got := make([]atomic.Int64, l.n)  // ack time
	seen := make([]atomic.Bool, l.n)  // positions acked
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	tokens := make(chan struct{}, l.window)
	sub, err := l.nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		now := time.Now().UnixNano()
		i, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
		if err != nil || i < 0 || i >= l.n || !got[i].CompareAndSwap(0, now) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Sprintf("unexpected ack on %s", m.Subject))
			return
		}
		if pos, err := l.check(i, m.Data); err == nil && (pos < l.first || pos-l.first >= uint64(l.n) || !seen[pos-l.first].CompareAndSwap(false, true)) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Sprintf("ack %d: position %d is out of range or acked twice", i, pos))
		} else if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
		} else {
			acked.Add(1)
		}
		<-tokens // failed or not, it is no longer in flight
	})
	if err != nil {
		e.Fatalf("subscribe acks: %v", err)
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)
	if err := l.nc.Flush(); err != nil {
		e.Fatalf("flush: %v", err)
	}
	stop := watch(progress, what, l.n, func() int { return int(acked.Load() + failed.Load()) })
	start := time.Now()
	var stalled bool
	for i := 0; i < l.n && !stalled; i++ {
		select {
		case tokens <- struct{}{}:
		case <-time.After(l.stall):
			stalled = true
			continue
		}
		msg := &nats.Msg{Subject: l.subject, Reply: inbox + "." + strconv.Itoa(i), Header: l.header, Data: l.payload}
		sent[i].Store(time.Now().UnixNano())
		if err := l.nc.PublishMsg(msg); err != nil {
			stop()
			e.Fatalf("publish %d: %v", i, err)
		}
	}
	l.nc.Flush()
	waitCount(func() int { return int(acked.Load() + failed.Load()) }, l.n, l.stall, time.Millisecond)
	elapsed := time.Since(start)
	stop()
	sub.Unsubscribe()
	r := ackedResult{acked: int(acked.Load()), failed: int(failed.Load()), elapsed: elapsed}
	if v := firstErr.Load(); v != nil {
		r.firstErr = v.(string)
	}
	// The run ends at the last ack, not at the end of the stall wait.
	var last int64
	for i := range got {
		g := got[i].Load()
		if g == 0 {
			continue
		}
		last = max(last, g)
		r.latencies = append(r.latencies, time.Duration(g-sent[i].Load()))
	}
	if last > 0 {
		r.elapsed = time.Duration(last - start.UnixNano())
	}
	r.longestGap = longestGap(got, start)
	return r
}

// longestGap is the longest time in a run with no ack coming back, from
// the start to the last ack: a stall of the store shows here even where
// it is too short or too rare to move the p99.
func longestGap(got []atomic.Int64, start time.Time) (gap time.Duration) {
	times := make([]int64, 0, len(got))
	for i := range got {
		if g := got[i].Load(); g != 0 {
			times = append(times, g)
		}
	}
	slices.Sort(times)
	prev := start.UnixNano()
	for _, t := range times {
		gap = max(gap, time.Duration(t-prev))
		prev = t
	}
	return gap
}

// widen returns load again with the wide window and n messages, placed
// after load's own; ok is false when the run has no wide window.
func (s *sizeRun) widen(load ackedLoad, n int) (wide ackedLoad, ok bool) {
	if s.opts.WideWindow <= 0 {
		return load, false
	}
	wide = load
	wide.window, wide.n, wide.first = s.opts.WideWindow, n, load.first+uint64(load.n)
	return wide, true
}

func (r ackedResult) figure(size int, scenario string, n int, note string) Figure {
	f := Figure{Size: size, Scenario: scenario, Messages: n, Done: r.acked, Note: note}
	f.throughput(r.elapsed)
	f.latencies(r.latencies)
	if r.firstErr != "" {
		f.Err = fmt.Sprintf("%d failed, first: %s", r.failed, r.firstErr)
	}
	return f
}

// ceiling: what a subscriber that does nothing but count receives of a
// burst; no consumer of core NATS can capture faster on this machine. The
// subscriber runs as a child process, as voik does; the same subscriber in
// the NATS server's own process is measured too, for reference.
func (s *sizeRun) ceiling(e *Env) {
	ns := harness.StartNATS(e)
	pub := harness.Connect(e, ns.ClientURL())

	counter := startCounter(e, ns.ClientURL(), "bench.ceiling", s.messages, s.opts.Stall)
	cpu := counter.cpu()
	start := time.Now()
	publishBurst(e, pub, "bench.ceiling", s.payload, s.messages)
	got, at := counter.result(e)
	f := Figure{Size: s.size, Scenario: ScenarioCeiling, Messages: s.messages, Done: got, Note: "child process, like voik"}
	f.throughput(at.Sub(start))
	f.CPUus = perMillion(counter.cpu()-cpu, got)
	s.add(f)

	subConn := harness.Connect(e, ns.ClientURL())
	var count atomic.Int64
	var lastAt atomic.Int64
	n := int64(s.messages)
	sub, err := subConn.Subscribe("bench.ceiling.inprocess", func(*nats.Msg) {
		if count.Add(1) == n {
			lastAt.Store(time.Now().UnixNano())
		}
	})
	if err != nil {
		e.Fatalf("subscribe: %v", err)
	}
	sub.SetPendingLimits(-1, -1)
	subConn.Flush()
	done := func() int { return int(count.Load()) }
	stop := watch(s.opts.Progress, "ceiling in-process", s.messages, done)
	start = time.Now()
	publishBurst(e, pub, "bench.ceiling.inprocess", s.payload, s.messages)
	got, at = waitCount(done, s.messages, s.opts.Stall, time.Millisecond)
	stop()
	if got == s.messages {
		at = time.Unix(0, lastAt.Load())
	}
	f = Figure{Size: s.size, Scenario: ScenarioCeilingInProcess, Messages: s.messages, Done: got, Note: "in the NATS server's process"}
	f.throughput(at.Sub(start))
	s.add(f)

	// What voik's acked appends and FETCH could reach if storing cost
	// nothing: a child that acks at once, and one that serves pages built
	// in memory, driven exactly as voik is.
	acker := startResponder(e, fmt.Sprintf("ack %s %s", ns.ClientURL(), ackSubject))
	cpu = acker.cpu()
	load := ackedLoad{
		nc: pub, subject: ackSubject, payload: s.payload, n: s.appends, window: s.opts.Window, stall: s.opts.Stall,
		header: nats.Header{messages.HeaderAck: {"1"}}, check: voikAckCheck,
	}
	r := load.run(e, s.opts.Progress, "ceiling ack responder")
	f = r.figure(s.size, ScenarioCeilingAck, s.appends, fmt.Sprintf("child acking at once, window %d", s.opts.Window))
	f.CPUus = perMillion(acker.cpu()-cpu, f.Done)
	s.add(f)
	if wide, ok := s.widen(load, s.appends); ok {
		cpu = acker.cpu()
		r = wide.run(e, s.opts.Progress, "ceiling ack responder, wide")
		f = r.figure(s.size, ScenarioCeilingAckWide, s.appends, fmt.Sprintf("child acking at once, window %d", wide.window))
		f.CPUus = perMillion(acker.cpu()-cpu, f.Done)
		s.add(f)
	}

	const prefix = "BENCH.API"
	pager := startResponder(e, fmt.Sprintf("fetch %s %s %s %d %d", ns.ClientURL(), prefix, captureSubject, s.size, s.messages))
	api := client.New(pub, prefix)
	cpu = pager.cpu()
	f = s.readHistory(api, s.messages, ScenarioCeilingFetch)
	f.Note += ", child serving pages from memory"
	f.CPUus = perMillion(pager.cpu()-cpu, f.Done)
	s.add(f)
	f = s.fetchOne(api, s.messages, ScenarioCeilingFetchOne)
	f.Note += ", from memory"
	s.add(f)
}
