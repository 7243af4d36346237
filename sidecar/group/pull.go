package group

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/logstore"
)

// Copying over NATS: a follower pulls the leader's journal, in batches,
// by request/reply on the group's replication subject (under $VOIK.,
// which voik never stores), with a long poll when it has caught up, as
// Kafka's and Liftbridge's followers fetch. Every message carries the
// protocol version; a member that meets one it does not know says so and
// copies nothing, it never guesses.

// ProtocolVersion is the version of the messages below.
//
// Version 2 added retention: start markers and pointers whose record is
// gone (WireRecord.Drop, Start). A member of version 1 would take them
// for empty records, so it is refused.
const ProtocolVersion = 2

// Reply codes of a pull.
const (
	CodeOK         = 0
	CodeNotLeader  = 409 // the member asked does not lead (or knows a newer epoch than this one's)
	CodeVersion    = 426 // a protocol version the member asked does not speak
	CodeBehind     = 416 // the leader's journal no longer goes back that far: take a snapshot
	CodeReadFailed = 500
)

// PullSubject is where member instance of group answers pulls while it
// leads: a follower pulls from the leader the group's state names, and a
// member that no longer leads says so (or is fenced by its epoch).
func PullSubject(group, instance string) string { return "$VOIK.REPL." + group + ".PULL." + instance }

// LeaderSubject is where a member that has just taken the lead of group
// says so (its instance name, no reply): the others look at the group's
// state at once rather than at their next round, so that a handover
// costs a round trip, not a fraction of the lease.
func LeaderSubject(group string) string { return "$VOIK.REPL." + group + ".LEADER" }

// LeaveSubject is where a follower that stops (SIGTERM) tells the leader
// so, with its key as the body: the leader takes it out of the in-sync set
// at its next record rather than a lease later, so that a rolling restart
// does not hold the acks up for the length of each follower's restart.
func LeaveSubject(group string) string { return "$VOIK.REPL." + group + ".LEAVE" }

// RetireSubject is where the leader takes an operator's word that a
// member (its instance name as the body) is gone for good (voik retire):
// it leaves the in-sync set and the group's list of members.
func RetireSubject(group string) string { return "$VOIK.REPL." + group + ".RETIRE" }

// GroupsSubject is where a group's leader answers the API's GROUPS that a
// follower passes on (with the requester's reply subject), so that a group
// answers GROUPS through its leader, once.
func GroupsSubject(group string) string { return "$VOIK.REPL." + group + ".GROUPS" }

// PullRequest asks for the leader's journal from From on.
type PullRequest struct {
	Version int    `msgpack:"v"`
	Member  string `msgpack:"member"`
	// Epoch is the latest leader epoch the follower holds durably: a
	// leader whose own is older has been replaced, and says so.
	Epoch uint64 `msgpack:"epoch"`
	From  uint64 `msgpack:"from"`
	// Committed is the committed offset the follower knows: a long poll
	// also ends when the leader's moves past it, so that followers learn
	// of a commit at once and serve reads up to it.
	Committed uint64 `msgpack:"committed,omitempty"`
	// Durable: below it the follower holds the journal durably; the
	// leader commits by it.
	Durable uint64 `msgpack:"durable"`
	// Chunk is the next chunk wanted of the record at From, when it came
	// in chunks (0: from its start).
	Chunk    int `msgpack:"chunk,omitempty"`
	MaxBytes int `msgpack:"max_bytes"`
	WaitMs   int `msgpack:"wait_ms,omitempty"`

	// A snapshot (Sink.Snapshot) asks for the subjects' ranges at a
	// committed journal offset, a page at a time (List, At: 0 the first
	// time, After: the last subject of the previous page), then reads
	// each subject's records (Read, from From up to Until).
	List  bool   `msgpack:"list,omitempty"`
	At    uint64 `msgpack:"at,omitempty"`
	After string `msgpack:"after,omitempty"`
	Read  string `msgpack:"read,omitempty"`
	Until uint64 `msgpack:"until,omitempty"`
}

// SubjectRange is a subject's log at a snapshot's journal offset: its
// records are [First, End) (First as the leader's start markers set it;
// a read from below the leader's first offset is told it, Drop).
type SubjectRange struct {
	Subject string `msgpack:"s"`
	First   uint64 `msgpack:"f"`
	End     uint64 `msgpack:"e"`
}

