package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// The group part: voik as a replication group of three (docs/groups.md),
// each member a child process beside one server of a three-server NATS
// cluster with JetStream, against what the same cluster offers in its
// place: JetStream streams with three replicas. It runs at one size
// (groupSize), in three scenarios, each on a cluster of its own:
//
//   - groupBatch (VOIK_SYNC=batch, JetStream's default sync): a burst of
//     plain publishes captured by a standalone voik beside one of the
//     servers, then by the group; the replication lag at half the group's
//     capture rate; acked appends against acked publishes to an R3
//     stream, at both windows;
//   - groupAlways (VOIK_SYNC=always, servers with sync_interval: always):
//     acked appends against acked publishes to an R3 stream;
//   - groupFailover: kill -9 of the leader, groupKills times, under acked
//     appends retried with Nats-Msg-Id: the time from each kill to the
//     next ack, and no acked record lost.
//
// Publishers connect to the server beside the leader (voik's, or the
// stream's): the best place for each, so that a route hop that one took
// and the other did not is not what is measured.
const (
	groupName            = "bench"
	groupSubjects        = "bench.group.>"
	groupCaptureSubject  = "bench.group.capture"
	groupAckSubject      = "bench.group.ack"
	groupLoadSubject     = "bench.group.load"
	groupProbeSubject    = "bench.group.probe"
	groupFailoverSubject = "bench.group.failover"
	// groupFailoverProbeSubject takes one probe append per kill.
	groupFailoverProbeSubject = "bench.group.failover-probe"
	// The standalone voik of the capture comparison shares the cluster
	// with the group: its own subjects and API prefix, so that neither
	// takes the other's messages or requests.
	soloCaptureSubject = "bench.solo.capture"
	soloPrefix         = "BENCH.SOLO"
	// The R3 streams' subject, outside the group's filters: voik must
	// not capture JetStream's publishes.
	groupJSSubject = "bench.js.ack"
	groupJSStream  = "GROUPACKS"

	// Replication lag: groupLagProbes probes at most, one every
	// groupLagProbeEvery, for at most groupLagLongest; each waits
	// groupProbeWait for its record.
	groupLagProbes     = 500
	groupLagProbeEvery = 20 * time.Millisecond
	groupLagLongest    = 20 * time.Second
	groupProbeWait     = 5 * time.Second
	probeHeader        = "Bench-Probe"

	// Failover: VOIK_LEASE 1s, the e2e tests' (docs/groups.md's figures);
	// the target is 2 × VOIK_LEASE + 1 s.
	groupKills              = 20
	groupFailoverLease      = time.Second
	groupFailoverPublishers = 4
	// Each publisher's appends are bounded; the rounds end the load
	// long before.
	groupFailoverAppendsEach = 500_000
	groupAppendTimeout       = 2 * time.Second
	// A publisher's pause between tries: "no responders" (nobody leads
	// yet) comes back at once. It is also the resolution of the
	// kill-to-ack time.
	groupRetryPause = 50 * time.Millisecond
	groupRetryFor   = 30 * time.Second
	// groupProbeTry is how long each try of the failover's probe waits
	// for its ack: short, so that a try lost with the leader costs
	// little, and the probe times the group rather than a publisher's
	// timeout.
	groupProbeTry = 250 * time.Millisecond
	// groupSettle bounds each wait for the group to be whole again.
	groupSettle = time.Minute
)

// The group part's scenarios, in the order the report prints them (after
// scenarioOrder).
const (
	ScenarioGroupSoloCapture     = "group: standalone capture"
	ScenarioGroupCapture         = "group: capture"
	ScenarioGroupLag             = "group: follower lag"
	ScenarioGroupAck             = "group: acked append"
	ScenarioGroupJSAck           = "group: JetStream R3 acked"
	ScenarioGroupAckWide         = "group: acked append, wide"
	ScenarioGroupJSAckWide       = "group: JetStream R3, wide"
	ScenarioGroupAckAlways       = "group: acked, sync always"
	ScenarioGroupJSAckAlways     = "group: JS R3 sync always"
	ScenarioGroupAckAlwaysWide   = "group: acked, always, wide"
	ScenarioGroupJSAckAlwaysWide = "group: JS R3 always, wide"
	ScenarioGroupFailover        = "group: acked through kills"
)

var groupScenarioOrder = []string{
	ScenarioGroupSoloCapture, ScenarioGroupCapture, ScenarioGroupsOne, ScenarioGroupsTwo, ScenarioGroupLag,
	ScenarioGroupAck, ScenarioGroupJSAck, ScenarioGroupAckWide, ScenarioGroupJSAckWide,
	ScenarioGroupAckAlways, ScenarioGroupJSAckAlways, ScenarioGroupAckAlwaysWide, ScenarioGroupJSAckAlwaysWide,
	ScenarioGroupFailover,
}

