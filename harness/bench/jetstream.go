package bench

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/voik/voik/harness"
)

// jetstream runs the JetStream side at its default sync interval: capture
// of plain publishes into a file stream, reads of that history, and
// acknowledged publishes.
func (s *sizeRun) jetstream(e *Env) {
	ns := harness.StartNATS(e, harness.WithJetStream(e.TempDir()))
	nc := harness.Connect(e, ns.ClientURL())
	pub := harness.Connect(e, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		e.Fatalf("jetstream: %v", err)
	}
	stream, err := js.CreateStream(s.ctx, jetstream.StreamConfig{
		Name: "CAPTURE", Subjects: []string{captureSubject}, Storage: jetstream.FileStorage, AllowDirect: true,
	})
	if err != nil {
		e.Fatalf("create stream: %v", err)
	}

	// Capture: the same burst as voik's, until the stream holds it.
	stored := func() int {
		info, err := stream.Info(s.ctx)
		if err != nil {
			return 0
		}
		return int(info.State.Msgs)
	}
	stop := watch(s.opts.Progress, "JetStream capture", s.messages, stored)
	start := time.Now()
	publishBurst(e, pub, captureSubject, s.payload, s.messages)
	got, at := waitCount(stored, s.messages, s.opts.Stall, 2*time.Millisecond)
	stop()
	f := Figure{Size: s.size, Scenario: ScenarioJSCapture, Messages: s.messages, Done: got, Note: "file storage, plain publishes"}
	f.throughput(at.Sub(start))
	s.add(f)
	history := got

	// Every way nats.go offers to read a stream's history, one after the
	// other over the same stream: the report states voik's FETCH against
	// the fastest of them, not against one a user would not pick.
	s.add(s.jsPull(e, stream, history))
	s.add(s.jsOrdered(e, stream, history))
	legacy, err := nc.JetStream()
	if err != nil {
		e.Fatalf("legacy jetstream context: %v", err)
	}
	s.add(s.jsLegacyPull(legacy, history))
	s.add(s.jsLegacyOrdered(legacy, history))
	s.add(s.jsGetOne(e, stream, history))

	s.jsAcked(e, js, pub, [2]string{ScenarioJSAck, ScenarioJSAckWide}, s.appends, s.appends, "default sync (2m)")
}

// jetstreamAlways: acknowledged publishes on a server with
// sync_interval: always (every message fsynced before its ack).
func (s *sizeRun) jetstreamAlways(e *Env) {
	ns := harness.StartNATS(e, harness.WithJetStream(e.TempDir()), harness.WithOptions(func(o *server.Options) {
		o.SyncAlways = true
	}))
	nc := harness.Connect(e, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		e.Fatalf("jetstream: %v", err)
	}
	// A wide window needs a few windows' worth of messages to be more
	// than filling and draining it.
	s.jsAcked(e, js, nc, [2]string{ScenarioJSAckAlways, ScenarioJSAckAlwaysWide}, s.appendsAlways, max(s.appendsAlways, 3*s.opts.WideWindow), "sync_interval: always")
}

// jsAcked times acknowledged publishes to a new stream: n at the window,
// then nWide at the wide window if the run has one, and adds the figures
// as scenarios[0] and [1].
func (s *sizeRun) jsAcked(e *Env, js jetstream.JetStream, pub *nats.Conn, scenarios [2]string, n, nWide int, note string) {
	if _, err := js.CreateStream(s.ctx, jetstream.StreamConfig{
		Name: "ACKS", Subjects: []string{ackSubject}, Storage: jetstream.FileStorage,
	}); err != nil {
		e.Fatalf("create stream: %v", err)
	}
	load := ackedLoad{
		nc: pub, subject: ackSubject, payload: s.payload, n: n, window: s.opts.Window, stall: s.opts.Stall,
		check: jsPubAckCheck,
	}
	r := load.run(e, s.opts.Progress, scenarios[0])
	s.add(r.figure(s.size, scenarios[0], n, fmt.Sprintf("%s, window %d", note, load.window)))
	if wide, ok := s.widen(load, nWide); ok {
		r = wide.run(e, s.opts.Progress, scenarios[1])
		s.add(r.figure(s.size, scenarios[1], nWide, fmt.Sprintf("%s, window %d", note, wide.window)))
	}
}

