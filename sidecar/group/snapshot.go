package group

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/logstore"
)

// ErrBehind: the follower's journal ends below the leader's first journal
// offset (the leader trimmed it); it takes a snapshot (Sink.Snapshot).
var ErrBehind = errors.New("group: the leader's journal no longer goes back to this member's end")

// readBatch bounds the records of one snapshot read.
const readBatch = 1000

// list answers a snapshot's List: a page of the subjects' ranges at a
// committed journal offset (the committed offset now, when At is 0), in
// subject order after req.After, and the leader's epochs that began at
// or before it.
func (s *Source) list(req PullRequest, epoch uint64) PullReply {
	reply := PullReply{Version: ProtocolVersion, Epoch: epoch, At: req.At}
	if reply.At == 0 {
		reply.At = s.Journal.End()
		if s.Committed != nil {
			reply.At, _ = s.Committed()
		}
	}
	base := &emptyBase
	if s.Base != nil {
		base = s.Base.Get()
	}
	if reply.At < max(base.At, s.Journal.Log().FirstOffset()) || reply.At > s.Journal.End() {
		reply.Code, reply.Error = CodeBehind, fmt.Sprintf("journal offset %d is no longer held here: start the snapshot again", reply.At)
		return reply
	}
	at, err := s.listingAt(base, reply.At)
	if err != nil {
		reply.Code, reply.Error = CodeReadFailed, err.Error()
		return reply
	}
	first, found := slices.BinarySearch(at.subjects, req.After)
	if found {
		first++
	}
	size := 0
	for _, subject := range at.subjects[first:] {
		if size += len(subject) + 32; size > s.MaxPayload/2 && len(reply.Subjects) > 0 {
			break
		}
		reply.Subjects = append(reply.Subjects, SubjectRange{Subject: subject, First: min(at.folded.Starts[subject], at.folded.Ends[subject]), End: at.folded.Ends[subject]})
	}
	reply.More = first+len(reply.Subjects) < len(at.subjects)
	for _, e := range s.Epochs.List() {
		if e.Epoch > req.Epoch && e.Start <= reply.At {
			reply.Epochs = append(reply.Epochs, e)
		}
	}
	return reply
}

// emptyBase is the base of a Source without one: the journal holds it all.
var emptyBase Base

// listing is the subjects' ranges at a journal offset, kept for the
// pages after the first of a snapshot's List: each page would otherwise
// read the journal from the base to that offset again.
type listing struct {
	base     *Base // the base it was folded from
	folded   *Base // the base and the journal up to the offset
	subjects []string
}

// listingAt is the listing at journal offset at, from base.
func (s *Source) listingAt(base *Base, at uint64) (*listing, error) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if l := s.listed; l != nil && l.base == base && l.folded.At == at {
		return l, nil
	}
	folded, err := base.readJournal(s.Journal, at)
	if err != nil {
		return nil, err
	}
	s.listed = &listing{base: base, folded: folded, subjects: slices.Sorted(maps.Keys(folded.Ends))}
	return s.listed, nil
}

// read answers a snapshot's Read: records of req.Read from req.From (or
// its first offset, told in Drop, when that is higher), below req.Until.
func (s *Source) read(req PullRequest, epoch uint64) PullReply {
	reply := PullReply{Version: ProtocolVersion, Epoch: epoch}
	budget := min(req.MaxBytes, s.MaxPayload-replyOverhead)
	err := s.Store.View(req.Read, func(l *logstore.Log) error {
		from := req.From
		if first := l.FirstOffset(); from < first {
			reply.Drop, from = first, first
		}
		if from >= req.Until {
			return nil
		}
		records, err := l.Read(from, int(min(req.Until-from, readBatch)))
		size := 0
		for i, r := range records {
			if size += WireSize(req.Read, r.Headers, r.Data); i > 0 && size > budget {
				break
			}
			e := Entry{Subject: req.Read, Offset: r.Offset, Timestamp: r.Timestamp, Headers: r.Headers, Data: r.Data}
			reply.Records = append(reply.Records, wire(e, budget, req.Chunk))
		}
		if len(records) > 0 {
			return nil
		}
		return err
	})
	if err != nil {
		reply.Code, reply.Error = CodeReadFailed, err.Error()
	}
	return reply
}

// ask sends one request of a snapshot to the leader and checks its
// answer as Pull does.
func (k *Sink) ask(ctx context.Context, nc *nats.Conn, subject string, req PullRequest) (PullReply, error) {
	held, _ := k.Epochs.Latest()
	req.Version, req.Member, req.Epoch = ProtocolVersion, k.Member, held.Epoch
	body, err := msgpack.Marshal(req)
	if err != nil {
		return PullReply{}, err
	}
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return PullReply{}, err
	}
	var reply PullReply
	if err := msgpack.Unmarshal(msg.Data, &reply); err != nil {
		return PullReply{}, fmt.Errorf("group: snapshot reply: %w", err)
	}
	switch {
	case reply.Version != ProtocolVersion || reply.Code == CodeVersion:
		return reply, fmt.Errorf("%w: the leader speaks version %d (%s), this member %d", ErrVersion, reply.Version, reply.Error, ProtocolVersion)
	case reply.Code == CodeNotLeader:
		return reply, fmt.Errorf("%w: %s", ErrNotLeader, reply.Error)
	case reply.Code != CodeOK:
		return reply, fmt.Errorf("group: snapshot: %d %s", reply.Code, reply.Error)
	case reply.Epoch < max(held.Epoch, k.Fence):
		return reply, fmt.Errorf("%w: epoch %d, this member holds %d and has seen %d", ErrStaleLeader, reply.Epoch, held.Epoch, k.Fence)
	}
	return reply, nil
}