// FailoverRun is the failover scenario of one run: the time from each
// kill -9 of the leader to the next ack, and what the log holds of what
// was acked.
type FailoverRun struct {
	Size         int     `json:"size"`
	Run          int     `json:"run"`
	LeaseSeconds float64 `json:"lease_seconds"` // VOIK_LEASE of the members
	Kills        int     `json:"kills"`         // asked for
	// KillToAck is one time per kill done, in seconds, in order: to the
	// ack of a probe that tries from the kill on, each try given
	// groupProbeTry.
	KillToAck []float64 `json:"kill_to_ack_seconds"`
	// LoadKillToAck is the same to the load's first ack of a try sent
	// after the kill: its publishers' tries in flight at the kill are
	// lost with the leader, so this adds up to a groupAppendTimeout
	// (what a publisher with that timeout sees).
	LoadKillToAck []float64 `json:"load_kill_to_ack_seconds"`
	Acked         int       `json:"acked"`
	GaveUp        int       `json:"gave_up"` // appends not acked after groupRetryFor of tries
	// Checked: the log was read whole once the load stopped. Missing are
	// acked appends not in it at their acked offset; Twice are ids it
	// holds more than once.
	Checked bool   `json:"checked"`
	Missing int    `json:"missing"`
	Twice   int    `json:"stored_twice"`
	Err     string `json:"error,omitempty"`
}

// groupSize is the one size the group part runs at: 1 KiB, which the
// targets are stated at, or the run's size nearest to it.
func groupSize(sizes []int) int {
	best := sizes[0]
	for _, size := range sizes {
		if d, b := size-1024, best-1024; d*d < b*b {
			best = size
		}
	}
	return best
}

// groupRuns says whether the group part runs at this size. Members are
// child processes (the failover kills them), so voik in this process
// cannot be one.
func (s *sizeRun) groupRuns(e *Env) bool {
	if s.size != groupSize(s.opts.Sizes) {
		return false
	}
	if s.opts.VoikBin == "" {
		e.Logf("skipped: a group's members run as child processes, not -inprocess")
		return false
	}
	return true
}

// voikGroup is a group of voiks, member i beside server i of cluster.
type voikGroup struct {
	cluster *harness.Cluster
	members []*harness.VoikProcess
	// api reaches the group's queue group: whichever member answers.
	api *client.Client
}

// startGroup starts the group part's group (startNamedGroup).
func (s *sizeRun) startGroup(e *Env, cluster *harness.Cluster, sync string, lease time.Duration) *voikGroup {
	return s.startNamedGroup(e, cluster, groupName, groupSubjects, sync, lease)
}

// leader is the index of the one member that says it leads, or -1 while
// none or more than one does.
func (g *voikGroup) leader() int {
	leader := -1
	for i, p := range g.members {
		if st, err := p.GroupStatus(); err == nil && st.Role == "leader" {
			if leader >= 0 {
				return -1
			}
			leader = i
		}
	}
	return leader
}

func (g *voikGroup) waitLeader(e *Env) int {
	leader := -1
	if !waitUntil(func() bool { leader = g.leader(); return leader >= 0 }, groupSettle, 20*time.Millisecond) {
		e.Fatalf("no member of the group leads after %v", groupSettle)
	}
	return leader
}

// whole says whether one member leads, every other follows, and each
// holds every committed record and answers reads (in the in-sync set
// again after a burst it fell behind in).
func (g *voikGroup) whole() bool {
	leaders := 0
	for _, p := range g.members {
		st, err := p.GroupStatus()
		if err != nil || st.CommittedLag != 0 || (st.Role != "leader" && st.Role != "follower") || !p.Ready() {
			return false
		}
		if st.Role == "leader" {
			leaders++
		}
	}
	return leaders == 1
}

func (g *voikGroup) waitWhole(timeout time.Duration) bool {
	return waitUntil(g.whole, timeout, 50*time.Millisecond)
}

// groupBatch runs the group under VOIK_SYNC=batch: capture against a
// standalone voik, the replication lag, and acked appends against an R3
// stream at JetStream's default sync.
func (s *sizeRun) groupBatch(e *Env) {
	if !s.groupRuns(e) {
		return
	}
	cluster := harness.StartNATSCluster(e, 3)
	g := s.startGroup(e, cluster, "batch", 0)
	leader := g.waitLeader(e)
	pub := harness.Connect(e, cluster.ClientURL(leader))
	rate := s.groupCapture(e, g, leader, pub)
	s.groupLag(e, g, leader, rate)
	s.groupAcked(e, g, leader, pub, [2]string{ScenarioGroupAck, ScenarioGroupAckWide}, "3 members, sync batch")
	s.groupJSAcked(e, g, leader, [2]string{ScenarioGroupJSAck, ScenarioGroupJSAckWide}, s.appends, s.appends, "R3, default sync (2m)")
}

// groupAlways runs acked appends of a group under VOIK_SYNC=always
// against an R3 stream on servers that fsync every message before its
// ack (sync_interval: always, as the always part's server).
func (s *sizeRun) groupAlways(e *Env) {
	if !s.groupRuns(e) {
		return
	}
	cluster := harness.StartNATSCluster(e, 3, harness.WithOptions(func(o *server.Options) { o.SyncAlways = true }))
	g := s.startGroup(e, cluster, "always", 0)
	leader := g.waitLeader(e)
	pub := harness.Connect(e, cluster.ClientURL(leader))
	s.groupAcked(e, g, leader, pub, [2]string{ScenarioGroupAckAlways, ScenarioGroupAckAlwaysWide}, "3 members, sync always")
	// As in the always part, a wide window needs a few windows' worth.
	s.groupJSAcked(e, g, leader, [2]string{ScenarioGroupJSAckAlways, ScenarioGroupJSAckAlwaysWide}, s.appendsAlways, max(s.appendsAlways, 3*s.opts.WideWindow), "R3, sync_interval: always")
}

