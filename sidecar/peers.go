package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/client"
	"github.com/voik/voik/messages"
)

// Several groups and standalone voiks on one NATS system and API prefix
// (the contract's section 9) split the subjects between them: NATS routes
// each FETCH, INFO and REPLAY by subject to the one voik (or group) whose
// filters take it, and the requests that name no subject are answered as
// follows.
//
//   - The bare prefix and every one-token verb (SUBJECTS, and the 400s of
//     a verb without its subject) reach one voik of all of them: they share
//     the queue group sharedQueue.
//   - SUBJECTS is answered by that voik, which gathers the subjects of
//     every peer (every group and standalone voik on the prefix) over
//     $VOIK.PEERS.SUBJECTS.<prefix> and merges them.
//   - GROUPS reaches every peer once: each group's members share a queue
//     group, the leader answers, and a standalone voik answers itself.
//
// How the gatherer knows it has heard from everyone: every peer announces
// itself on $VOIK.PEERS.PRESENCE.<prefix> when it starts answering and
// then every presenceEvery, and each voik keeps a book of the peers heard
// within presenceForget. A SUBJECTS waits for every peer in the book, at
// most gatherWait, and answers 503 naming those that did not answer. A
// standalone voik that stops cleanly says it is gone; one that is killed
// is forgotten presenceForget later (until then SUBJECTS is a 503 that
// names it). A group is one peer, announced by every member that answers.

// sharedQueue is the queue group of every voik on an API prefix, whatever
// its group: the requests that name no subject reach one of them.
const sharedQueue = "voik-api"

const (
	presenceEvery  = time.Second
	presenceForget = 3*presenceEvery + presenceEvery/2
	// gatherWait bounds how long a SUBJECTS waits for the peers (as
	// client.GroupsWait bounds GROUPS: the contract's "within a second").
	gatherWait = client.GroupsWait
)

func presenceSubject(prefix string) string { return "$VOIK.PEERS.PRESENCE." + prefix }
func scatterSubject(prefix string) string  { return "$VOIK.PEERS.SUBJECTS." + prefix }

// presence is what a peer announces about itself.
type presence struct {
	Peer     string   `msgpack:"peer"` // the book's key: "group NAME" or "voik INSTANCE ID"
	Group    string   `msgpack:"group,omitempty"`
	Instance string   `msgpack:"instance"`
	Filters  []string `msgpack:"filters"`
	Gone     bool     `msgpack:"gone,omitempty"` // a standalone voik stopping cleanly
}

// describe names a peer in a log line or an error.
func (p presence) describe() string { return describePeer(p.Group, p.Instance, p.Filters) }

// describePeer names a group, or a standalone voik by its instance and
// filters (several may run on one host, under one name).
func describePeer(group, instance string, filters []string) string {
	if group != "" {
		return fmt.Sprintf("group %s", messages.Quote(group))
	}
	return fmt.Sprintf("standalone voik %s (filters %s)", messages.Quote(instance), strings.Join(filters, ","))
}

// selfPresence is this voik as its peers know it.
func selfPresence(group, instance string, filters []string) presence {
	if instance == "" {
		instance, _ = os.Hostname()
	}
	p := presence{Group: group, Instance: instance, Filters: slices.Clone(filters)}
	if group != "" {
		p.Peer = "group " + group
	} else {
		var id [6]byte
		rand.Read(id[:])
		p.Peer = "voik " + instance + " " + hex.EncodeToString(id[:])
	}
	return p
}

// peerBook is the peers heard from lately.
type peerBook struct {
	mu   sync.Mutex
	seen map[string]heard
}

type heard struct {
	p  presence
	at time.Time
}

func (b *peerBook) note(p presence, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = map[string]heard{}
	}
	if p.Gone {
		delete(b.seen, p.Peer)
		return
	}
	b.seen[p.Peer] = heard{p, now}
}

// live is the peers heard from within presenceForget of now, by key.
func (b *peerBook) live(now time.Time) map[string]presence {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]presence, len(b.seen))
	for key, h := range b.seen {
		if now.Sub(h.at) < presenceForget {
			out[key] = h.p
		} else {
			delete(b.seen, key)
		}
	}
	return out
}

