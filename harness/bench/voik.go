package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

const (
	captureSubject = "bench.capture"
	ackSubject     = "bench.ack"
)

// voikUnderTest is voik as a child process, or in this process.
type voikUnderTest struct {
	api  *client.Client
	proc *harness.VoikProcess // nil in-process
	cfg  *config.Config       // as started: API prefix, reply budget
}

// usage reads the child's /proc; zero in-process.
func (v voikUnderTest) usage(e *Env) harness.ProcUsage {
	if v.proc == nil {
		return harness.ProcUsage{}
	}
	u, err := v.proc.Usage()
	if err != nil {
		e.Errorf("voik usage: %v", err)
	}
	return u
}

// startVoik starts voik capturing subjects (comma-separated filters):
// only the subjects the scenario publishes, as JetStream's streams are
// configured with them. With ">" NATS would also deliver to voik every
// reply it sends (a copy of each FETCH page, each ack) and every API
// request, only for voik to drop them.
func (s *sizeRun) startVoik(e *Env, natsURL, subjects string) voikUnderTest {
	cfg := harness.TestConfig(e, natsURL)
	cfg.Subjects = subjects
	cfg.Sync = s.opts.VoikSync
	if s.opts.InProcess {
		v := harness.StartVoik(e, cfg)
		return voikUnderTest{api: v.Client, cfg: cfg}
	}
	p := harness.StartVoikProcess(e, s.opts.VoikBin, cfg)
	return voikUnderTest{api: p.Client, proc: p, cfg: p.Config}
}

// voik runs capture, acked appends, FETCH and REPLAY against one voik and
// records its resources.
func (s *sizeRun) voik(e *Env) {
	ns := harness.StartNATS(e)
	v := s.startVoik(e, ns.ClientURL(), captureSubject+","+ackSubject)
	pub := harness.Connect(e, ns.ClientURL())
	res := Resources{Size: s.size, Run: s.repeat}

	history := s.measureCapture(e, v, pub, &res)
	acked := s.measureAppends(e, v, pub, &res)
	s.measureFetch(e, v, history, &res)
	s.measureReplay(e, v, pub, history, &res)
	res.StoredBytes = int64(history+acked) * int64(s.size)
	if v.proc != nil {
		s.report.Resources = append(s.report.Resources, res)
		s.printResources(res)
	}
}

// phaseUsage runs one phase of voik's under its profile (if asked for) and
// returns voik's usage before and after it, for what the phase cost.
func (s *sizeRun) phaseUsage(e *Env, v voikUnderTest, phase string, run func()) (before, after harness.ProcUsage) {
	before = v.usage(e)
	endPhase := s.phase(phase)
	run()
	endPhase()
	return before, v.usage(e)
}

// measureCapture times a burst of plain publishes until INFO shows them all,
// records its figure and its cost to voik in res, and returns how many
// records were stored: the history the reads go through.
func (s *sizeRun) measureCapture(e *Env, v voikUnderTest, pub *nats.Conn, res *Resources) (history int) {
	stored := func() int {
		info, err := v.api.Info(s.ctx, captureSubject)
		if err != nil {
			return 0 // 404 until the first record
		}
		return int(info.EndOffset)
	}
	var (
		got   int
		start time.Time
		at    time.Time
	)
	before, after := s.phaseUsage(e, v, "capture", func() {
		stop := watch(s.opts.Progress, "voik capture", s.messages, stored)
		start = time.Now()
		publishBurst(e, pub, captureSubject, s.payload, s.messages)
		got, at = waitCount(stored, s.messages, s.opts.Stall, 2*time.Millisecond)
		stop()
	})
	res.AnonRSSStart = before.AnonRSS
	f := Figure{Size: s.size, Scenario: ScenarioVoikCapture, Messages: s.messages, Done: got}
	f.throughput(at.Sub(start))
	if got > s.messages {
		f.Err = fmt.Sprintf("%d records stored for %d published", got, s.messages)
	}
	res.CPUPerMillionCapture = perMillion(after.CPU-before.CPU, got)
	f.CPUus = res.CPUPerMillionCapture
	s.add(f)
	if cpu := after.CPU - before.CPU; cpu > 0 {
		res.CaptureSystemShare = 1 - float64(after.UserCPU-before.UserCPU)/float64(cpu)
	}
	res.CaptureFaultsPerK = perThousand(after.MinorFaults-before.MinorFaults, s.messages)
	res.CaptureSwitchesPerK = perThousand(after.VoluntarySwitches-before.VoluntarySwitches, s.messages)
	res.AnonRSSAfterCapture = after.AnonRSS
	return got
}