// groupCapture times the burst into a standalone voik beside the
// leader's server, then into the group, both published on pub, and
// returns the group's rate. The group's records count once committed:
// INFO, whichever member answers it, ends at the committed end.
func (s *sizeRun) groupCapture(e *Env, g *voikGroup, leader int, pub *nats.Conn) float64 {
	cfg := harness.TestConfig(e, g.cluster.ClientURL(leader))
	cfg.Subjects, cfg.APIPrefix, cfg.Sync = soloCaptureSubject, soloPrefix, "batch"
	solo := harness.StartVoikProcess(e, s.opts.VoikBin, cfg)
	// floodBurst is the burst as the flood part times it: first publish
	// to last record stored.
	f := s.floodBurst(e, voikUnderTest{api: solo.Client, proc: solo, cfg: solo.Config}, pub, soloCaptureSubject, ScenarioGroupSoloCapture)
	f.Note = "standalone voik beside the same server, sync batch"
	s.add(f)
	solo.Stop(e) // idle from here on; it would only take memory
	profiled := s.profileGroup(g, leader, ScenarioGroupCapture)
	cpu := readGroupCPU(g)
	f = s.floodBurst(e, voikUnderTest{api: g.api}, pub, groupCaptureSubject, ScenarioGroupCapture)
	after := readGroupCPU(g)
	profiled()
	var split string
	f.CPUus, split = cpu.split(after, leader, f.Done)
	f.Note = "3 members, sync batch, counted once committed; publisher beside the leader; " + split
	s.add(f)
	if f.Err != "" {
		return 0
	}
	return f.MsgPerS
}

// groupAcked times the group's acked appends at the window and the wide
// window, as measureAppends does a standalone voik's.
func (s *sizeRun) groupAcked(e *Env, g *voikGroup, leader int, pub *nats.Conn, scenarios [2]string, note string) {
	load := ackedLoad{
		nc: pub, subject: groupAckSubject, payload: s.payload, n: s.appends, window: s.opts.Window, stall: s.opts.Stall,
		header: nats.Header{messages.HeaderAck: {"1"}}, check: voikAckCheckOn(groupAckSubject),
	}
	s.groupLoad(e, g, leader, load, scenarios[0], fmt.Sprintf("%s, window %d, publisher beside the leader", note, load.window))
	if wide, ok := s.widen(load, s.appends); ok {
		s.groupLoad(e, g, leader, wide, scenarios[1], fmt.Sprintf("%s, window %d, publisher beside the leader", note, wide.window))
	}
}

// groupJSAcked times acked publishes to a new R3 stream on g's cluster:
// n at the window, then nWide at the wide window, from a publisher beside
// the stream's leader. g's members are idle meanwhile; their CPU counts
// all the same.
func (s *sizeRun) groupJSAcked(e *Env, g *voikGroup, leader int, scenarios [2]string, n, nWide int, note string) {
	cluster := g.cluster
	js, err := jetstream.New(harness.Connect(e, cluster.URL()))
	if err != nil {
		e.Fatalf("jetstream: %v", err)
	}
	if _, err := js.CreateStream(s.ctx, jetstream.StreamConfig{
		Name: groupJSStream, Subjects: []string{groupJSSubject}, Storage: jetstream.FileStorage, Replicas: cluster.Size(),
	}); err != nil {
		e.Fatalf("create stream: %v", err)
	}
	// Until the stream has a leader its publishes go unanswered.
	pub := harness.Connect(e, cluster.ClientURL(cluster.WaitStreamLeader(harness.GlobalAccount, groupJSStream)))
	load := ackedLoad{nc: pub, subject: groupJSSubject, payload: s.payload, n: n, window: s.opts.Window, stall: s.opts.Stall, check: jsPubAckCheck}
	s.groupLoad(e, g, leader, load, scenarios[0], fmt.Sprintf("%s, window %d, publisher beside the stream leader", note, load.window))
	if wide, ok := s.widen(load, nWide); ok {
		s.groupLoad(e, g, leader, wide, scenarios[1], fmt.Sprintf("%s, window %d, publisher beside the stream leader", note, wide.window))
	}
}

// groupLoad runs an acked load as scenario and adds its figure, with the
// CPU that g's members and this process spent on it (groupCPU).
func (s *sizeRun) groupLoad(e *Env, g *voikGroup, leader int, load ackedLoad, scenario, note string) {
	profiled := s.profileGroup(g, leader, scenario)
	cpu := readGroupCPU(g)
	r := load.run(e, s.opts.Progress, scenario)
	after := readGroupCPU(g)
	profiled()
	f := r.figure(s.size, scenario, load.n, note)
	var split string
	f.CPUus, split = cpu.split(after, leader, f.Done)
	f.Note += fmt.Sprintf("; longest wait for any ack %v; %s", r.longestGap.Round(time.Millisecond), split)
	s.add(f)

}