// peerSubjects is one chunk of a peer's answer to a subjects scatter.
type peerSubjects struct {
	Peer     string   `msgpack:"peer"`
	Subjects []string `msgpack:"subjects"`
	More     bool     `msgpack:"more,omitempty"` // more chunks follow
}

// peerSubjectsRequest is a subjects scatter.
type peerSubjectsRequest struct {
	Filter string `msgpack:"filter"`
}

// announce publishes this voik's presence now and every presenceEvery
// until stop is closed.
func (a *api) announce(stop <-chan struct{}) {
	body, _ := msgpack.Marshal(a.self)
	subject := presenceSubject(a.prefix)
	t := time.NewTicker(presenceEvery)
	defer t.Stop()
	for {
		a.peers.note(a.self, time.Now())
		if err := a.peersNC.Publish(subject, body); err != nil {
			a.warn.Warn("cannot announce this voik to its peers", "err", err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// hearPresence keeps the book.
func (a *api) hearPresence(msg *nats.Msg) {
	var p presence
	if err := msgpack.Unmarshal(msg.Data, &p); err != nil || p.Peer == "" {
		a.warn.Warn("a peer's presence does not decode", "subject", msg.Subject, "err", err)
		return
	}
	a.peers.note(p, time.Now())
}

// sayGone tells the peers that this standalone voik stops answering, so
// that SUBJECTS stops waiting for it at once. A group member says
// nothing: the group goes on without it.
func (a *api) sayGone() {
	if a.self.Group != "" {
		return
	}
	gone := a.self
	gone.Gone = true
	body, _ := msgpack.Marshal(gone)
	if a.peersNC.IsConnected() {
		// Out before voik closes the connection; not waiting for a NATS
		// that is away (a flush would wait for it to come back).
		a.peersNC.Publish(presenceSubject(a.prefix), body)
		a.peersNC.FlushTimeout(time.Second)
	}
}

// answerGroups answers GROUPS: a standalone voik itself; in a group the
// leader, to which a follower that the queue group picked passes the
// request on (groupsVia), or the follower itself while nobody leads.
func (a *api) answerGroups(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	start := time.Now()
	reply := messages.GroupsReply{Group: a.self.Group, Instance: a.self.Instance, Filters: a.self.Filters}
	if a.groupsVia != nil {
		leader, forward := a.groupsVia()
		if forward != "" {
			if err := a.nc.PublishMsg(&nats.Msg{Subject: forward, Reply: msg.Reply}); err != nil {
				a.warn.Warn("cannot pass GROUPS on to the leader", "err", err)
			}
			return
		}
		reply.Leader = leader
	}
	a.respond(&request{msg: msg, verb: verbGroups}, start, messages.Encode(reply), 200)
}

// answerScatter answers a peer's subjects scatter with every subject this
// voik may serve that matches the filter, in chunks under max_payload.
func (a *api) answerScatter(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	var req peerSubjectsRequest
	if err := msgpack.Unmarshal(msg.Data, &req); err != nil || !messages.ValidFilter(req.Filter) {
		a.warn.Warn("a peer's subjects request does not decode", "err", err)
		return
	}
	limit := int(a.peersNC.MaxPayload()) - 1024
	chunk := peerSubjects{Peer: a.self.Peer, Subjects: []string{}}
	size := 0
	for _, subject := range a.visibleSubjects(req.Filter) {
		if size+len(subject)+5 > limit && len(chunk.Subjects) > 0 {
			chunk.More = true
			if !a.sendChunk(msg.Reply, &chunk) {
				return
			}
			chunk.Subjects, chunk.More, size = chunk.Subjects[:0], false, 0
		}
		chunk.Subjects = append(chunk.Subjects, subject)
		size += len(subject) + 5
	}
	a.sendChunk(msg.Reply, &chunk)
}

func (a *api) sendChunk(reply string, chunk *peerSubjects) bool {
	body, err := msgpack.Marshal(chunk)
	if err == nil {
		err = a.peersNC.Publish(reply, body)
	}
	if err != nil {
		a.warn.Warn("cannot answer a peer's subjects request", "err", err)
		return false
	}
	return true
}

// visibleSubjects is the subjects this voik serves that match filter,
// sorted.
func (a *api) visibleSubjects(filter string) []string {
	var out []string
	for _, subject := range a.store.Subjects() {
		if messages.Matches(filter, subject) && !a.vis.hidden(subject) {
			out = append(out, subject)
		}
	}
	return out
}

// gatherSubjects asks every peer for its subjects matching filter and
// merges them: sorted, each once. It waits for every peer in the book
// (this voik included), at most gatherWait; a peer that does not answer
// makes it a 503 that names it.
func (a *api) gatherSubjects(ctx context.Context, filter string) ([]string, *messages.Error) {
	want := a.askWhom(time.Now())
	if len(want) == 1 {
		return a.visibleSubjects(filter), nil // alone on the prefix: no round trip
	}
	inbox := a.peersNC.NewInbox()
	sub, err := a.peersNC.SubscribeSync(inbox)
	if err != nil {
		return nil, messages.Errorf(messages.CodeUnavailable, "cannot ask the other voiks for their subjects: %v", err)
	}
	defer sub.Unsubscribe()
	body, _ := msgpack.Marshal(peerSubjectsRequest{Filter: filter})
	if err := a.peersNC.PublishRequest(scatterSubject(a.prefix), inbox, body); err != nil {
		return nil, messages.Errorf(messages.CodeUnavailable, "cannot ask the other voiks for their subjects: %v", err)
	}
	deadline := time.Now().Add(gatherWait)
	done := map[string]bool{}
	var all []string
	for !coversAll(done, want) {
		wait := time.Until(deadline)
		if wait <= 0 || ctx.Err() != nil {
			break
		}
		msg, err := sub.NextMsg(wait)
		if err != nil {
			break // the deadline
		}
		if msg.Header.Get("Status") == "503" {
			break // no responders: nobody answers any more
		}
		var chunk peerSubjects
		if err := msgpack.Unmarshal(msg.Data, &chunk); err != nil {
			a.warn.Warn("a peer's subjects do not decode", "err", err)
			continue
		}
		all = append(all, chunk.Subjects...)
		if !chunk.More {
			done[chunk.Peer] = true
		}
	}
	var missing []string
	for key, p := range want {
		if !done[key] {
			missing = append(missing, p.describe())
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, messages.Errorf(messages.CodeUnavailable, "SUBJECTS lists the subjects of every voik on %s, and %s did not answer within %v; retry",
			a.prefix, strings.Join(missing, " and "), gatherWait)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

// askWhom is the peers SUBJECTS waits for: those heard from lately, and
// always this voik itself, which may not have announced itself yet. (A
// request that came just after a start, before the first announcement,
// waited for nobody and was answered with no subjects at all.)
func (a *api) askWhom(now time.Time) map[string]presence {
	want := a.peers.live(now)
	want[a.self.Peer] = a.self
	return want
}

func coversAll(done map[string]bool, want map[string]presence) bool {
	for key := range want {
		if !done[key] {
			return false
		}
	}
	return true
}

// checkOverlap refuses to start a voik whose filters overlap those of
// another group or standalone voik on the same NATS system and prefix
// (members of its own group are not another): both would capture the
// subjects they share, and NATS would route their reads to either.
func (s *Sidecar) checkOverlap() error {
	others, err := client.New(s.apiNC, s.cfg.APIPrefix).Groups(context.Background(), overlapQuiet)
	if err != nil {
		s.logger.Warn("cannot ask the other voiks on the API prefix for their filters", "err", err)
		return nil
	}
	for _, other := range others {
		if s.cfg.Group != "" && other.Group == s.cfg.Group {
			continue
		}
		var pairs []string
		for _, mine := range s.filters {
			for _, theirs := range other.Filters {
				if messages.Overlap(mine, theirs) {
					pairs = append(pairs, mine+" with "+theirs)
				}
			}
		}
		if len(pairs) > 0 {
			return &ConfigError{fmt.Errorf("VOIK_SUBJECTS overlap those of %s on API prefix %s: %s; give each voik or group subjects of its own",
				describePeer(other.Group, other.Instance, other.Filters), s.cfg.APIPrefix, strings.Join(pairs, ", "))}
		}
	}
	return nil
}

// overlapQuiet ends the start-up GROUPS early: live voiks answer in
// milliseconds, so a quarter second with no new reply means all have.
const overlapQuiet = 250 * time.Millisecond