// jsPubAckCheck reads JetStream's answer to a publish: the record's
// offset (sequence - 1), or what went wrong.
func jsPubAckCheck(i int, body []byte) (uint64, error) {
	var ack struct {
		Seq   uint64 `json:"seq"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &ack); err != nil {
		return 0, fmt.Errorf("ack %d: %v", i, err)
	}
	if ack.Error != nil {
		return 0, fmt.Errorf("ack %d: %d %s", i, ack.Error.Code, ack.Error.Description)
	}
	if ack.Seq == 0 {
		return 0, fmt.Errorf("ack %d: no sequence", i)
	}
	return ack.Seq - 1, nil
}

// jsPull reads the history with a pull consumer, in fetches of about 1 MiB
// (what one voik FETCH reply holds), acknowledging nothing.
func (s *sizeRun) jsPull(e *Env, stream jetstream.Stream, history int) Figure {
	batch := max(1, min(10000, (1<<20)/s.size))
	f := Figure{Size: s.size, Scenario: ScenarioJSPull, Messages: history, Note: fmt.Sprintf("fetch %d, ack none", batch)}
	cons, err := stream.CreateConsumer(s.ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute})
	if err != nil {
		f.Err = err.Error()
		return f
	}
	var read atomic.Int64
	stop := watch(s.opts.Progress, "JetStream pull", history, func() int { return int(read.Load()) })
	defer stop()
	start := time.Now()
	for int(read.Load()) < history {
		b, err := cons.Fetch(min(batch, history-int(read.Load())), jetstream.FetchMaxWait(s.opts.Stall))
		if err != nil {
			f.Err = err.Error()
			break
		}
		got := 0
		for m := range b.Messages() {
			if len(m.Data()) != s.size {
				f.Err = fmt.Sprintf("message of %d bytes", len(m.Data()))
			}
			got++
		}
		read.Add(int64(got))
		if b.Error() != nil || got == 0 {
			if b.Error() != nil {
				f.Err = b.Error().Error()
			}
			break
		}
	}
	f.Done = int(read.Load())
	f.throughput(time.Since(start))
	return f
}

// jsOrdered reads the history with an ordered consumer.
func (s *sizeRun) jsOrdered(e *Env, stream jetstream.Stream, history int) Figure {
	f := Figure{Size: s.size, Scenario: ScenarioJSOrdered, Messages: history}
	cons, err := stream.OrderedConsumer(s.ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		f.Err = err.Error()
		return f
	}
	var read atomic.Int64
	stop := watch(s.opts.Progress, "JetStream ordered", history, func() int { return int(read.Load()) })
	defer stop()
	start := time.Now()
	it, err := cons.Messages()
	if err != nil {
		f.Err = err.Error()
		return f
	}
	defer it.Stop()
	for int(read.Load()) < history {
		m, err := it.Next(jetstream.NextMaxWait(s.opts.Stall))
		if err != nil {
			f.Err = err.Error()
			break
		}
		if len(m.Data()) != s.size {
			f.Err = fmt.Sprintf("message of %d bytes", len(m.Data()))
		}
		read.Add(1)
	}
	f.Done = int(read.Load())
	f.throughput(time.Since(start))
	return f
}

// legacyFetchBatch is the batch of the legacy pull reader: the plain
// sub.Fetch(1000) loop a user of nats.JetStreamContext writes.
const legacyFetchBatch = 1000

// jsLegacyPull reads the history with nats.go's older API, as its
// examples do: js.PullSubscribe with an ephemeral consumer and a loop of
// sub.Fetch(1000), acknowledging nothing (AckNone, like jsPull: with
// explicit acks a loop that does not ack stalls at max_ack_pending).
func (s *sizeRun) jsLegacyPull(js nats.JetStreamContext, history int) Figure {
	f := Figure{Size: s.size, Scenario: ScenarioJSLegacyPull, Messages: history,
		Note: fmt.Sprintf("js.PullSubscribe + Fetch(%d), ack none", legacyFetchBatch)}
	var read atomic.Int64
	stop := watch(s.opts.Progress, "JetStream legacy pull", history, func() int { return int(read.Load()) })
	defer stop()
	start := time.Now()
	sub, err := js.PullSubscribe(captureSubject, "", nats.AckNone(), nats.InactiveThreshold(time.Minute))
	if err != nil {
		f.Err = "pull subscribe: " + err.Error()
		return f
	}
	defer sub.Unsubscribe()
	for int(read.Load()) < history {
		// MaxWait bounds a fetch that gets nothing: the stall.
		msgs, err := sub.Fetch(min(legacyFetchBatch, history-int(read.Load())), nats.MaxWait(s.opts.Stall))
		if err != nil {
			f.Err = fmt.Sprintf("fetch after %d of %d messages: %v", read.Load(), history, err)
			break
		}
		for _, m := range msgs {
			if len(m.Data) != s.size && f.Err == "" {
				f.Err = fmt.Sprintf("message of %d bytes", len(m.Data))
			}
		}
		read.Add(int64(len(msgs)))
	}
	f.Done = int(read.Load())
	f.throughput(time.Since(start))
	if f.Done > history && f.Err == "" {
		f.Err = fmt.Sprintf("%d messages read from a stream of %d", f.Done, history)
	}
	return f
}

// jsLegacyOrdered reads the history with nats.go's older API's ordered
// push consumer, js.Subscribe(subject, callback, OrderedConsumer(),
// DeliverAll()): the server pushes with flow control, the callback
// counts. The clock starts before Subscribe, which creates the consumer
// and starts the delivery.
func (s *sizeRun) jsLegacyOrdered(js nats.JetStreamContext, history int) Figure {
	f := Figure{Size: s.size, Scenario: ScenarioJSLegacyOrdered, Messages: history,
		Note: "js.Subscribe, OrderedConsumer, DeliverAll"}
	var read, wrongSize atomic.Int64
	all := make(chan struct{}) // closed at the history-th message
	n := int64(history)
	stop := watch(s.opts.Progress, "JetStream legacy ordered", history, func() int { return int(read.Load()) })
	defer stop()
	start := time.Now()
	sub, err := js.Subscribe(captureSubject, func(m *nats.Msg) {
		if len(m.Data) != s.size {
			wrongSize.CompareAndSwap(0, int64(len(m.Data))+1)
		}
		if read.Add(1) == n {
			close(all)
		}
	}, nats.OrderedConsumer(), nats.DeliverAll())
	if err != nil {
		f.Err = "subscribe: " + err.Error()
		return f
	}
	defer sub.Unsubscribe()
	if err := awaitAll(all, &read, history, s.opts.Stall); err != nil {
		f.Err = err.Error()
	}
	elapsed := time.Since(start)
	got := read.Load()
	f.Done = int(min(got, n))
	f.throughput(elapsed)
	switch b := wrongSize.Load(); {
	case f.Err != "":
	case b > 0:
		f.Err = fmt.Sprintf("message of %d bytes", b-1)
	case got > n:
		f.Err = fmt.Sprintf("%d messages read from a stream of %d", got, n)
	}
	return f
}

// awaitAll waits until all is closed, or until read has not moved for
// stall: a reader the server stopped feeding, which then fails with how
// far it got rather than hang the run. The poll is for the stall alone;
// the end of the read is an event.
func awaitAll(all <-chan struct{}, read *atomic.Int64, total int, stall time.Duration) error {
	tick := time.NewTicker(min(stall/10, 100*time.Millisecond))
	defer tick.Stop()
	last, lastChange := read.Load(), time.Now()
	for {
		select {
		case <-all:
			return nil
		case now := <-tick.C:
			switch n := read.Load(); {
			case n != last:
				last, lastChange = n, now
			case now.Sub(lastChange) > stall:
				return fmt.Errorf("stalled: %d of %d messages read, none for %v", n, total, stall)
			}
		}
	}
}

// jsGetOne times single-message gets (direct get) at random sequences.
func (s *sizeRun) jsGetOne(e *Env, stream jetstream.Stream, history int) Figure {
	f := Figure{Size: s.size, Scenario: ScenarioJSGetOne, Messages: s.opts.FetchOne, Note: "direct get, random sequences"}
	if history == 0 {
		f.Err = "no history"
		return f
	}
	lat := make([]time.Duration, 0, s.opts.FetchOne)
	start := time.Now()
	for range s.opts.FetchOne {
		seq := uint64(rand.IntN(history)) + 1
		t := time.Now()
		m, err := stream.GetMsg(s.ctx, seq)
		if err != nil {
			f.Err = err.Error()
			break
		}
		lat = append(lat, time.Since(t))
		if m.Sequence != seq {
			f.Err = fmt.Sprintf("get %d returned %d", seq, m.Sequence)
			break
		}
	}
	f.Done = len(lat)
	f.throughput(time.Since(start))
	f.latencies(lat)
	return f
}