// voikAckCheckOn is voikAckCheck for acks of subject.
func voikAckCheckOn(subject string) func(int, []byte) (uint64, error) {
	return func(i int, body []byte) (uint64, error) {
		ack, err := client.DecodeAckReply(body)
		if err != nil {
			return 0, fmt.Errorf("ack %d: %v", i, err)
		}
		if ack.Subject != subject {
			return 0, fmt.Errorf("ack %d: subject %q", i, ack.Subject)
		}
		return ack.Offset, nil
	}
}

// groupLag measures how long after its publish a record can be read from
// a follower, while plain publishes load the group at half the rate it
// captured the burst at (no capture runs flat out all day).
//
// The method: a probe sends a FETCH long poll for the next offset of the
// probe subject, then publishes the record that will be at that offset,
// and times from that publish to the long poll's answer. A member answers
// only up to the committed end it knows (docs/groups.md), so a follower
// answers once it holds the record and has heard that it is committed:
// when any reader can have it from that member. The queue group hands
// each FETCH to any member; which one answered is read off the members'
// /metrics (voik_api_requests_total of FETCH, counted before the reply
// leaves), one probe at a time, nothing else FETCHing meanwhile. The
// figure is the followers' answers; the leader's (at its commit) are in
// the note. Records of the probe and of the load share the group's one
// journal, so a probe waits behind the load as any record does.
func (s *sizeRun) groupLag(e *Env, g *voikGroup, leader int, captureRate float64) {
	f := Figure{Size: s.size, Scenario: ScenarioGroupLag}
	if captureRate <= 0 {
		f.Err = "no capture rate to take half of"
		s.add(f)
		return
	}
	if !g.waitWhole(groupSettle) {
		e.Fatalf("the group was not whole within %v of the capture burst", groupSettle)
	}
	before, err := g.members[leader].GroupStatus()
	if err != nil {
		e.Fatalf("leader's state: %v", err)
	}
	rate := captureRate / 2
	url := g.cluster.ClientURL(leader)
	probes := newLagProbes(e, g, leader, url)
	start := time.Now()
	stopLoad := pacedPublish(e, harness.Connect(e, url), groupLoadSubject, s.payload, rate, int(rate*groupLagLongest.Seconds())+1)
	r := probes.run(s.payload, start.Add(groupLagLongest))
	sent, loadErr := stopLoad()
	elapsed := time.Since(start)
	stored, _ := waitCount(voikUnderTest{api: g.api}.stored(s.ctx, groupLoadSubject), sent, s.opts.Stall, 5*time.Millisecond)
	f.Messages, f.Done = sent+r.probes, stored+r.answered
	f.throughput(elapsed)
	f.latencies(r.follower)
	f.Note = lagNote(rate, r)
	switch after, err := g.members[leader].GroupStatus(); {
	case loadErr != nil:
		f.Err = "load: " + loadErr.Error()
	case r.err != "":
		f.Err = r.err
	case err != nil || after.Role != "leader" || after.Epoch != before.Epoch:
		f.Err = "the leader changed during the probes: which member answered is not known"
	case len(r.follower) == 0:
		f.Err = "no probe was answered by a follower"
	}
	s.add(f)
}

// lagNote says what the lag figure is, and what the leader's answers
// (the commit as the leader sees it) took.
func lagNote(rate float64, r lagResult) string {
	note := fmt.Sprintf("load %.0f msg/s (half of capture); p50/p99: publish to a follower's answer, %d probes", rate, len(r.follower))
	if len(r.leader) > 0 {
		lf := Figure{}
		lf.latencies(r.leader)
		note += fmt.Sprintf("; leader's answers (%d): p50 %s p99 %s", len(r.leader), micros(lf.P50us), micros(lf.P99us))
	}
	if r.unattributed > 0 {
		note += fmt.Sprintf("; %d not attributed", r.unattributed)
	}
	return note
}

// pacedPublish publishes payload to subject at rate a second, as much as
// is due at each millisecond's tick, until stop is called or n are out.
// stop returns how many went out and the error that ended it early; the
// publishing stops when e's scenario ends, too.
func pacedPublish(e *Env, nc *nats.Conn, subject string, payload []byte, rate float64, n int) (stop func() (int, error)) {
	quit := make(chan struct{})
	type outcome struct {
		sent int
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		sent := 0
		for sent < n {
			select {
			case <-quit:
				done <- outcome{sent, nil}
				return
			case <-tick.C:
			}
			// What is due since the start: a late tick catches up.
			for due := min(n, int(rate*time.Since(start).Seconds())); sent < due; sent++ {
				if err := nc.Publish(subject, payload); err != nil {
					done <- outcome{sent, err}
					return
				}
			}
		}
		done <- outcome{sent, nil}
	}()
	stop = sync.OnceValues(func() (int, error) {
		close(quit)
		out := <-done
		if err := nc.FlushTimeout(time.Minute); err != nil && out.err == nil {
			out.err = err
		}
		return out.sent, out.err
	})
	e.Cleanup(func() { stop() })
	return stop
}