// measureAppends times acknowledged appends (group commit, a window in
// flight), then again with the wide window if there is one, records their
// figures and their cost to voik in res, and returns how many appends the
// runs had acknowledged together (every one is a stored record).
func (s *sizeRun) measureAppends(e *Env, v voikUnderTest, pub *nats.Conn, res *Resources) (acked int) {
	load := ackedLoad{
		nc: pub, subject: ackSubject, payload: s.payload, n: s.appends, window: s.opts.Window, stall: s.opts.Stall,
		header: nats.Header{messages.HeaderAck: {"1"}}, check: voikAckCheck,
	}
	var r ackedResult
	before, after := s.phaseUsage(e, v, "appends", func() { r = load.run(e, s.opts.Progress, "voik acked append") })
	acked = r.acked
	f := r.figure(s.size, ScenarioVoikAck, s.appends, fmt.Sprintf("sync %s, window %d", s.opts.VoikSync, s.opts.Window))
	res.CPUPerMillionAppends = perMillion(after.CPU-before.CPU, f.Done)
	f.CPUus = res.CPUPerMillionAppends
	s.add(f)
	res.AppendsFaultsPerK = perThousand(after.MinorFaults-before.MinorFaults, s.appends)
	if wide, ok := s.widen(load, s.appends); ok {
		before, after = s.phaseUsage(e, v, "appends-wide", func() { r = wide.run(e, s.opts.Progress, "voik acked append, wide") })
		f = r.figure(s.size, ScenarioVoikAckWide, s.appends, fmt.Sprintf("sync %s, window %d", s.opts.VoikSync, wide.window))
		f.CPUus = perMillion(after.CPU-before.CPU, f.Done)
		s.add(f)
		acked += r.acked // the wide run's records are stored too
	}
	res.AnonRSSAfterAppends = after.AnonRSS
	return acked
}

// measureFetch pages through the whole capture history with FETCH, then
// times single-record FETCHes, and records their figures and the paging's
// cost to voik in res.
func (s *sizeRun) measureFetch(e *Env, v voikUnderTest, history int, res *Resources) {
	var f Figure
	before, after := s.phaseUsage(e, v, "fetch", func() { f = s.readHistory(v.api, history, ScenarioVoikFetch) })
	res.CPUPerMillionFetch = perMillion(after.CPU-before.CPU, f.Done)
	f.CPUus = res.CPUPerMillionFetch
	s.add(f)
	endPhase := s.phase("fetch-one")
	s.add(s.fetchOne(v.api, history, ScenarioVoikFetchOne))
	endPhase()
}

// measureReplay REPLAYs the whole history to an inbox and records its
// figure, its cost to voik and voik's memory once all the reads are done
// in res.
func (s *sizeRun) measureReplay(e *Env, v voikUnderTest, pub *nats.Conn, history int, res *Resources) {
	var f Figure
	before, after := s.phaseUsage(e, v, "replay", func() { f = s.voikReplay(e, pub, v.api, history) })
	res.CPUPerMillionReplay = perMillion(after.CPU-before.CPU, f.Done)
	f.CPUus = res.CPUPerMillionReplay
	s.add(f)
	res.AnonRSSAfterReads, res.RSSAfterReads, res.PeakRSS = after.AnonRSS, after.RSS, after.PeakRSS
}

// printResources shows a run's voik resources on the progress writer.
func (s *sizeRun) printResources(res Resources) {
	fmt.Fprintf(s.opts.Progress, "  voik resources: peak RSS %s, anon RSS %s -> %s -> %s -> %s, CPU s/M msgs: capture %.2f (%.0f%% system, %.1f faults and %.1f blocks per 1000) appends %.2f (%.1f faults/1000) fetch %.2f replay %.2f\n",
		mib(res.PeakRSS), mib(res.AnonRSSStart), mib(res.AnonRSSAfterCapture), mib(res.AnonRSSAfterAppends), mib(res.AnonRSSAfterReads),
		res.CPUPerMillionCapture, 100*res.CaptureSystemShare, res.CaptureFaultsPerK, res.CaptureSwitchesPerK, res.CPUPerMillionAppends, res.AppendsFaultsPerK, res.CPUPerMillionFetch, res.CPUPerMillionReplay)
}

// voikAckCheck checks an ack of voik's (or of the ack responder) and
// returns the offset it acknowledges.
func voikAckCheck(i int, body []byte) (uint64, error) {
	ack, err := client.DecodeAckReply(body)
	if err != nil {
		return 0, fmt.Errorf("ack %d: %v", i, err)
	}
	if ack.Subject != ackSubject {
		return 0, fmt.Errorf("ack %d: subject %q", i, ack.Subject)
	}
	return ack.Offset, nil
}