// PullReply is the leader's answer.
type PullReply struct {
	Version   int    `msgpack:"v"`
	Code      int    `msgpack:"code,omitempty"`
	Error     string `msgpack:"error,omitempty"`
	Epoch     uint64 `msgpack:"epoch"`
	Committed uint64 `msgpack:"committed"`
	// InSync says whether the leader counts the follower in its in-sync
	// set: a follower answers reads only while its last pull said so.
	InSync bool `msgpack:"in_sync,omitempty"`
	// End is the leader's journal end as it answered: a follower whose
	// journal reaches it has caught up.
	End uint64 `msgpack:"end,omitempty"`
	// Records from From on, in journal order.
	Records []WireRecord `msgpack:"records"`
	// Epochs are the leader's epochs newer than the follower's, each
	// with the journal offset it began at: the follower holds them
	// durably before it applies a record of theirs.
	Epochs []logstore.EpochStart `msgpack:"epochs,omitempty"`
	// Diverging, when set, says that the follower's journal runs past
	// where its latest epoch ended on the leader (KIP-320): it truncates
	// (TruncationPoint) and pulls again; no records come with it.
	Diverging *Divergence `msgpack:"diverging,omitempty"`
	// First is the leader's first journal offset, with CodeBehind.
	First uint64 `msgpack:"first,omitempty"`
	// A List's answer: the snapshot's journal offset, a page of ranges,
	// and whether more follow.
	At       uint64         `msgpack:"at,omitempty"`
	Subjects []SubjectRange `msgpack:"subjects,omitempty"`
	More     bool           `msgpack:"more,omitempty"`
	// A Read's answer when From is below the subject's first offset: the
	// first offset, and records from there.
	Drop uint64 `msgpack:"drop,omitempty"`

	// batch, on the leader, is the records of a pull encoded straight
	// from the logs (wire.go), sent in place of Records. Its encoder
	// writes Version, Epoch, Committed, InSync, End and Epochs with them:
	// a field set beside a batch must be added there too.
	batch *wireBatch
}

// Divergence is the leader's answer for the follower's latest epoch: the
// latest epoch the leader holds that is not above it, and where that
// epoch ended on the leader; Found false when it holds none.
type Divergence struct {
	Held  logstore.EpochStart `msgpack:"held"`
	End   uint64              `msgpack:"end"`
	Found bool                `msgpack:"found"`
}

// WireRecord is one record as copied. A record too large for one reply
// comes alone, in Chunks pieces of Data, one a pull: Chunk is this one.
type WireRecord struct {
	Journal   uint64              `msgpack:"j"`
	Journaled int64               `msgpack:"jt"`
	Subject   string              `msgpack:"s"`
	Offset    uint64              `msgpack:"o"`
	Timestamp int64               `msgpack:"t"`
	Headers   map[string][]string `msgpack:"h,omitempty"`
	Data      []byte              `msgpack:"d"`
	Chunk     int                 `msgpack:"c,omitempty"`
	Chunks    int                 `msgpack:"n,omitempty"`
	// Drop and Start are an Entry's: no record, the leader holds none of
	// Subject below Drop.
	Drop  uint64 `msgpack:"x,omitempty"`
	Start bool   `msgpack:"st,omitempty"`
}

// replyOverhead is room kept under max_payload for a reply's fields
// other than record data and headers.
const replyOverhead = 1024

// Source answers pulls while its member leads.
type Source struct {
	Store      *logstore.Store
	Journal    *Journal
	Epochs     *logstore.Epochs
	MaxPayload int
	// Leading is the epoch this member leads in, and false while it does
	// not: then pulls get CodeNotLeader.
	Leading func() (epoch uint64, ok bool)
	// Report takes a follower's durable journal end and returns the
	// committed offset, and whether the leader counts the follower in
	// sync.
	Report func(member string, durable uint64) (committed uint64, inSync bool)
	// Committed, if set, returns the committed offset and a channel
	// closed when it next moves: a long poll ends on either a new record
	// or a commit past the follower's.
	Committed func() (uint64, <-chan struct{})
	// Base is what the journal no longer holds (nil: it holds it all).
	Base *BaseFile

	listMu sync.Mutex
	listed *listing // the last snapshot listing, for its next pages
}

