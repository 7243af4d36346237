package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/sidecar/group"
	"github.com/voik/voik/sidecar/lease"
)

// A group member (PROTOCOL.md section 8). Every member runs an elector
// on the group's key in JetStream's key-value store and answers pulls on
// its own replication subject. Its role follows the lease:
//
//   - leader (leadership, member_leader.go): captures, journals every run
//     of records, counts what the in-sync set holds durably, acks what is
//     committed, and grows or shrinks the in-sync set;
//   - follower (member_follower.go): pulls the leader's journal and
//     records and holds them exactly as sent, truncating first by leader
//     epoch when it diverged.
//
// Every member in sync (and the leader) answers the API in one queue
// group, up to the committed end it knows (committedView).

// groupDir holds a member's group state inside its data dir: journal,
// epochs, the dir's identity, the committed checkpoint, and an embedded
// NATS server's JetStream files. logstore skips names that start with a
// dot.
const groupDir = ".group"

type member struct {
	s      *Sidecar
	logger *slog.Logger
	name   string // VOIK_GROUP
	self   lease.Member
	key    string // self as the commit and pulls name it
	dir    string

	journal *group.Journal
	epochs  *logstore.Epochs
	base    *group.BaseFile // what the journal no longer holds
	dropper *dropper        // deletes below committed starts
	sink    *group.Sink
	view    *committedView
	kv      *lease.KV
	elector *lease.Elector
	gm      *groupMetrics

	leaseNC, replNC *nats.Conn
	pullSub         *nats.Subscription
	leaderSub       *nats.Subscription // news of a new leader: look at the group's state
	groupSub        *nats.Subscription // <prefix>.GROUP.<group>, while leading
	groupsSub       *nats.Subscription // GROUPS passed on by followers, while leading
	leaveSub        *nats.Subscription // followers that stop, while leading
	retireSub       *nats.Subscription // voik retire, while leading

	running      atomic.Bool   // start has set the elector up
	wake         chan struct{} // the role loop has something to look at
	lead         atomic.Pointer[leadership]
	roleMu       sync.Mutex // the role loop's state below, and stop
	follow       *following
	following    atomic.Bool // follow is running, for readiness
	serving      bool        // the API is subscribed
	unreachable  bool        // the group's state failed to answer within the last lease
	lastStateErr time.Time   // when it last failed
	stopped      bool

	leaderCommitted atomic.Uint64          // the committed offset the leader last told this follower
	pulledInSync    atomic.Bool            // the leader's last answer counted this member in sync
	pulledOK        atomic.Int64           // Unix ns of the last pull the leader answered
	pullFailed      atomic.Int64           // Unix ns of the last pull that failed
	otherLeader     atomic.Pointer[string] // the last other member seen leading
	pulling         atomic.Pointer[pull]   // the follower's pull in flight
	leaderNews      chan struct{}          // a member said it leads now (LeaderSubject)
	checkpointMu    sync.Mutex
	checkpointed    time.Time
}

// openMember opens the group state in the data dir: the journal, the
// epochs and the dir's identity, and names the records of a data dir
// that joins a group for the first time.
func openMember(s *Sidecar, opts logstore.Options) (*member, error) {
	cfg := s.cfg
	dir := filepath.Join(cfg.DataDir, groupDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	id, err := dataDirID(dir)
	if err != nil {
		return nil, err
	}
	m := &member{s: s, logger: s.logger.With("group", cfg.Group), name: cfg.Group, dir: dir,
		self: lease.Member{Instance: cfg.Instance, DataDirID: id}, wake: make(chan struct{}, 1), leaderNews: make(chan struct{}, 1)}
	m.key = m.self.String()
	opts.Retention = logstore.Retention{} // the journal is kept whole (for now)
	opts.HoldRetention, opts.OnRetention = false, nil
	opts.Observer = nil
	if m.journal, err = group.OpenJournal(filepath.Join(dir, "journal"), opts); err != nil {
		return nil, fmt.Errorf("group journal: %w", err)
	}
	if m.epochs, err = logstore.OpenEpochs(filepath.Join(dir, "epochs")); err != nil {
		m.close()
		return nil, fmt.Errorf("group epochs: %w", err)
	}
	if m.base, err = group.OpenBase(filepath.Join(dir, "base")); err != nil {
		m.close()
		return nil, err
	}
	if at := m.base.Get().At; at > m.journal.End() {
		// A snapshot stopped after its base was written: its journal
		// starts there.
		if _, err := m.journal.Log().DropBefore(at); err != nil {
			m.close()
			return nil, fmt.Errorf("group journal: %w", err)
		}
	}
	if m.journal.End() == m.journal.Log().FirstOffset() && len(s.store.Subjects()) > 0 {
		// A data dir that held records before it was a group's: they
		// become the group's (copied if this member leads; replaced by
		// the leader's if it follows).
		named, err := new(group.Named).NameAll(s.store, m.journal)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("naming the data dir's records in the journal: %w", err)
		}
		m.logger.Info("the data dir's records are the group's now", "records", named)
	}
	m.sink = group.NewSink(s.store, m.journal, m.epochs, m.key)
	m.sink.Base = m.base
	m.dropper = newDropper(s.store, m.logger)
	if m.view, err = newCommittedView(m.journal, m.base.Get(), s.store.Has, m.dropper.add, m.readCheckpoint()); err != nil {
		m.close()
		return nil, fmt.Errorf("group journal: %w", err)
	}
	return m, nil
}