// lagProbes time records from their publish to a member's answer to a
// long poll for them, and tell which member answered (see groupLag).
type lagProbes struct {
	nc       *nats.Conn
	sub      *nats.Subscription // of inbox.*: probe k's answer comes to inbox.k
	inbox    string
	fetch    string // the probe subject's FETCH subject
	members  []*harness.VoikProcess
	leader   int
	answered []int64 // each member's FETCHes answered, at the last look
}

type lagResult struct {
	probes, answered int // sent, and answered with their record
	follower, leader []time.Duration
	unattributed     int
	err              string
}

func newLagProbes(e *Env, g *voikGroup, leader int, url string) *lagProbes {
	nc := harness.Connect(e, url)
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox + ".*")
	if err != nil {
		e.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		e.Fatalf("flush: %v", err)
	}
	p := &lagProbes{nc: nc, sub: sub, inbox: inbox, fetch: g.members[0].Config.APIPrefix + ".FETCH." + groupProbeSubject,
		members: g.members, leader: leader, answered: make([]int64, len(g.members))}
	for i, m := range g.members {
		if p.answered[i] = fetchesAnswered(m); p.answered[i] < 0 {
			e.Fatalf("member %d's /metrics does not count FETCHes", i)
		}
	}
	return p
}

// run sends probes one at a time, one every groupLagProbeEvery, until
// groupLagProbes are answered or until. A probe that is not answered
// with its record ends the run: later offsets would no longer be theirs.
func (p *lagProbes) run(payload []byte, until time.Time) lagResult {
	var r lagResult
	tick := time.NewTicker(groupLagProbeEvery)
	defer tick.Stop()
	for k := 0; k < groupLagProbes && time.Now().Before(until); k++ {
		r.probes++
		lag, err := p.probe(k, payload)
		if err != nil {
			r.err = err.Error()
			break
		}
		r.answered++
		switch by := p.answeredBy(); {
		case by < 0:
			r.unattributed++
		case by == p.leader:
			r.leader = append(r.leader, lag)
		default:
			r.follower = append(r.follower, lag)
		}
		<-tick.C
	}
	return r
}

// probe sends a long poll for offset k of the probe subject, publishes
// the record that goes there, and returns the time from that publish to
// the answer. The long poll goes first on the same connection: it is
// waiting, or on its way, when the record is captured.
func (p *lagProbes) probe(k int, payload []byte) (time.Duration, error) {
	offset := uint64(k)
	body, err := msgpack.Marshal(messages.FetchRequest{Offset: &offset, MaxMessages: 1, WaitMs: uint64(groupProbeWait.Milliseconds())})
	if err != nil {
		return 0, err
	}
	reply := p.inbox + "." + strconv.Itoa(k)
	if err := p.nc.PublishRequest(p.fetch, reply, body); err != nil {
		return 0, fmt.Errorf("probe %d: %v", k, err)
	}
	msg := nats.NewMsg(groupProbeSubject)
	msg.Header.Set(probeHeader, strconv.Itoa(k))
	msg.Data = payload
	sent := time.Now()
	if err := p.nc.PublishMsg(msg); err != nil {
		return 0, fmt.Errorf("probe %d: %v", k, err)
	}
	deadline := sent.Add(groupProbeWait + 2*time.Second)
	for {
		m, err := p.sub.NextMsg(time.Until(deadline))
		if err != nil {
			return 0, fmt.Errorf("probe %d: no answer: %v", k, err)
		}
		if m.Subject == reply { // not a late answer to an earlier probe
			return time.Since(sent), checkProbe(k, m.Data)
		}
	}
}

// checkProbe checks that the answer to probe k holds probe k's record.
func checkProbe(k int, body []byte) error {
	var reply struct {
		Records []messages.Record `msgpack:"records"`
		Error   *messages.Error   `msgpack:"error"`
	}
	if err := msgpack.Unmarshal(body, &reply); err != nil {
		return fmt.Errorf("probe %d: %v", k, err)
	}
	if reply.Error != nil {
		return fmt.Errorf("probe %d: %v", k, reply.Error)
	}
	if len(reply.Records) != 1 || reply.Records[0].Offset != uint64(k) {
		return fmt.Errorf("probe %d: %d records, not the one at offset %d", k, len(reply.Records), k)
	}
	if got := reply.Records[0].Headers[probeHeader]; len(got) != 1 || got[0] != strconv.Itoa(k) {
		return fmt.Errorf("probe %d: offset %d holds probe %v (a probe record was lost)", k, k, got)
	}
	return nil
}

// answeredBy is the member whose count of FETCHes answered moved since
// the last look, or -1. One FETCH is answered between two looks, so the
// followers are looked at first and the leader only if neither moved.
func (p *lagProbes) answeredBy() int {
	order := []int{}
	for i := range p.members {
		if i != p.leader {
			order = append(order, i)
		}
	}
	for _, i := range append(order, p.leader) {
		if n := fetchesAnswered(p.members[i]); n > p.answered[i] {
			p.answered[i] = n
			return i
		}
	}
	return -1
}