// Serve answers pulls on subject (PullSubject) on nc until the
// subscription is drained. Each pull is answered on a goroutine of its
// own, so that a long poll holds up no other follower.
func (s *Source) Serve(nc *nats.Conn, subject string) (*nats.Subscription, error) {
	return nc.Subscribe(subject, func(msg *nats.Msg) {
		go func() {
			reply := s.answer(msg.Data)
			var body []byte
			var err error
			if reply.batch != nil {
				body, err = reply.batch.reply(&reply, s.MaxPayload)
			} else {
				body, err = s.encode(&reply)
			}
			if err == nil {
				err = msg.Respond(body) // copies body: the batch may go back
			}
			reply.batch.release()
			if err != nil {
				// Never leave a follower waiting for its timeout: tell it.
				failed, _ := msgpack.Marshal(PullReply{Version: ProtocolVersion, Code: CodeReadFailed, Epoch: reply.Epoch,
					Error: "the reply could not be sent: " + err.Error()})
				msg.Respond(failed)
			}
		}()
	})
}

// encode marshals reply, halving its records while it would not fit
// under max_payload (WireSize is an estimate; this is the guarantee).
func (s *Source) encode(reply *PullReply) ([]byte, error) {
	for {
		body, err := msgpack.Marshal(reply)
		if err != nil || len(body) <= s.MaxPayload || len(reply.Records) <= 1 {
			return body, err
		}
		reply.Records = reply.Records[:len(reply.Records)/2]
	}
}

// answer is the reply to one pull.
func (s *Source) answer(body []byte) PullReply {
	var req PullRequest
	if err := msgpack.Unmarshal(body, &req); err != nil {
		return PullReply{Version: ProtocolVersion, Code: CodeVersion, Error: "not a pull request: " + err.Error()}
	}
	if req.Version != ProtocolVersion {
		return PullReply{Version: ProtocolVersion, Code: CodeVersion,
			Error: fmt.Sprintf("pull of protocol version %d; this member speaks %d", req.Version, ProtocolVersion)}
	}
	epoch, leading := s.Leading()
	switch {
	case !leading:
		return PullReply{Version: ProtocolVersion, Code: CodeNotLeader, Error: "not the leader"}
	case req.Epoch > epoch:
		// The follower has seen a newer leader: this one is fenced.
		return PullReply{Version: ProtocolVersion, Code: CodeNotLeader, Epoch: epoch,
			Error: fmt.Sprintf("epoch %d is older than the follower's %d", epoch, req.Epoch)}
	}
	switch {
	case req.List:
		return s.list(req, epoch)
	case req.Read != "":
		return s.read(req, epoch)
	}
	reply := PullReply{Version: ProtocolVersion, Epoch: epoch, End: s.Journal.End()}
	held, end, found := s.Epochs.EndOffsetFor(req.Epoch, s.Journal.End())
	if req.From > 0 && (!found || req.From > end) {
		reply.Diverging = &Divergence{Held: held, End: end, Found: found}
		return reply
	}
	if first := s.Journal.Log().FirstOffset(); req.From < first {
		reply.Code, reply.First = CodeBehind, first
		reply.Error = fmt.Sprintf("the journal starts at %d, past %d: take a snapshot", first, req.From)
		return reply
	}
	// Only a follower that does not diverge counts towards the commit:
	// what it holds is the leader's.
	reply.Committed, reply.InSync = s.Report(req.Member, req.Durable)
	for _, e := range s.Epochs.List() {
		if e.Epoch > req.Epoch {
			reply.Epochs = append(reply.Epochs, e)
		}
	}
	if req.From >= s.Journal.End() && req.WaitMs > 0 && reply.Committed <= req.Committed {
		s.longPoll(req)
		if _, still := s.Leading(); !still {
			return PullReply{Version: ProtocolVersion, Code: CodeNotLeader, Epoch: epoch, Error: "stopped leading during the long poll"}
		}
		if s.Committed != nil {
			committed, _ := s.Committed()
			reply.Committed = max(reply.Committed, committed)
		}
	}
	reply.End = s.Journal.End()
	if req.From >= reply.End {
		return reply
	}
	budget := min(req.MaxBytes, s.MaxPayload-replyOverhead)
	if req.Chunk == 0 {
		batch, ok, err := collectWire(s.Store, s.Journal, req.From, 1000, budget)
		switch {
		case ok && batch.count == 0:
			batch.release()
			if err != nil {
				reply.Code, reply.Error = CodeReadFailed, err.Error()
			}
			return reply
		case ok:
			reply.batch = batch
			return reply
		}
	}
	// The record at From goes in chunks, alone.
	entries, err := Collect(s.Store, s.Journal, req.From, 1, budget)
	if err != nil && len(entries) == 0 {
		reply.Code, reply.Error = CodeReadFailed, err.Error()
		return reply
	}
	for _, e := range entries {
		reply.Records = append(reply.Records, wire(e, budget, req.Chunk))
	}
	return reply
}

