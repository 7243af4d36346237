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

	s.add(s.jsPull(e, stream, history))
	s.add(s.jsOrdered(e, stream, history))
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
		check: func(i int, body []byte) (uint64, error) {
			var ack struct {
				Stream string `json:"stream"`
				Seq    uint64 `json:"seq"`
				Error  *struct {
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
		},
	}
	r := load.run(e, s.opts.Progress, scenarios[0])
	s.add(r.figure(s.size, scenarios[0], n, fmt.Sprintf("%s, window %d", note, load.window)))
	if wide, ok := s.widen(load, nWide); ok {
		r = wide.run(e, s.opts.Progress, scenarios[1])
		s.add(r.figure(s.size, scenarios[1], nWide, fmt.Sprintf("%s, window %d", note, wide.window)))
	}
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
