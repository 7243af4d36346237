package group

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/logstore"
)

// startNATS is a NATS server on a free 127.0.0.1 port and a connection to
// it, both gone when the test ends. (The harness's helpers would import
// package sidecar, which imports this one.)
func startNATS(t testing.TB, maxPayload int32) *nats.Conn {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server did not start")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// copyPair is a leader serving pulls and a follower, on one NATS server.
type copyPair struct {
	leader, follower *member
	source           *Source
	sink             *Sink
	nc               *nats.Conn
	mu               sync.Mutex
	epoch            uint64
	commit           *Commit
}

func newCopyPair(t *testing.T, maxPayload int32) *copyPair {
	t.Helper()
	p := &copyPair{leader: newMember(t), follower: newMember(t), nc: startNATS(t, maxPayload), epoch: 1}
	leaderEpochs := openEpochs(t)
	if err := leaderEpochs.Assign(1, 0); err != nil {
		t.Fatal(err)
	}
	var err error
	if p.commit, err = NewCommit(3, "leader", []string{"leader", "follower"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	p.source = &Source{Store: p.leader.store, Journal: p.leader.journal, Epochs: leaderEpochs, MaxPayload: int(p.nc.MaxPayload()),
		Leading: func() (uint64, bool) { p.mu.Lock(); defer p.mu.Unlock(); return p.epoch, p.epoch > 0 },
		Report: func(member string, durable uint64) (uint64, bool) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.commit.Report("leader", p.leader.journal.Log().DurableOffset())
			return p.commit.Report(member, durable), slices.Contains(p.commit.InSync(), member)
		}}
	sub, err := p.source.Serve(p.nc, PullSubject("g", "leader"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	p.sink = &Sink{Store: p.follower.store, Journal: p.follower.journal, Epochs: openEpochs(t), Member: "follower"}
	return p
}

func openEpochs(t *testing.T) *logstore.Epochs {
	t.Helper()
	e, err := logstore.OpenEpochs(filepath.Join(t.TempDir(), "epochs"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// catchUp pulls until the follower's journal reaches the leader's.
func (p *copyPair) catchUp(t *testing.T, maxBytes int) (pulls int, committed uint64) {
	t.Helper()
	for p.follower.journal.End() < p.leader.journal.End() || committed < p.leader.journal.End() {
		_, c, err := p.sink.Pull(context.Background(), p.nc, PullSubject("g", "leader"), maxBytes, 0)
		if err != nil {
			t.Fatalf("pull at %d: %v", p.follower.journal.End(), err)
		}
		committed = c
		if pulls++; pulls > 10000 {
			t.Fatalf("no progress after %d pulls", pulls)
		}
	}
	return pulls, committed
}

// Pulling over NATS, a follower copies its leader's journal and every
// record it points at, takes the leader's epochs, and its durable
// reports move the leader's commit to the end.
func TestAFollowerCopiesOverNATSAndMovesTheCommit(t *testing.T) {
	p := newCopyPair(t, 1<<20)
	p.leader.lead(t, rand.New(rand.NewPCG(7, 8)), 600)
	_, committed := p.catchUp(t, 256<<10)
	wantLogs, wantJournal := p.leader.contents(t)
	gotLogs, gotJournal := p.follower.contents(t)
	if !reflect.DeepEqual(gotJournal, wantJournal) || !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the follower's copy differs from its leader")
	}
	if got := p.sink.Epochs.List(); !reflect.DeepEqual(got, p.source.Epochs.List()) {
		t.Fatalf("follower epochs %v, leader's %v", got, p.source.Epochs.List())
	}
	if committed != p.leader.journal.End() {
		t.Fatalf("committed %d, want the journal's end %d", committed, p.leader.journal.End())
	}
	// The leader committed by the follower's report: by then every record
	// the follower's journal points at was durable in its subject's log,
	// which syncs apart from the journal.
	for subject := range gotLogs {
		err := p.follower.store.View(subject, func(l *logstore.Log) error {
			if l.DurableOffset() < l.EndOffset() {
				t.Errorf("%s: durable to %d of %d, yet counted in the commit", subject, l.DurableOffset(), l.EndOffset())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Many records of about 1 KiB: a reply holds as many as fit under
// max_payload with their subjects and encoding, never more (a reply that
// NATS refuses would leave the follower waiting, and the group stuck).
func TestRepliesOfManySmallRecordsFitUnderMaxPayload(t *testing.T) {
	p := newCopyPair(t, 1<<20)
	for i := range 3000 {
		subject := fmt.Sprintf("bench.group.subject-%d", i%7)
		first, _, err := p.leader.store.Append(subject, []logstore.Entry{{Headers: logstore.Headers{"Nats-Msg-Id": {fmt.Sprint(i)}}, Data: make([]byte, 1000)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.leader.journal.Append([]Pointer{{Subject: subject, Offset: first}}); err != nil {
			t.Fatal(err)
		}
	}
	for pulls := 0; p.follower.journal.End() < p.leader.journal.End(); pulls++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, _, err := p.sink.Pull(ctx, p.nc, PullSubject("g", "leader"), 1<<20, 0)
		cancel()
		if err != nil || n == 0 || pulls > 20 {
			t.Fatalf("pull %d at journal offset %d: %d records, %v", pulls, p.follower.journal.End(), n, err)
		}
	}
}

// A follower that has caught up waits in a long poll, and is answered
// with the next record as soon as the leader stores it.
func TestACaughtUpFollowerIsWokenByTheNextRecord(t *testing.T) {
	p := newCopyPair(t, 1<<20)
	p.leader.lead(t, rand.New(rand.NewPCG(9, 10)), 3)
	p.catchUp(t, 1<<20)
	done := make(chan int, 1)
	began := time.Now()
	go func() {
		n, _, err := p.sink.Pull(context.Background(), p.nc, PullSubject("g", "leader"), 1<<20, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	p.leader.lead(t, rand.New(rand.NewPCG(11, 12)), 1)
	if n := <-done; n != 1 {
		t.Fatalf("the long poll applied %d records", n)
	}
	if waited := time.Since(began); waited > 10*time.Second {
		t.Fatalf("the long poll took %v: it was not woken", waited)
	}
}

// A record larger than a reply can hold is copied in pieces, one a pull,
// and applied once whole.
func TestARecordLargerThanAReplyIsCopiedInChunks(t *testing.T) {
	p := newCopyPair(t, 8<<10)
	big := bytes.Repeat([]byte("0123456789"), 5_000) // 50 KB under an 8 KiB max_payload
	if _, _, err := p.leader.store.Append("big", []logstore.Entry{{Data: big}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.leader.journal.Append([]Pointer{{Subject: "big", Offset: 0}}); err != nil {
		t.Fatal(err)
	}
	pulls, _ := p.catchUp(t, 1<<20)
	if pulls < 5 {
		t.Fatalf("a 50 KB record came in %d pulls under an 8 KiB max_payload", pulls)
	}
	gotLogs, _ := p.follower.contents(t)
	if len(gotLogs["big"]) != 1 || !bytes.Equal(gotLogs["big"][0].Data, big) {
		t.Fatal("the big record was not copied whole")
	}
}

// Fencing: a leader that knows an older epoch than the follower holds is
// refused by the leader itself (not the leader), and a reply from an
// older epoch is refused by the follower; nothing of it is applied. A
// member that speaks another protocol version is told so.
func TestStaleLeadersAndOtherVersionsAreRefused(t *testing.T) {
	p := newCopyPair(t, 1<<20)
	p.leader.lead(t, rand.New(rand.NewPCG(13, 14)), 5)
	if err := p.sink.Epochs.Assign(4, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.sink.Pull(context.Background(), p.nc, PullSubject("g", "leader"), 1<<20, 0); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a pull from a follower at epoch 4 to a leader of epoch 1: %v", err)
	}
	// A responder of an old version of the protocol that does not check.
	stale, err := p.nc.Subscribe(PullSubject("stale", "leader"), func(m *nats.Msg) {
		body, _ := msgpack.Marshal(PullReply{Version: ProtocolVersion, Epoch: 3,
			Records: []WireRecord{{Journal: 0, Subject: "x", Offset: 0, Timestamp: 1, Data: []byte("stale")}}})
		m.Respond(body)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Unsubscribe()
	if _, _, err := p.sink.Pull(context.Background(), p.nc, PullSubject("stale", "leader"), 1<<20, 0); !errors.Is(err, ErrStaleLeader) {
		t.Fatalf("a reply of epoch 3 to a follower at 4: %v", err)
	}
	if p.follower.journal.End() != 0 {
		t.Fatal("a stale reply was applied")
	}
	body, _ := msgpack.Marshal(PullRequest{Version: ProtocolVersion + 1, Member: "future"})
	msg, err := p.nc.Request(PullSubject("g", "leader"), body, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply PullReply
	if err := msgpack.Unmarshal(msg.Data, &reply); err != nil || reply.Code != CodeVersion {
		t.Fatalf("a pull of version %d: %+v, %v", ProtocolVersion+1, reply, err)
	}
}

// A follower whose journal runs past where its epoch ended on the leader
// (it holds records of that epoch the leader never had) is told to
// truncate, to that end (KIP-101, in the pull as KIP-320 does).
func TestADivergedFollowerIsToldWhereToTruncate(t *testing.T) {
	p := newCopyPair(t, 1<<20)
	rng := rand.New(rand.NewPCG(15, 16))
	p.leader.lead(t, rng, 3)
	p.catchUp(t, 1<<20)
	p.follower.lead(t, rng, 2) // the follower led epoch 1 on: records 3 and 4 the leader never had
	p.mu.Lock()
	p.epoch = 2
	p.mu.Unlock()
	if err := p.source.Epochs.Assign(2, 3); err != nil { // the new leader's epoch 2 from journal offset 3
		t.Fatal(err)
	}
	p.leader.lead(t, rng, 2)
	_, _, err := p.sink.Pull(context.Background(), p.nc, PullSubject("g", "leader"), 1<<20, 0)
	var diverged *DivergedError
	if !errors.As(err, &diverged) || !diverged.OK || diverged.Offset != 3 {
		t.Fatalf("pull by a diverged follower: %v, want truncate to 3", err)
	}
}

// KIP-101 end to end: the diverged follower truncates where it is told
// (its records that the leader never had go, with their journal
// pointers and epochs), copies on, and holds exactly the leader's log.
func TestADivergedFollowerTruncatesAndConverges(t *testing.T) {
	p := newCopyPair(t, 1<<20)
	rng := rand.New(rand.NewPCG(17, 18))
	p.leader.lead(t, rng, 40)
	p.catchUp(t, 1<<20)
	p.follower.lead(t, rng, 25) // never copied by anyone
	p.mu.Lock()
	p.epoch = 2
	p.mu.Unlock()
	if err := p.source.Epochs.Assign(2, p.leader.journal.End()); err != nil {
		t.Fatal(err)
	}
	p.leader.lead(t, rng, 30)
	_, _, err := p.sink.Pull(context.Background(), p.nc, PullSubject("g", "leader"), 1<<20, 0)
	var diverged *DivergedError
	if !errors.As(err, &diverged) || diverged.Offset != 40 {
		t.Fatalf("pull: %v, want truncate to 40", err)
	}
	dropped, err := p.sink.Truncate(diverged.Offset)
	if err != nil || dropped != 25 {
		t.Fatalf("truncate: dropped %d, %v; want the 25 records the leader never had", dropped, err)
	}
	if _, err := p.sink.Truncate(diverged.Offset); err != nil { // again, as after a stop
		t.Fatal(err)
	}
	p.catchUp(t, 1<<20)
	wantLogs, wantJournal := p.leader.contents(t)
	gotLogs, gotJournal := p.follower.contents(t)
	if !reflect.DeepEqual(gotJournal, wantJournal) || !reflect.DeepEqual(gotLogs, wantLogs) {
		t.Fatal("the follower's copy differs from its leader after truncating")
	}
	if got, want := p.sink.Epochs.List(), p.source.Epochs.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("epochs %v, the leader's %v", got, want)
	}
}
