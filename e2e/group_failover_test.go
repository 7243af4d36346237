package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// ackedLoad is publishers that append with Nats-Msg-Id and retry the
// same id until acked, as the contract tells publishers that must not
// lose a message.
type ackedLoad struct {
	api     *client.Client
	subject string
	ids     string // prefix of its Nats-Msg-Ids: loads on one subject need their own

	mu      sync.Mutex
	acked   map[string]messages.AckReply // id -> its ack
	ackedAt []time.Time                  // when each ack came
	sentAt  []time.Time                  // when the try it answered was sent
	failed  []error
}

func newAckedLoad(api *client.Client, subject, ids string) *ackedLoad {
	return &ackedLoad{api: api, subject: subject, ids: ids, acked: map[string]messages.AckReply{}}
}

// loadRun is an ackedLoad's publishers at work.
type loadRun struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// start runs publishers, each sending count appends (retried until
// acked) until they are sent or stop is called.
func (l *ackedLoad) start(t *testing.T, publishers, count int) *loadRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &loadRun{cancel: cancel}
	t.Cleanup(r.stop)
	for p := range publishers {
		r.done.Add(1)
		go func() { defer r.done.Done(); l.run(ctx, p, count) }()
	}
	return r
}

// wait waits for the publishers to send all they were to.
func (r *loadRun) wait() { r.done.Wait() }

// stop stops the publishers (an append in flight is neither acked nor
// lost) and waits for them.
func (r *loadRun) stop() {
	r.cancel()
	r.done.Wait()
}

func (l *ackedLoad) run(ctx context.Context, publisher, count int) {
	for k := range count {
		id := fmt.Sprintf("%sp%d-%d", l.ids, publisher, k)
		h := nats.Header{}
		h.Set(messages.HeaderMsgID, id)
		giveUp := time.Now().Add(30 * time.Second)
		for try := 0; ; try++ {
			if ctx.Err() != nil {
				return
			}
			if try > 0 {
				// A publisher's pause between tries: no responders
				// (nobody leads yet) comes back at once.
				waitOrDone(ctx, 50*time.Millisecond)
			}
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			sent := time.Now()
			ack, err := l.api.Append(actx, l.subject, h, []byte(id))
			cancel()
			if err == nil {
				l.mu.Lock()
				l.acked[id] = *ack
				l.ackedAt = append(l.ackedAt, time.Now())
				l.sentAt = append(l.sentAt, sent)
				l.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return // the load was stopped: this one is neither acked nor lost
			}
			if time.Now().After(giveUp) {
				l.mu.Lock()
				l.failed = append(l.failed, fmt.Errorf("%s: not acked after %d tries in 30s: %w", id, try+1, err))
				l.mu.Unlock()
				break
			}
			var e *messages.Error
			if !errors.As(err, &e) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
				l.mu.Lock()
				l.failed = append(l.failed, fmt.Errorf("%s: %w", id, err))
				l.mu.Unlock()
				break
			}
		}
	}
}