// Snapshot brings a follower whose journal ends below its leader's
// first journal offset up to a committed journal offset of the leader's:
// each subject's log copied up to where it ended there (and started, by
// the leader's retention), made durable, then the leader's epochs up to
// there, then the base (Base) saying so, and the journal started afresh
// at that offset. It returns the offset and how many records it copied.
// Stopped part way, it leaves records no pointer names, which the next
// snapshot or copy finds the same or replaces.
func (k *Sink) Snapshot(ctx context.Context, nc *nats.Conn, subject string, maxBytes int) (uint64, int, error) {
	k.dropAhead()
	k.Settle()
	var ranges []SubjectRange
	var epochs []logstore.EpochStart
	var at uint64
	for after := ""; ; {
		reply, err := k.ask(ctx, nc, subject, PullRequest{List: true, At: at, After: after})
		if err != nil {
			return 0, 0, err
		}
		at, epochs = reply.At, append(epochs, reply.Epochs...)
		ranges = append(ranges, reply.Subjects...)
		if !reply.More || len(reply.Subjects) == 0 {
			break
		}
		after = reply.Subjects[len(reply.Subjects)-1].Subject
	}
	copied := 0
	base := &Base{At: at, Ends: map[string]uint64{}, Starts: map[string]uint64{}}
	for _, r := range ranges {
		n, err := k.copySubject(ctx, nc, subject, r, maxBytes)
		copied += n
		if err != nil {
			return 0, copied, fmt.Errorf("group: snapshot of %q: %w", r.Subject, err)
		}
		if r.End > r.First {
			if err := k.Store.WaitDurable(ctx, r.Subject, r.End-1); err != nil {
				return 0, copied, err
			}
		}
		base.Ends[r.Subject] = r.End
		if r.First > 0 {
			base.Starts[r.Subject] = r.First
		}
	}
	for _, e := range epochs {
		if latest, _ := k.Epochs.Latest(); e.Epoch > latest.Epoch && e.Start >= latest.Start {
			if err := k.Epochs.Assign(e.Epoch, e.Start); err != nil {
				return 0, copied, err
			}
		}
	}
	if err := k.Base.set(base); err != nil {
		return 0, copied, err
	}
	if _, err := k.Journal.Log().DropBefore(at); err != nil {
		return 0, copied, err
	}
	k.mu.Lock()
	k.durable = at
	k.mu.Unlock()
	k.leaderEnd, k.Committed = 0, max(k.Committed, at)
	return at, copied, nil
}

// copySubject makes this member's log of r.Subject hold the leader's
// records [r.First, r.End): what it holds below r.First deleted, past
// r.End dropped (no pointer here names them), the rest read from the
// leader.
func (k *Sink) copySubject(ctx context.Context, nc *nats.Conn, subject string, r SubjectRange, maxBytes int) (int, error) {
	if _, err := k.Store.DropBefore(r.Subject, r.First); err != nil {
		return 0, err
	}
	end := r.First
	k.Store.View(r.Subject, func(l *logstore.Log) error { end = max(l.EndOffset(), r.First); return nil })
	if end > r.End {
		if _, err := k.Store.TruncateTo(r.Subject, r.End); err != nil && !errors.Is(err, logstore.ErrTruncateBelowFirst) {
			return 0, err
		} else if err != nil {
			if _, err := k.Store.DropBefore(r.Subject, r.End); err != nil {
				return 0, err
			}
		}
		end = r.End
	}
	copied := 0
	for end < r.End {
		reply, err := k.ask(ctx, nc, subject, PullRequest{Read: r.Subject, From: end, Until: r.End, MaxBytes: maxBytes, Chunk: k.chunk})
		if err != nil {
			return copied, err
		}
		if reply.Drop > end {
			if _, err := k.Store.DropBefore(r.Subject, reply.Drop); err != nil {
				return copied, err
			}
			end = reply.Drop
		}
		entries, err := k.entries(reply.Records)
		if err != nil {
			return copied, err
		}
		if len(entries) == 0 {
			if k.chunk > 0 {
				continue // more pieces of a large record
			}
			if reply.Drop > 0 {
				continue
			}
			return copied, fmt.Errorf("the leader sent no records from %d, below %d", end, r.End)
		}
		n, err := applyRun(k.Store, entries)
		copied += n
		end += uint64(n)
		if err != nil {
			return copied, err
		}
	}
	return copied, nil
}