// fetchesAnswered is member p's count of FETCHes answered 200, from its
// /metrics, or -1 when it cannot be read.
func fetchesAnswered(p *harness.VoikProcess) int64 {
	n, _, err := p.Metric("voik_api_requests_total", `code="200"`, `verb="FETCH"`)
	if err != nil {
		return -1
	}
	return int64(n) // 0 when none answered yet: the series appears with the first
}

// groupFailover kills the leader with SIGKILL groupKills times under
// acked appends retried with Nats-Msg-Id, restarting the killed member
// each time and waiting until the group is whole again. Once per run:
// its figure is already a distribution over the kills.
func (s *sizeRun) groupFailover(e *Env) {
	if !s.groupRuns(e) || s.repeat > 1 {
		return
	}
	cluster := harness.StartNATSCluster(e, 3)
	g := s.startGroup(e, cluster, "batch", groupFailoverLease)
	run := &FailoverRun{Size: s.size, Run: s.repeat, LeaseSeconds: groupFailoverLease.Seconds(), Kills: groupKills}
	load := &retryingAppends{api: g.api, subject: groupFailoverSubject, payload: s.payload, acked: map[string]uint64{}}
	stopLoad := load.start(s.ctx, groupFailoverPublishers, groupFailoverAppendsEach)
	// Recorded however the scenario ends, a Fatal too: the kills done
	// are figures.
	defer func() { s.recordFailover(run, load, stopLoad()) }()
	if !waitUntil(func() bool { return load.count() >= 100 }, groupSettle, 10*time.Millisecond) {
		run.Err = "fewer than 100 appends acked before the first kill"
		return
	}
	for k := range groupKills {
		probe, loadNext, err := s.killLeader(e, g, load, fmt.Sprintf("kill-%d", k))
		if err != nil {
			run.Err = fmt.Sprintf("kill %d: %v", k+1, err)
			return
		}
		run.KillToAck = append(run.KillToAck, probe.Seconds())
		run.LoadKillToAck = append(run.LoadKillToAck, loadNext.Seconds())
		fmt.Fprintf(s.opts.Progress, "    kill %d of %d: next ack after %v (the load's, with %v tries: %v)\n", k+1, groupKills,
			probe.Round(time.Millisecond), groupAppendTimeout, loadNext.Round(time.Millisecond))
	}
	stopLoad()
	var err error
	if run.Missing, run.Twice, err = load.check(s.ctx); err != nil {
		run.Err = "reading the log: " + err.Error()
		return
	}
	run.Checked = true
}

// killLeader kills the leader and returns the time from the kill to the
// ack of a probe (id) appended from then on, and to the load's first ack
// of a try sent after the kill; it returns once the killed member is
// back, the group whole and acks flowing again.
func (s *sizeRun) killLeader(e *Env, g *voikGroup, load *retryingAppends, id string) (probe, loadNext time.Duration, err error) {
	leader := g.leader()
	if leader < 0 {
		return 0, 0, errors.New("no member leads")
	}
	bound := 4*groupFailoverLease + 10*time.Second
	killed := time.Now()
	g.members[leader].Kill()
	acked, err := firstProbeAck(s.ctx, g.api, groupFailoverProbeSubject, id, killed.Add(bound))
	if err != nil {
		return 0, 0, fmt.Errorf("killing member %d: %w", leader, err)
	}
	var next time.Time
	if !waitUntil(func() bool { var ok bool; next, ok = load.firstAckAfter(killed); return ok }, bound, 5*time.Millisecond) {
		return 0, 0, fmt.Errorf("no ack of the load within %v of killing member %d", bound, leader)
	}
	probe, loadNext = acked.Sub(killed), next.Sub(killed)
	g.members[leader].Restart(e) // returns once it leads or is in sync
	if !g.waitWhole(groupSettle) {
		return probe, loadNext, fmt.Errorf("the group was not whole within %v of restarting member %d", groupSettle, leader)
	}
	acks := load.count()
	if !waitUntil(func() bool { return load.count() >= acks+10 }, groupSettle, 10*time.Millisecond) {
		return probe, loadNext, errors.New("acks stopped after the restart")
	}
	return probe, loadNext, nil
}

// firstProbeAck appends one record with Nats-Msg-Id id to subject with
// the client's AppendUntilAcked, in tries of groupProbeTry, until it is
// acked or deadline passes, and returns when the ack came.
func firstProbeAck(ctx context.Context, api *client.Client, subject, id string, deadline time.Time) (time.Time, error) {
	probe := *api
	probe.AppendAttemptTimeout = groupProbeTry
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if _, err := probe.AppendUntilAcked(ctx, subject, id, nil, []byte(id)); err != nil {
		return time.Time{}, fmt.Errorf("no ack to a probe by %v: %w", deadline.Format(time.TimeOnly), err)
	}
	return time.Now(), nil
}