func waitOrDone(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (l *ackedLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// firstAckAfter is when the first ack came to a try sent after t: what
// was in flight at t does not count.
func (l *ackedLoad) firstAckAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, at := range l.ackedAt {
		if l.sentAt[i].After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// seenRecords remembers every record a reader was given, to check that
// none ever changes, and the 416s it got for offsets below an end_offset
// it had been given: a log that looked shorter than it was.
type seenRecords struct {
	mu     sync.Mutex
	seen   map[uint64]messages.Record
	bad    []string
	end    uint64   // the largest end_offset given
	shrunk []string // 416s at or below end
}

func (s *seenRecords) note(records []messages.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		if old, ok := s.seen[r.Offset]; ok && (old.Timestamp != r.Timestamp || !bytes.Equal(old.Data, r.Data)) {
			s.bad = append(s.bad, fmt.Sprintf("offset %d was %q ts %d, now %q ts %d", r.Offset, old.Data, old.Timestamp, r.Data, r.Timestamp))
		}
		s.seen[r.Offset] = messages.Record{Offset: r.Offset, Timestamp: r.Timestamp, Data: append([]byte(nil), r.Data...)}
	}
}

// read pages through subject from 0 until ctx ends, noting every record.
func (s *seenRecords) read(ctx context.Context, api *client.Client, subject string) {
	next := uint64(0)
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		reply, err := api.Fetch(fctx, subject, messages.FetchRequest{Offset: &next, MaxMessages: 100, WaitMs: 200})
		cancel()
		var e *messages.Error
		if errors.As(err, &e) && e.Code == messages.CodeOutOfRange {
			s.mu.Lock()
			if next <= s.end && len(s.shrunk) < 10 {
				s.shrunk = append(s.shrunk, fmt.Sprintf("FETCH at %d after end_offset %d: %v", next, s.end, err))
			}
			s.mu.Unlock()
		}
		if err != nil {
			continue // a member going away: the next request reaches another
		}
		s.note(reply.Records)
		s.mu.Lock()
		s.end = max(s.end, reply.EndOffset)
		s.mu.Unlock()
		next = reply.NextOffset
	}
}

// checkLog reads subject whole and checks it against what was acked and
// read: every acked id is at its acked offset, no id is stored twice,
// every record read earlier is unchanged, and no read was told the log
// was shorter than an end_offset given before.
func checkLog(t *testing.T, api *client.Client, subject string, load *ackedLoad, seen *seenRecords, loadRunning bool) {
	t.Helper()
	final := &seenRecords{seen: map[uint64]messages.Record{}}
	ids := map[string]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := api.Info(ctx, subject)
	if err != nil {
		t.Fatalf("INFO %s: %v", subject, err)
	}
	err = api.ReadRange(ctx, subject, info.FirstOffset, info.EndOffset, client.ReadOptions{}, func(records []messages.Record) error {
		for _, r := range records {
			id := string(r.Data)
			if at, dup := ids[id]; dup {
				t.Errorf("%s stored twice: offsets %d and %d", id, at, r.Offset)
			}
			ids[id] = r.Offset
		}
		final.note(records)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", subject, err)
	}
	load.mu.Lock()
	for id, ack := range load.acked {
		if ack.Offset >= info.EndOffset && loadRunning {
			continue // acked after the end was read
		}
		if at, ok := ids[id]; !ok || at != ack.Offset {
			t.Errorf("acked %s at offset %d (duplicate %v); the log holds it at %d (held: %v)", id, ack.Offset, ack.Duplicate, at, ok)
		}
	}
	for _, err := range load.failed {
		t.Errorf("publisher: %v", err)
	}
	load.mu.Unlock()
	seen.mu.Lock()
	defer seen.mu.Unlock()
	for _, bad := range seen.bad {
		t.Errorf("a record a reader was given changed: %s", bad)
	}
	for offset, r := range seen.seen {
		if offset >= info.EndOffset && loadRunning {
			continue // read after the end was
		}
		if now, ok := final.seen[offset]; !ok || now.Timestamp != r.Timestamp || !bytes.Equal(now.Data, r.Data) {
			t.Errorf("offset %d was read as %q ts %d; the log now holds %q ts %d (held: %v)", offset, r.Data, r.Timestamp, now.Data, now.Timestamp, ok)
		}
	}
	for _, shrunk := range seen.shrunk {
		t.Errorf("the log looked shorter than a member had said: %s", shrunk)
	}
}

// groupUnderLoad is a group of three beside a NATS cluster, with four
// publishers retrying acked appends to subject (count each) and a reader
// paging through it, until stop.
type groupUnderLoad struct {
	cluster  *harness.Cluster
	bin      string
	members  []*harness.VoikProcess
	nc       *nats.Conn
	api      *client.Client
	load     *ackedLoad
	seen     *seenRecords
	run      *loadRun
	reading  sync.WaitGroup
	stopRead context.CancelFunc
}

func startGroupUnderLoad(t *testing.T, subject string, count int) *groupUnderLoad {
	t.Helper()
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	g := &groupUnderLoad{cluster: cluster, bin: bin, members: startGroup(t, bin, cluster, 3), nc: harness.Connect(t, cluster.URL())}
	g.api = client.New(g.nc, "VOIK.API")
	g.load = newAckedLoad(g.api, subject, "")
	g.seen = &seenRecords{seen: map[uint64]messages.Record{}}
	g.run = g.load.start(t, 4, count)
	readCtx, stopRead := context.WithCancel(context.Background())
	t.Cleanup(stopRead)
	g.stopRead = stopRead
	g.reading.Add(1)
	go func() { defer g.reading.Done(); g.seen.read(readCtx, g.api, subject) }()
	harness.Eventually(t, 30*time.Second, "100 acks before the fault", func() bool { return g.load.count() >= 100 })
	return g
}

// finish waits for the publishers, stops the reader, and checks the log.
func (g *groupUnderLoad) finish(t *testing.T) {
	t.Helper()
	g.run.wait()
	g.stopRead()
	g.reading.Wait()
	oneReplyEach(t, g.nc, g.load.subject)
	checkLog(t, g.api, g.load.subject, g.load, g.seen, false)
}

// TestGroupLosesNoAckedRecordWhenTheLeaderIsKilled: kill -9 of the leader
// under acked load, with publishers that retry with Nats-Msg-Id: no
// acked record is lost, none is stored twice, and no record a reader was
// given changes or is said to be out of range. It reports the time from
// the kill to the next ack.
func TestGroupLosesNoAckedRecordWhenTheLeaderIsKilled(t *testing.T) {
	g := startGroupUnderLoad(t, "orders.failover", 150)
	leader := leaderOf(g.members)
	if leader < 0 {
		t.Fatal("no member says it leads")
	}
	killed := time.Now()
	g.members[leader].Kill()
	// A publisher that uses the client's AppendUntilAcked from the kill
	// on: its record is acked once, at the offset the log holds it.
	untilAcked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ack, err := g.api.AppendUntilAcked(ctx, g.load.subject, "until-acked", nil, []byte("until-acked"))
		if err == nil {
			t.Logf("AppendUntilAcked from the kill on: acked %v after it", time.Since(killed).Round(time.Millisecond))
			g.load.mu.Lock()
			g.load.acked["until-acked"] = *ack // checked with the load's
			g.load.mu.Unlock()
		}
		untilAcked <- err
	}()
	// Timed by a probe of short tries: the load's tries in flight at the
	// kill are lost with the leader, and each publisher waits out its 2 s
	// timeout before its next, which would time the publisher, not the
	// group.
	next := firstAckOf(t, g.api, "orders.failover-probe", killed, 250*time.Millisecond)
	t.Logf("kill -9 of the leader to the next ack: %v (VOIK_LEASE %v)", next.Round(time.Millisecond), groupLease)
	if limit := 2*groupLease + time.Second; next > limit {
		t.Errorf("the next ack came %v after the kill, past 2 x VOIK_LEASE + 1 s (%v)", next, limit)
	}
	harness.Eventually(t, 4*groupLease+10*time.Second, "the load acked after the kill", func() bool {
		_, ok := g.load.firstAckAfter(killed)
		return ok
	})
	if err := <-untilAcked; err != nil {
		t.Errorf("AppendUntilAcked across the kill: %v", err)
	}
	g.finish(t) // with the killed member still down
	g.members[leader].Restart(t)
	harness.Eventually(t, 30*time.Second, "the restarted member to catch up", func() bool {
		st, err := g.members[leader].GroupStatus()
		return err == nil && st.Role == "follower" && allCaught(g.api, g.members)
	})
	g.finish(t)
	if n := g.load.count(); n != 600+1 {
		t.Errorf("%d of 600 appends and the one until acked acked", n)
	}
}

// TestGroupFencesALeaderPausedPastItsLease: SIGSTOP of the leader in the
// middle of acked load, past its lease, then SIGCONT. Another member
// leads in a higher epoch; the old leader acks nothing it did not commit
// (every ack names the record the log holds), comes back as a follower,
// drops what it appended and never committed, and the copies converge
// byte for byte.
func TestGroupFencesALeaderPausedPastItsLease(t *testing.T) {
	g := startGroupUnderLoad(t, "orders.paused", 150)
	members := g.members
	old := leaderOf(members)
	if old < 0 {
		t.Fatal("no member says it leads")
	}
	before, err := members[old].GroupStatus()
	if err != nil {
		t.Fatal(err)
	}
	members[old].Pause()
	paused := true
	defer func() {
		if paused {
			members[old].Resume()
		}
	}()
	var newEpoch uint64
	harness.Eventually(t, 4*groupLease+10*time.Second, "another member to lead in a higher epoch", func() bool {
		for i, p := range members {
			if i == old {
				continue
			}
			if st, err := p.GroupStatus(); err == nil && st.Role == "leader" && st.Epoch > before.Epoch {
				newEpoch = st.Epoch
				return true
			}
		}
		return false
	})
	acks := g.load.count()
	harness.Eventually(t, 10*time.Second, "acks under the new leader", func() bool { return g.load.count() > acks+20 })
	members[old].Resume()
	paused = false
	harness.Eventually(t, 30*time.Second, "the old leader to follow and catch up", func() bool {
		st, err := members[old].GroupStatus()
		return err == nil && st.Role == "follower" && st.Epoch >= newEpoch && allCaught(g.api, members)
	})
	g.finish(t)
	stopAndCompare(t, members)
}

// TestGroupSurvivesTheLossOfNATSServers: under acked load, stop the NATS
// server the leader is connected to (it steps down and another member
// takes over), then the server that leads the key-value bucket's stream
// (JetStream's Raft moves it; the lease survives or moves). Nothing acked
// is lost, and the members catch up once the servers are back.
func TestGroupSurvivesTheLossOfNATSServers(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := startGroup(t, bin, cluster, 3)
	nc := harness.Connect(t, cluster.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	api := client.New(nc, "VOIK.API")
	load := newAckedLoad(api, "orders.servers", "")
	publishers := load.start(t, 4, 5000) // until the servers are back (stop)
	harness.Eventually(t, 30*time.Second, "acks before the first stop", func() bool { return load.count() >= 100 })

	leader := leaderOf(members)
	if leader < 0 {
		t.Fatal("no member says it leads")
	}
	cluster.Stop(leader)  // member i is beside, and connected to, server i
	stopped := time.Now() // once it is down: until then it serves
	next := firstAckOf(t, api, "orders.servers-probe-leader", stopped, 250*time.Millisecond)
	t.Logf("the leader's NATS server stopped to the next ack: %v", next.Round(time.Millisecond))
	harness.Eventually(t, 4*groupLease+15*time.Second, "another member to lead and the load to be acked", func() bool {
		_, ok := load.firstAckAfter(stopped)
		return ok && leaderOf(members) != leader && leaderOf(members) >= 0
	})
	cluster.Restart(leader)

	acks := load.count()
	kvLeader := cluster.WaitStreamLeader(harness.GlobalAccount, "KV_VOIK_GROUPS")
	cluster.Stop(kvLeader)
	stopped = time.Now()
	next = firstAckOf(t, api, "orders.servers-probe-kv", stopped, 250*time.Millisecond)
	t.Logf("the key-value stream leader stopped to the next ack: %v", next.Round(time.Millisecond))
	harness.Eventually(t, 4*groupLease+15*time.Second, "acks of the load after the bucket's stream leader stopped", func() bool {
		_, ok := load.firstAckAfter(stopped)
		return ok && load.count() > acks+20
	})
	cluster.Restart(kvLeader)
	publishers.stop()
	harness.Eventually(t, 60*time.Second, "every member back and caught up", func() bool { return allCaught(api, members) })
	checkLog(t, api, load.subject, load, &seenRecords{seen: map[uint64]messages.Record{}}, false)
}