// dataDirID is the identity of the data dir, made once: a member whose
// disk was wiped comes back with another, so it rejoins out of sync.
func dataDirID(dir string) (string, error) {
	path := filepath.Join(dir, "id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 8)
	rand.Read(raw)
	id := hex.EncodeToString(raw)
	if err := group.WriteFileSynced(path, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}

// The committed checkpoint: the committed journal offset this member
// knew, written now and then, so that a member that restarts serves
// what was committed before it hears from a leader. An old or missing
// one is safe: it only hides records until a leader tells more.
func (m *member) readCheckpoint() uint64 {
	b, err := os.ReadFile(filepath.Join(m.dir, "committed"))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// checkpoint writes the committed offset, at most once a second unless
// now is set.
func (m *member) checkpoint(now bool) {
	m.checkpointMu.Lock()
	defer m.checkpointMu.Unlock()
	if !now && time.Since(m.checkpointed) < time.Second {
		return
	}
	m.checkpointed = time.Now()
	committed, _ := m.view.committed()
	if err := group.WriteFileSynced(filepath.Join(m.dir, "committed"), []byte(strconv.FormatUint(committed, 10)+"\n")); err != nil {
		m.logger.Warn("cannot write the committed checkpoint", "err", err)
	}
}

func (m *member) close() {
	if m.sink != nil {
		m.sink.Close()
	}
	if m.dropper != nil {
		m.dropper.close()
	}
	m.journal.Close()
}

// groupSettings are what every member of a group must agree on.
type groupSettings struct {
	Subjects []string `json:"subjects"`
	Prefix   string   `json:"api_prefix"`
	Replicas int      `json:"replicas"`
}

// join connects the member to its group's state in JetStream: exit 2
// (a ConfigError) without JetStream, with settings that differ from the
// group's, or when another live member has this instance's name.
func (m *member) join(ctx context.Context) error {
	cfg := m.s.cfg
	for {
		kv, err := lease.NewKV(ctx, m.leaseNC, m.name, 0)
		if err == nil {
			m.kv = kv
			break
		}
		if errors.Is(err, lease.ErrNoJetStream) {
			return &ConfigError{fmt.Errorf("VOIK_GROUP %s: %v", m.name, err)}
		}
		m.logger.Warn("cannot reach the group's state in JetStream yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	mine := groupSettings{Subjects: slices.Sorted(slices.Values(m.s.filters)), Prefix: cfg.APIPrefix, Replicas: cfg.Replicas}
	b, _ := json.Marshal(mine)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	stored, err := m.kv.Settings(sctx, b)
	cancel()
	if err != nil {
		return fmt.Errorf("group %s settings: %w", m.name, err)
	}
	var theirs groupSettings
	if err := json.Unmarshal(stored, &theirs); err != nil {
		return fmt.Errorf("group %s settings %q: %w", m.name, stored, err)
	}
	if diff := settingsDiffer(mine, theirs); diff != "" {
		return &ConfigError{fmt.Errorf("VOIK_GROUP %s: this member's %s; every member of a group needs the same", m.name, diff)}
	}
	if _, err := m.replNC.Request(group.PullSubject(m.name, m.self.Instance), []byte("who"), 500*time.Millisecond); err == nil {
		return &ConfigError{fmt.Errorf("VOIK_INSTANCE %s: another live member of group %s has this name; give each member its own (the pod name)", m.self.Instance, m.name)}
	}
	return nil
}

func settingsDiffer(mine, theirs groupSettings) string {
	switch {
	case !slices.Equal(mine.Subjects, theirs.Subjects):
		return fmt.Sprintf("VOIK_SUBJECTS %s differ from the group's %s", strings.Join(mine.Subjects, ","), strings.Join(theirs.Subjects, ","))
	case mine.Prefix != theirs.Prefix:
		return fmt.Sprintf("VOIK_API_PREFIX %s differs from the group's %s", mine.Prefix, theirs.Prefix)
	case mine.Replicas != theirs.Replicas:
		return fmt.Sprintf("VOIK_REPLICAS %d differs from the group's %d", mine.Replicas, theirs.Replicas)
	}
	return ""
}

// start answers pulls, starts the elector and the role loop. They run
// until stop.
func (m *member) start(ctx context.Context) error {
	cfg := m.s.cfg
	source := &group.Source{
		Store: m.s.store, Journal: m.journal, Epochs: m.epochs, MaxPayload: int(m.replNC.MaxPayload()),
		Leading: m.leading,
		Report: func(member string, durable uint64) (uint64, bool) {
			if l := m.lead.Load(); l != nil {
				return l.report(member, durable)
			}
			c, _ := m.view.committed()
			return c, false
		},
		Committed: m.view.committed,
		Base:      m.base,
	}
	var err error
	if m.pullSub, err = source.Serve(m.replNC, group.PullSubject(m.name, m.self.Instance)); err != nil {
		return err
	}
	m.elector, err = lease.New(m.kv, lease.Config{
		Self:      m.self,
		Lease:     cfg.Lease,
		Bootstrap: true,
		OnChange:  m.changed,
	})
	if err != nil {
		return err
	}
	elector := m.elector
	if m.leaderSub, err = m.replNC.Subscribe(group.LeaderSubject(m.name), func(msg *nats.Msg) {
		if string(msg.Data) != m.self.Instance {
			elector.Look()
			select {
			case m.leaderNews <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		return err
	}
	m.running.Store(true)
	go m.elector.Run(ctx)
	go m.run(ctx)
	go m.trimJournal(ctx)
	return nil
}

// leading is the epoch this member leads in, once its leadership is set
// up, while its lease holds.
func (m *member) leading() (uint64, bool) {
	l := m.lead.Load()
	if l == nil {
		return 0, false
	}
	epoch, ok := m.elector.Valid()
	if !ok || epoch != l.epoch {
		return 0, false
	}
	return epoch, true
}

// changed hears the elector: every change of role, leader or epoch is
// logged with its reason, and the role loop looks.
func (m *member) changed(c lease.Change) {
	m.logger.Info("group role", "role", c.Role.String(), "leader", c.Leader, "epoch", c.Epoch, "reason", c.Reason)
	if c.Role == lease.Leader {
		m.gm.elections.Inc()
	} else if c.Leader != "" && c.Leader != m.self.Instance {
		m.otherLeader.Store(&c.Leader)
	}
	if p := m.pulling.Load(); p != nil && p.from != c.Leader {
		p.cancel() // a pull from a member that no longer leads may never be answered
	}
	m.poke()
}

// pull is the pull in flight: from whom, and how to give up on it.
type pull struct {
	from   string
	cancel context.CancelFunc
}

// lostNATS steps down a leader whose capture or lease connection lost
// its server (it may reconnect to another at once, but what was
// published meanwhile never reached it).
func (m *member) lostNATS(role string) {
	if !m.running.Load() {
		return
	}
	if _, ok := m.elector.Valid(); ok {
		m.elector.Yield("lost its NATS server (" + role + " connection)")
	}
	m.poke()
}

func (m *member) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// run is the role loop: it makes this member's role what the lease says,
// on every change and every quarter of a lease.
func (m *member) run(ctx context.Context) {
	tick := time.NewTicker(max(m.s.cfg.Lease/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		m.settle(ctx)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-tick.C:
		}
	}
}

func (m *member) settle(ctx context.Context) {
	m.roleMu.Lock()
	defer m.roleMu.Unlock()
	if m.stopped {
		return
	}
	epoch, leading := m.elector.Valid()
	if leading && (!m.leaseNC.IsConnected() || !m.s.captureNC.IsConnected()) {
		m.elector.Yield("lost its NATS server")
		epoch, leading = 0, false
		// Its lease held until now, and with it everything committed:
		// it answers on as a follower that knows the last commit, until
		// a leader's answer says otherwise, rather than leaving the
		// API's queue group and coming back a moment later (each change
		// of the queue group is a moment in which NATS may drop a
		// request routed to the member leaving). A leader whose lease
		// lapsed (a pause) gets no such credit.
		m.pulledInSync.Store(true)
		m.pullFailed.Store(time.Now().UnixNano())
	}
	if l := m.lead.Load(); l != nil && (!leading || l.epoch != epoch) {
		m.endLeadership(l, "the lease is no longer held")
	}
	if leading && m.lead.Load() == nil {
		m.stopFollowing()
		if err := m.startLeadership(ctx, epoch); err != nil {
			m.logger.Error("cannot lead: stepping down", "epoch", epoch, "err", err)
			m.elector.StepDown(err.Error())
		}
	}
	if m.lead.Load() == nil && m.follow == nil {
		m.startFollowing(ctx)
	}
	obs := m.elector.Observed()
	m.serveAPI(m.answers())
	m.noteReachable(obs.Err)
	m.gm.observe(m)
}

// noteReachable logs when the group's state stops or starts answering:
// without it no member can lead, so capture stops (the price of never
// having two leaders) until JetStream has its quorum again.
func (m *member) noteReachable(err error) {
	was := m.unreachable
	if err != nil && !errors.Is(err, lease.ErrConflict) {
		m.lastStateErr = time.Now()
	}
	// Back only after a lease without an error: a lagging replica can
	// answer a read while writes still fail.
	m.unreachable = !m.lastStateErr.IsZero() && time.Since(m.lastStateErr) < m.s.cfg.Lease
	switch {
	case m.unreachable && !was:
		m.logger.Error("the group's state in JetStream does not answer (no quorum?): no member can lead, nothing is captured until it does", "err", err)
	case !m.unreachable && was:
		m.logger.Info("the group's state in JetStream answers again")
	}
}

// serveAPI joins or leaves the API's queue group.
func (m *member) serveAPI(on bool) {
	if on == m.serving {
		return
	}
	a := m.s.api
	if on {
		if err := a.subscribe(); err != nil {
			m.logger.Error("cannot subscribe the API", "err", err)
			return
		}
		m.logger.Info("answering the API: in sync")
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.unsubscribe(ctx)
		cancel()
		m.logger.Info("not answering the API: out of sync")
	}
	m.serving = on
}

// sayLeaving tells the leader that this follower stops, and waits a
// moment for it to take note (it pulls no more from here on).
func (m *member) sayLeaving() {
	if _, err := m.replNC.Request(group.LeaveSubject(m.name), []byte(m.key), time.Second); err != nil {
		m.logger.Info("the leader did not take note that this member stops; it is out of sync a lease after its last pull", "err", err)
	}
}

// groupsVia says how the member that NATS gave a GROUPS answers it: the
// leader itself; a follower passes it on to the leader it last saw
// (unless that leader has been silent for two leases: it is gone, and the
// group answers with no leader), so that a group answers once, through
// its leader.
func (m *member) groupsVia() (leader, forward string) {
	if _, ok := m.leading(); ok {
		return m.self.Instance, ""
	}
	obs := m.elector.Observed()
	if obs.State.Leader != "" && obs.State.Leader != m.self.Instance && time.Since(obs.Seen) < 2*m.s.cfg.Lease {
		return obs.State.Leader, group.GroupsSubject(m.name)
	}
	return "", ""
}

// role is this member's role as GET /group names it.
func (m *member) role() lease.Role {
	if _, ok := m.leading(); ok {
		return lease.Leader
	}
	if leader := m.elector.Observed().State.Leader; leader != "" && leader != m.self.Instance {
		return lease.Follower
	}
	return lease.Candidate
}

// ready says whether the member is the leader or an in-sync follower.
func (m *member) ready() bool { return m.answers() }

// answers says whether this member may answer the API now: it leads, or
// the leader counted it in sync in its last answer, within a lease. When
// its pulls fail since (no member leads), it goes on answering, up to
// the last commit it knows, for as long as it keeps trying: but a member
// that was paused or cut off has tried nothing for a while, and answers
// nothing (503) until its next pull tells it where it stands.
func (m *member) answers() bool {
	if _, ok := m.leading(); ok {
		return true
	}
	if !m.following.Load() || !m.pulledInSync.Load() {
		return false
	}
	lease := m.s.cfg.Lease
	ok, failed := m.pulledOK.Load(), m.pullFailed.Load()
	return time.Since(time.Unix(0, ok)) < lease || (failed > ok && time.Since(time.Unix(0, failed)) < lease)
}

// stop ends the member's part: a leader commits what is in flight and
// hands the lead to the in-sync follower furthest ahead, so that a
// rolling restart costs a round trip instead of a lease.
func (m *member) stop() {
	m.roleMu.Lock()
	defer m.roleMu.Unlock()
	m.stopped = true
	if l := m.lead.Load(); l != nil {
		l.finish(5 * time.Second)
		if to := l.successor(); to != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			served, _ := m.view.committed() // what readers may have been given
			if err := m.elector.HandOver(ctx, to, served); err != nil {
				m.logger.Warn("cannot hand over the lead; the others take it after the lease", "to", to, "err", err)
			} else {
				m.logger.Info("handed over the lead", "to", to, "committed", served)
				// The others look now: the successor takes the lead in
				// a round trip, and pulls in flight here are not waited for.
				if err := m.replNC.Publish(group.LeaderSubject(m.name), []byte(m.self.Instance)); err != nil {
					m.logger.Warn("cannot tell the others of the handover; they see it at their next look", "err", err)
				}
			}
			cancel()
		}
		m.endLeadership(l, "shutting down")
	}
	following := m.follow != nil
	m.stopFollowing()
	if following {
		m.sayLeaving()
	}
	if m.leaderSub != nil {
		m.leaderSub.Unsubscribe()
	}
	if m.pullSub != nil {
		m.pullSub.Drain() // pulls already here are answered: not the leader
	}
	m.checkpoint(true)
}

// ResizeGroup stores replicas as the size of group (VOIK_REPLICAS), so
// that members started with it from then on are accepted; members still
// running keep theirs until they restart. It returns the size stored
// before. The size only sets the floor of the in-sync set (a majority of
// it): commits still need every in-sync member, and only in-sync members
// may lead, so changing it loses nothing committed.
func ResizeGroup(ctx context.Context, nc *nats.Conn, name string, replicas int) (int, error) {
	if replicas < 1 || replicas > 7 {
		return 0, fmt.Errorf("%d members: a group has 1 to 7", replicas)
	}
	kv, err := lease.NewKV(ctx, nc, name, 0)
	if err != nil {
		return 0, err
	}
	var before groupSettings
	_, err = kv.ChangeSettings(ctx, func(stored []byte) ([]byte, error) {
		if err := json.Unmarshal(stored, &before); err != nil {
			return nil, fmt.Errorf("group %s settings %q: %w", name, stored, err)
		}
		next := before
		next.Replicas = replicas
		return json.Marshal(next)
	})
	if errors.Is(err, lease.ErrNotFound) {
		return 0, fmt.Errorf("group %s has no settings stored: no member has ever joined it", name)
	}
	return before.Replicas, err
}

// RetireMember asks the leader of group to retire instance for good (see
// leadership.hearRetire) and returns its answer.
func RetireMember(nc *nats.Conn, name, instance string, timeout time.Duration) (RetireReply, error) {
	var reply RetireReply
	msg, err := nc.Request(group.RetireSubject(name), []byte(instance), timeout)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
			return reply, fmt.Errorf("no leader of group %s answered (none elected, or no quorum): %w", name, err)
		}
		return reply, err
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return reply, fmt.Errorf("the leader's answer %q: %w", msg.Data, err)
	}
	if reply.Error != "" {
		return reply, fmt.Errorf("group %s did not retire %s: %s", name, instance, reply.Error)
	}
	return reply, nil
}