// recordFailover adds the failover's figure and run to the report: the
// appends acked over the whole scenario (restarts included), with the
// kill-to-ack times as its latencies.
func (s *sizeRun) recordFailover(run *FailoverRun, load *retryingAppends, elapsed time.Duration) {
	load.mu.Lock()
	run.Acked, run.GaveUp = len(load.acked), load.gaveUp
	lastErr := load.lastErr
	load.mu.Unlock()
	f := Figure{Size: s.size, Scenario: ScenarioGroupFailover, Messages: run.Acked + run.GaveUp, Done: run.Acked, Err: run.Err}
	f.throughput(elapsed)
	f.Lost = run.GaveUp + run.Missing
	var took []time.Duration
	for _, sec := range run.KillToAck {
		took = append(took, time.Duration(sec*float64(time.Second)))
	}
	f.latencies(took)
	f.Note = fmt.Sprintf("%d publishers retrying with Nats-Msg-Id; %d kill -9 of the leader, VOIK_LEASE %v; p50/p99: kill to the next ack of a probe in tries of %v", groupFailoverPublishers, len(run.KillToAck), groupFailoverLease, groupProbeTry)
	if len(run.LoadKillToAck) > 0 {
		f.Note += fmt.Sprintf(" (the load's, in tries of %v: p50 %.2f s)", groupAppendTimeout, median(run.LoadKillToAck))
	}
	if run.GaveUp > 0 {
		f.Note += fmt.Sprintf("; %d gave up, last: %s", run.GaveUp, lastErr)
	}
	if run.Twice > 0 {
		f.Note += fmt.Sprintf("; %d ids stored twice", run.Twice)
	}
	s.add(f)
	s.report.Failovers = append(s.report.Failovers, *run)
}

// retryingAppends are publishers that append with a Nats-Msg-Id and
// retry the same id until acked, as docs/groups.md tells a publisher that
// must lose nothing across a failover.
type retryingAppends struct {
	api     *client.Client
	subject string
	payload []byte

	mu      sync.Mutex
	acked   map[string]uint64 // id -> the offset its ack named
	ackedAt []time.Time       // when each ack came, in order
	sentAt  []time.Time       // when the try it answered was sent
	gaveUp  int
	lastErr string
}

// start runs publishers, each with at most each appends, until stop.
func (l *retryingAppends) start(ctx context.Context, publishers, each int) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < each && ctx.Err() == nil; k++ {
				l.append(ctx, fmt.Sprintf("p%d-%d", p, k))
			}
		}()
	}
	return sync.OnceValue(func() time.Duration {
		cancel()
		wg.Wait()
		return time.Since(start)
	})
}

// append tries id until it is acked, groupRetryFor has passed, or ctx
// ends (then it is neither acked nor lost).
func (l *retryingAppends) append(ctx context.Context, id string) {
	h := nats.Header{messages.HeaderMsgID: {id}}
	giveUp := time.Now().Add(groupRetryFor)
	for try := 0; ctx.Err() == nil; try++ {
		if try > 0 {
			sleepOrDone(ctx, groupRetryPause)
		}
		actx, cancel := context.WithTimeout(ctx, groupAppendTimeout)
		sent := time.Now()
		ack, err := l.api.Append(actx, l.subject, h, l.payload)
		cancel()
		late := time.Now().After(giveUp)
		l.mu.Lock()
		switch {
		case err == nil:
			l.acked[id] = ack.Offset
			l.ackedAt = append(l.ackedAt, time.Now()) // under the lock: in order
			l.sentAt = append(l.sentAt, sent)
		case late && ctx.Err() == nil:
			l.gaveUp++
			l.lastErr = err.Error()
		}
		l.mu.Unlock()
		if err == nil || late {
			return
		}
	}
}

func sleepOrDone(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (l *retryingAppends) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// firstAckAfter is when the first ack came to a try sent after t: what
// was in flight at t does not count. Acks before t cannot be it.
func (l *retryingAppends) firstAckAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := sort.Search(len(l.ackedAt), func(i int) bool { return !l.ackedAt[i].Before(t) }); i < len(l.ackedAt); i++ {
		if l.sentAt[i].After(t) {
			return l.ackedAt[i], true
		}
	}
	return time.Time{}, false
}