// wire is e as sent: alone and too large for budget, the piece asked for.
func wire(e Entry, budget, chunk int) WireRecord {
	w := WireRecord{Journal: e.Journal, Journaled: e.Journaled, Subject: e.Subject, Offset: e.Offset, Timestamp: e.Timestamp, Headers: e.Headers, Data: e.Data,
		Drop: e.Drop, Start: e.Start}
	if size := WireSize(e.Subject, e.Headers, e.Data); size > budget {
		piece := max(budget-WireSize(e.Subject, e.Headers, nil), 1)
		w.Chunks = (len(e.Data) + piece - 1) / piece
		w.Chunk = min(chunk, w.Chunks-1)
		w.Data = e.Data[w.Chunk*piece : min(len(e.Data), (w.Chunk+1)*piece)]
	}
	return w
}

// longPoll waits, up to req's wait, for a record past req.From or a
// commit past req.Committed.
func (s *Source) longPoll(req PullRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.WaitMs)*time.Millisecond)
	defer cancel()
	if s.Committed != nil {
		committed, moved := s.Committed()
		if committed > req.Committed {
			return
		}
		go func() {
			select {
			case <-moved:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	s.Journal.Log().WaitFor(ctx, req.From)
}

// Errors of a pull.
var (
	// ErrStaleLeader: the reply came from a leader of an older epoch than
	// the follower holds; nothing of it was applied.
	ErrStaleLeader = errors.New("group: reply from a leader of an older epoch")
	// ErrNotLeader: the member asked does not lead now.
	ErrNotLeader = errors.New("group: not the leader")
	// ErrVersion: the other member speaks another protocol version.
	ErrVersion = errors.New("group: replication protocol version not spoken here")
)

// DivergedError says that a follower must truncate its journal, and the
// records it points at, to Offset before it copies again (OK false: to
// nothing; it starts afresh).
type DivergedError struct {
	Offset uint64
	OK     bool
}

func (e *DivergedError) Error() string {
	if !e.OK {
		return "group: nothing in common with the leader: start the copy afresh"
	}
	return fmt.Sprintf("group: diverged from the leader: truncate the journal to %d", e.Offset)
}

// Is makes errors.Is(err, ErrDiverged) true.
func (e *DivergedError) Is(target error) bool { return target == ErrDiverged }

// Sink is a follower's side of the copy.
type Sink struct {
	Store   *logstore.Store
	Journal *Journal
	Epochs  *logstore.Epochs
	Member  string
	// Fence is the newest epoch this member has seen named in the
	// group's state: a reply from an older epoch is refused even before
	// that epoch is in Epochs (which holds only epochs with records).
	Fence uint64
	// Committed is the committed offset this member knows, sent so that
	// the leader's long poll ends when it moves.
	Committed uint64
	// InSync is what the leader said of this member in its last answer
	// that was not a divergence.
	InSync bool
	// chunks is a large record being received, piece by piece; chunk is
	// the piece to ask for next.
	chunks []byte
	chunk  int
	// leaderEnd is the leader's journal end in its last answer.
	leaderEnd uint64
	// Base is what this member's journal no longer holds; a snapshot
	// replaces it.
	Base *BaseFile
	// mu guards durable and syncErr, which the sync worker moves.
	mu sync.Mutex
	// durable is the journal offset below which this member holds every
	// pointer and every record they point at durably: what it reports.
	durable uint64
	syncErr error // a batch could not be made durable: durable moves no more
	// ahead is a pull sent before the last batch was applied (ahead.go).
	ahead *ahead
	// syncing takes applied batches, in order, to the worker that waits
	// for their durability, so that the next pull need not wait for it.
	syncing  chan syncBatch
	inflight sync.WaitGroup
	start    sync.Once
}

// syncBatch is an applied batch waiting to be durable: the last offset of
// each subject in it, and its last journal offset.
type syncBatch struct {
	last map[string]uint64
	end  uint64
}

// Pull asks the leader once for what comes after the follower's journal
// end, applies it, and returns how many records it applied and the
// committed offset the leader told. It holds an epoch that the leader
// has moved to durably (Epochs) before it applies anything of it, and
// refuses a reply from an older epoch than it holds.
func (k *Sink) Pull(ctx context.Context, nc *nats.Conn, subject string, maxBytes int, wait time.Duration) (int, uint64, error) {
	k.mu.Lock()
	syncErr := k.syncErr
	k.mu.Unlock()
	if syncErr != nil {
		return 0, 0, fmt.Errorf("group: copied records could not be made durable: %w", syncErr)
	}
	msg, err, sent := k.takeAhead(ctx, subject, k.Journal.End())
	if !sent {
		if k.Journal.End() >= k.leaderEnd {
			// Caught up: the next pull may wait in the leader, and the
			// leader commits by what it reports, so report what the last
			// batch made durable (behind, pulls go out while it syncs).
			k.Settle()
		}
		msg, err = nc.RequestWithContext(ctx, subject, k.request(maxBytes, wait))
	}
	if err != nil {
		return 0, 0, err
	}
	held, _ := k.Epochs.Latest()
	var reply PullReply
	if err := decodePullReply(msg.Data, &reply); err != nil {
		return 0, 0, fmt.Errorf("group: pull reply: %w", err)
	}
	switch {
	case reply.Version != ProtocolVersion || reply.Code == CodeVersion:
		return 0, 0, fmt.Errorf("%w: the leader speaks version %d (%s), this member %d", ErrVersion, reply.Version, reply.Error, ProtocolVersion)
	case reply.Code == CodeNotLeader:
		return 0, 0, fmt.Errorf("%w: %s", ErrNotLeader, reply.Error)
	case reply.Code == CodeBehind:
		k.InSync = false
		return 0, 0, fmt.Errorf("%w: %s", ErrBehind, reply.Error)
	case reply.Code != CodeOK:
		return 0, 0, fmt.Errorf("group: pull: %d %s", reply.Code, reply.Error)
	case reply.Epoch < max(held.Epoch, k.Fence):
		return 0, 0, fmt.Errorf("%w: epoch %d, this member holds %d and has seen %d", ErrStaleLeader, reply.Epoch, held.Epoch, k.Fence)
	}
	k.Committed = max(k.Committed, reply.Committed)
	if d := reply.Diverging; d != nil {
		k.InSync = false
		point, ok := TruncationPoint(k.Epochs, k.Journal.End(), d.Held, d.End, d.Found)
		return 0, 0, &DivergedError{Offset: point, OK: ok}
	}
	k.InSync = reply.InSync
	k.leaderEnd = reply.End
	// The leader's newer epochs, durable before a record of theirs is
	// applied (a follower acts on an epoch only once it is on disk).
	for _, e := range reply.Epochs {
		if latest, _ := k.Epochs.Latest(); e.Epoch > latest.Epoch {
			if err := k.Epochs.Assign(e.Epoch, e.Start); err != nil {
				return 0, 0, err
			}
		}
	}
	entries, err := k.entries(reply.Records)
	if err != nil || len(entries) == 0 {
		return 0, reply.Committed, err
	}
	if next := entries[len(entries)-1].Journal + 1; reply.End > next && k.chunk == 0 {
		// The leader holds more: ask for it now, and apply this batch
		// while it comes.
		req := k.requestFrom(next, maxBytes, 0)
		k.sendAhead(nc, subject, req)
	}
	n, err := Apply(k.Store, k.Journal, entries)
	if n > 0 {
		k.makeDurable(entries[:n])
	}
	return n, reply.Committed, err
}

// request is the body of a pull from the journal's end.
func (k *Sink) request(maxBytes int, wait time.Duration) []byte {
	body, _ := msgpack.Marshal(k.requestFrom(k.Journal.End(), maxBytes, wait))
	return body
}

// requestFrom is a pull from journal offset from.
func (k *Sink) requestFrom(from uint64, maxBytes int, wait time.Duration) PullRequest {
	held, _ := k.Epochs.Latest()
	return PullRequest{Version: ProtocolVersion, Member: k.Member, Epoch: held.Epoch, From: from, Committed: k.Committed,
		Durable: k.Durable(), Chunk: k.chunk, MaxBytes: maxBytes, WaitMs: int(wait / time.Millisecond)}
}

// NewSink is the copy side of a member whose journal and subject logs
// are durable as recovered: what they hold counts as durable.
func NewSink(store *logstore.Store, journal *Journal, epochs *logstore.Epochs, member string) *Sink {
	return &Sink{Store: store, Journal: journal, Epochs: epochs, Member: member, durable: journal.End()}
}

// Durable is the journal offset below which this member holds every
// pointer and record durably.
func (k *Sink) Durable() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return min(k.durable, k.Journal.End())
}

// makeDurable hands an applied batch to the sync worker, which counts it
// in what this member reports once its records and their pointers are
// durable: the leader commits by that report, so it must never run ahead
// of the subjects' logs, which sync apart from the journal. The next pull
// goes out meanwhile (one batch syncs while the next is carried); at most
// two batches wait.
func (k *Sink) makeDurable(entries []Entry) {
	k.start.Do(func() {
		k.syncing = make(chan syncBatch, 1)
		go k.syncWorker()
	})
	b := syncBatch{last: map[string]uint64{}, end: entries[len(entries)-1].Journal}
	for _, e := range entries {
		if e.record() {
			b.last[e.Subject] = e.Offset
		}
	}
	// Every log's sync starts now, side by side: the worker's waits, one
	// after another, would otherwise start them one after another.
	for subject := range b.last {
		k.Store.RequestSync(subject)
	}
	k.Journal.Log().RequestSync()
	k.inflight.Add(1)
	k.syncing <- b
}

func (k *Sink) syncWorker() {
	for b := range k.syncing {
		err := k.waitDurable(b)
		k.mu.Lock()
		if err != nil && k.syncErr == nil {
			k.syncErr = err
		}
		if k.syncErr == nil {
			k.durable = max(k.durable, b.end+1)
		}
		k.mu.Unlock()
		k.inflight.Done()
	}
}

func (k *Sink) waitDurable(b syncBatch) error {
	ctx := context.Background() // the logs end the wait when they close
	for subject, offset := range b.last {
		if err := k.Store.WaitDurable(ctx, subject, offset); err != nil {
			return err
		}
	}
	return k.Journal.Log().WaitDurable(ctx, b.end)
}

// Settle waits until every batch applied so far has been made durable (or
// could not be).
func (k *Sink) Settle() { k.inflight.Wait() }

// Close stops the sync worker once it has finished; the Sink pulls no
// more.
func (k *Sink) Close() {
	k.dropAhead()
	k.inflight.Wait()
	k.start.Do(func() {}) // no worker to start after this
	if k.syncing != nil {
		close(k.syncing)
	}
}

// entries turns a reply's records into entries to apply, putting a
// record that came in chunks back together.
func (k *Sink) entries(records []WireRecord) ([]Entry, error) {
	entries := make([]Entry, 0, len(records))
	for _, w := range records {
		e := Entry{Journal: w.Journal, Journaled: w.Journaled, Subject: w.Subject, Offset: w.Offset, Timestamp: w.Timestamp, Headers: w.Headers, Data: w.Data,
			Drop: w.Drop, Start: w.Start}
		if w.Chunks > 0 {
			if len(records) != 1 {
				return nil, errors.New("group: a chunked record with others in one reply")
			}
			if w.Chunk != k.chunk {
				// Not the piece asked for (a new leader, say): start over.
				k.chunks, k.chunk = nil, 0
				return nil, nil
			}
			k.chunks = append(k.chunks, w.Data...)
			k.chunk = w.Chunk + 1
			if w.Chunk+1 < w.Chunks {
				return nil, nil // more to come
			}
			e.Data, k.chunks, k.chunk = k.chunks, nil, 0
		}
		entries = append(entries, e)
	}
	return entries, nil
}