// readHistory pages through the records [0, history) of captureSubject
// with FETCH, checking each offset and size.
func (s *sizeRun) readHistory(api *client.Client, history int, scenario string) Figure {
	f := Figure{Size: s.size, Scenario: scenario, Messages: history}
	read := 0
	var progress atomic.Int64
	stop := watch(s.opts.Progress, "voik fetch", history, func() int { return int(progress.Load()) })
	defer stop()
	start := time.Now()
	offset := uint64(0)
	pages := 0
	err := api.ReadRange(s.ctx, captureSubject, 0, uint64(history), client.ReadOptions{}, func(records []messages.Record) error {
		for _, rec := range records {
			if rec.Offset != offset || len(rec.Data) != s.size {
				return fmt.Errorf("record at %d: offset %d, %d bytes", offset, rec.Offset, len(rec.Data))
			}
			offset++
		}
		read += len(records)
		progress.Store(int64(read))
		pages++
		return nil
	})
	if err != nil {
		f.Err = err.Error()
	}
	f.Done = read
	f.throughput(time.Since(start))
	f.Note = fmt.Sprintf("%d pages, %d MiB read ahead", pages, client.ReadAheadBytes>>20)
	return f
}

// fetchOne times single-record FETCHes of random offsets below history,
// one at a time.
func (s *sizeRun) fetchOne(api *client.Client, history int, scenario string) Figure {
	f := Figure{Size: s.size, Scenario: scenario, Messages: s.opts.FetchOne}
	if history == 0 {
		f.Err = "no history"
		return f
	}
	lat := make([]time.Duration, 0, s.opts.FetchOne)
	start := time.Now()
	for range s.opts.FetchOne {
		offset := uint64(rand.IntN(history))
		t := time.Now()
		reply, err := api.Fetch(s.ctx, captureSubject, messages.FetchRequest{Offset: &offset, MaxMessages: 1})
		if err != nil {
			f.Err = err.Error()
			break
		}
		lat = append(lat, time.Since(t))
		if len(reply.Records) != 1 || reply.Records[0].Offset != offset {
			f.Err = fmt.Sprintf("fetch of offset %d: %d records", offset, len(reply.Records))
			break
		}
	}
	f.Done = len(lat)
	f.throughput(time.Since(start))
	f.latencies(lat)
	f.Note = "random offsets, one at a time"
	return f
}

// voikReplay replays the whole history to an inbox with ReplayTo and counts
// what arrives on an async subscription without pending limits, as the
// ceiling's subscriber counts: messages.Client.Replay would add its own
// per-record decoding (header map, callback) to what is measured.
func (s *sizeRun) voikReplay(e *Env, nc *nats.Conn, api *client.Client, history int) Figure {
	f := Figure{Size: s.size, Scenario: ScenarioVoikReplay, Messages: history}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Minute)
	defer cancel()
	deliver := nc.NewRespInbox()
	var read atomic.Int64
	var failure atomic.Value
	done := make(chan struct{})
	sub, err := nc.Subscribe(deliver, func(m *nats.Msg) {
		if failure.Load() != nil {
			return
		}
		switch m.Header.Get(messages.HeaderStatus) {
		case messages.StatusEnd:
			close(done)
			return
		case "":
		default:
			failure.Store(fmt.Sprintf("replay ended with status %s at %s", m.Header.Get(messages.HeaderStatus), m.Header.Get(messages.HeaderOffset)))
			close(done)
			return
		}
		want := read.Load()
		if offset, _ := strconv.ParseInt(m.Header.Get(messages.HeaderOffset), 10, 64); offset != want || len(m.Data) != s.size {
			failure.Store(fmt.Sprintf("replayed offset %d (%d bytes), want %d", offset, len(m.Data), want))
			close(done)
			return
		}
		read.Add(1)
	})
	if err != nil {
		e.Fatalf("subscribe: %v", err)
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)
	// The request goes on another connection: the server must have the
	// subscription before voik delivers to it.
	if err := nc.Flush(); err != nil {
		e.Fatalf("flush: %v", err)
	}
	stop := watch(s.opts.Progress, "voik replay", history, func() int { return int(read.Load()) })
	defer stop()
	start := time.Now()
	zero := uint64(0)
	if _, err := api.ReplayTo(ctx, captureSubject, messages.ReplayRequest{Offset: &zero, Deliver: deliver}); err != nil {
		f.Err = err.Error()
		return f
	}
	select {
	case <-done:
	case <-ctx.Done():
		failure.Store("replay did not finish in 10 minutes")
	}
	f.Done = int(read.Load())
	f.throughput(time.Since(start))
	if v := failure.Load(); v != nil {
		f.Err = v.(string)
	}
	return f
}

// phase starts the profile of a voik phase, if asked for.
func (s *sizeRun) phase(name string) (stop func()) {
	if s.opts.PhaseProfile == nil {
		return func() {}
	}
	return s.opts.PhaseProfile(s.size, name)
}

// perMillion is CPU seconds per million messages, which is CPU
// microseconds per message; 0 when nothing was measured.
func perMillion(d time.Duration, n int) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return d.Seconds() / float64(n) * 1e6
}

func perThousand(n int64, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of) * 1000
}

func mib(b int64) string { return fmt.Sprintf("%.0fMiB", float64(b)/(1<<20)) }