// check reads the subject whole and counts the acked ids that are not at
// their acked offset, and the ids held more than once.
func (l *retryingAppends) check(ctx context.Context) (missing, twice int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	info, err := l.api.Info(ctx, l.subject)
	if err != nil {
		return 0, 0, err
	}
	held := map[string]uint64{}
	err = l.api.ReadRange(ctx, l.subject, info.FirstOffset, info.EndOffset, client.ReadOptions{}, func(records []messages.Record) error {
		for _, r := range records {
			id := strings.Clone(strings.Join(r.Headers[messages.HeaderMsgID], ","))
			if _, ok := held[id]; ok {
				twice++
				continue
			}
			held[id] = r.Offset
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, offset := range l.acked {
		if at, ok := held[id]; !ok || at != offset {
			missing++
		}
	}
	return missing, twice, nil
}

// groupRatios adds the group part's ratios at size.
func (r *Report) groupRatios(size int) {
	for _, c := range []struct{ name, voik, ref string }{
		{"group capture/standalone capture", ScenarioGroupCapture, ScenarioGroupSoloCapture},
		{"two groups/one group, the same burst split over two subjects", ScenarioGroupsTwo, ScenarioGroupsOne},
		{"group acked/JetStream R3 default", ScenarioGroupAck, ScenarioGroupJSAck},
		{"group acked/JetStream R3 default, wide", ScenarioGroupAckWide, ScenarioGroupJSAckWide},
		{"group acked always/JetStream R3 sync always", ScenarioGroupAckAlways, ScenarioGroupJSAckAlways},
		{"group acked always/JetStream R3 sync always, wide", ScenarioGroupAckAlwaysWide, ScenarioGroupJSAckAlwaysWide},
	} {
		if v := r.rate(size, c.voik, c.ref); v > 0 {
			r.Ratios = append(r.Ratios, Ratio{Size: size, Name: c.name, Value: v, Measure: "msg/s"})
		}
	}
}

// checkGroupTargets states the group part's targets at size: capture
// within 0.8 of a standalone voik's; acked appends at the wide window
// (nats.go's default for JetStream) at least JetStream R3's at its
// default sync, and ten times its rate under sync always; every failover
// within 2 × VOIK_LEASE + 1 s, and no acked record lost. The lag is
// information.
func (r *Report) checkGroupTargets(size int) {
	r.groupRatioTarget(size, "group capture vs standalone voik", ScenarioGroupCapture, ScenarioGroupSoloCapture, 0.8)
	r.groupRatioTarget(size, fmt.Sprintf("group acked vs JetStream R3 default, window %d", r.WideWindow), ScenarioGroupAckWide, ScenarioGroupJSAckWide, 1)
	r.groupRatioTarget(size, fmt.Sprintf("group acked (sync always) vs JetStream R3 sync always, window %d", r.WideWindow), ScenarioGroupAckAlwaysWide, ScenarioGroupJSAckAlwaysWide, 10)
	if lag := r.figure(size, ScenarioGroupLag); lag != nil && lag.P99us > 0 {
		r.Info = append(r.Info, Info{Name: "group replication lag at half the capture rate, p99", Got: lag.P99us / 1000, Unit: "ms",
			Note: fmt.Sprintf("p50 %s; publish to a follower's answer, under %.0f msg/s", micros(lag.P50us), lag.MsgPerS)})
	}
	for _, run := range r.Failovers {
		if run.Size == size {
			r.failoverTargets(run)
		}
	}
}

// groupRatioTarget states voik's rate over the reference's against want,
// if the reference ran.
func (r *Report) groupRatioTarget(size int, name, voik, ref string, want float64) {
	if r.figure(size, ref) == nil {
		return
	}
	got := r.rate(size, voik, ref)
	t := Target{Name: name, Want: fmt.Sprintf(">= %.1f", want), Got: got, Unit: "x", Met: got >= want}
	if pairs := r.repeatRatios(size, voik, ref); len(pairs) > 1 {
		t.Note = "repeat by repeat: " + strings.Join(pairs, ", ")
	}
	r.Targets = append(r.Targets, t)
}

// failoverTargets states one failover run's targets: its slowest kill
// against 2 × VOIK_LEASE + 1 s (each of groupKills must have been done),
// and the acked appends the log lost or holds twice.
func (r *Report) failoverTargets(run FailoverRun) {
	limit := 2*run.LeaseSeconds + 1
	took := slices.Clone(run.KillToAck)
	slices.Sort(took)
	t := Target{Name: fmt.Sprintf("group failover: kill -9 of the leader to the next ack, worst of %d", len(took)),
		Want: fmt.Sprintf("<= %.1f s (2 x VOIK_LEASE %gs + 1 s), %d kills", limit, run.LeaseSeconds, run.Kills), Unit: "s"}
	if len(took) > 0 {
		t.Got = took[len(took)-1]
		t.Note = fmt.Sprintf("a probe in tries of %v: p50 %.2f s, best %.2f s", groupProbeTry, median(took), took[0])
	}
	if len(run.LoadKillToAck) > 0 {
		t.Note += fmt.Sprintf("; the load's publishers, in tries of %v: p50 %.2f s", groupAppendTimeout, median(run.LoadKillToAck))
	}
	t.Met = len(took) == run.Kills && t.Got <= limit
	if run.Err != "" {
		t.Note += "; " + run.Err
	}
	r.Targets = append(r.Targets, t)
	lost := Target{Name: "group acked appends lost or stored twice across the kills", Want: "0", Got: float64(run.Missing + run.Twice), Unit: "appends",
		Met: run.Checked && run.Missing+run.Twice == 0}
	lost.Note = fmt.Sprintf("%d acked, %d missing, %d twice; %d gave up after %v of tries", run.Acked, run.Missing, run.Twice, run.GaveUp, groupRetryFor)
	if !run.Checked {
		lost.Note = "the log was not read: " + lost.Note
	}
	r.Targets = append(r.Targets, lost)
}

// median is the middle of values (the lower of the two middles), or 0.
func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return sorted[(len(sorted)-1)/2]
}
