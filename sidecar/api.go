package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// Verbs of the API.
const (
	verbFetch    = "FETCH"
	verbInfo     = "INFO"
	verbReplay   = "REPLAY"
	verbSubjects = "SUBJECTS"
	verbGroup    = "GROUP"
	verbGroups   = "GROUPS"
)

// maxWorking bounds requests being worked on at once (replays included,
// long polls while they wait not); past it a request is answered 503 at
// once. Memory is bounded by the reply budget, not by this.
const maxWorking = 4096

// api answers the request/reply verbs. Each request is answered in a
// goroutine of its own, so a long poll or a replay never holds up the
// subscription. Requests come in and replies go out on a connection of
// their own, never capture's: a reader that cannot keep up costs reads,
// never capture (the server cuts or stalls the connection a slow reader's
// replies pile up on).
type api struct {
	nc       *nats.Conn // receives the requests and sends the replies
	replayNC *nats.Conn // publishes REPLAY's records
	peersNC  *nats.Conn // talks to the other voiks on the prefix (peers.go)
	store    *logstore.Store
	vis      visibility // what of each log may be served
	prefix   string
	queue    string      // the group's queue group, or this voik's own
	answers  func() bool // a group member's: whether it may answer now
	self     presence    // this voik as its peers know it
	peers    *peerBook   // the peers on the prefix heard from lately
	// groupsVia is a group member's: who leads, or where to pass GROUPS
	// on to (the leader); nil standalone.
	groupsVia func() (leader, forward string)
	metrics   *metrics
	logger    *slog.Logger
	warn      *throttledLogger // for what load can repeat per request
	shutdown  context.Context  // cancelled when voik starts shutting down

	subs           []*nats.Subscription // on nc
	peerSubs       []*nats.Subscription // on peersNC
	stopAnnouncing chan struct{}        // closed to stop announce
	announced      chan struct{}        // closed when announce has returned
	inFlight       sync.WaitGroup
	working        chan struct{} // a slot per request being worked on
	polls          chan struct{} // a slot per long poll waiting
	budget         *replyBudget
	pages          *pagePool
}

// request is one API request being answered, with the bytes of the reply
// budget it holds.
type request struct {
	msg       *nats.Msg
	verb      string
	requester string
	reserved  int64
	slot      chan struct{} // the slot it holds: a.working, or a.polls while it may wait
	// A FETCH's body, decoded at dispatch (its slot depends on wait_ms).
	fetch    messages.FetchRequest
	fetchErr *messages.Error
}

// Reservations of the reply budget by verb: FETCH and SUBJECTS reserve a
// whole reply (max_payload) before building one; the others send small
// replies (REPLAY's records leave one at a time on the replay connection).
const smallReplyReserve = 4 << 10

// reserve takes n bytes of the budget for r's reply, or returns the 503
// that says why it cannot.
func (a *api) reserve(r *request, n int64) *messages.Error {
	switch a.budget.reserve(r.requester, n) {
	case budgetFull:
		a.metrics.overloaded.WithLabelValues("budget").Inc()
		a.warn.Warn("read load over the reply budget: answering 503 until replies drain", "limit_bytes", a.budget.limit)
		return messages.Errorf(messages.CodeUnavailable, "overloaded: replies waiting to be sent fill VOIK_REPLY_BUDGET (%d bytes); retry later", a.budget.limit)
	case shareFull:
		a.metrics.overloaded.WithLabelValues("requester_share").Inc()
		a.warn.Warn("one requester holds its share of the reply budget: answering its excess requests 503", "requester", r.requester, "share_bytes", a.budget.share)
		return messages.Errorf(messages.CodeUnavailable, "overloaded: this client's replies waiting to be sent fill its share of VOIK_REPLY_BUDGET (%d bytes); retry later", a.budget.share)
	}
	r.reserved += n
	return nil
}

// trim gives back what r reserved beyond n bytes, once its reply is built.
func (a *api) trim(r *request, n int64) {
	if r.reserved > n {
		a.budget.release(r.requester, r.reserved-n)
		r.reserved = n
	}
}

// slotsFull is the 503 for a request that found every slot of its kind
// taken, counted and logged.
func (a *api) slotsFull(slots chan struct{}) *messages.Error {
	if slots == a.polls {
		a.metrics.overloaded.WithLabelValues("long_polls").Inc()
		a.warn.Warn("too many long polls waiting: answering new ones 503", "max", cap(a.polls))
		return messages.Errorf(messages.CodeUnavailable, "too many long polls waiting (VOIK_MAX_LONG_POLLS %d); retry later", cap(a.polls))
	}
	a.metrics.overloaded.WithLabelValues("in_flight").Inc()
	a.warn.Warn("too many requests in flight: answering new ones 503", "max", maxWorking)
	return messages.Errorf(messages.CodeUnavailable, "too many requests in flight (%d)", maxWorking)
}

// waitAsLongPoll runs wait, a long poll's wait, in r's long-poll slot, so
// that waiting readers, however many, never hold up requests that work.
// Nothing of the reply is allocated or reserved while it waits.
func (a *api) waitAsLongPoll(r *request, wait func()) *messages.Error {
	if r.slot != a.polls {
		// Not taken for a long poll at dispatch: swap, or 503.
		select {
		case a.polls <- struct{}{}:
		default:
			return a.slotsFull(a.polls)
		}
		<-r.slot
		r.slot = a.polls
	}
	wait()
	return nil
}

// toWorking moves r from a long-poll slot to a working slot, waiting for
// one, before it builds a reply: a woken long poll works like any request.
func (a *api) toWorking(r *request) {
	if r.slot == a.working {
		return
	}
	a.working <- struct{}{}
	<-r.slot
	r.slot = a.working
}

// maxReply is the largest reply body that may go to reply: max_payload,
// less the marker header that a reply outside _INBOX. carries.
func (a *api) maxReply(reply string) int {
	limit := int(a.nc.MaxPayload())
	if needsReplyMarker(reply) {
		limit -= replyMarkerBytes
	}
	return limit
}

// needsReplyMarker says whether a reply to subject carries HeaderReply:
// _INBOX. subjects are never stored, anything else might be captured.
func needsReplyMarker(subject string) bool { return !messages.IsInbox(subject) }

// replyMarkerBytes is what HeaderReply adds to a message, as nats.go
// encodes it ("NATS/1.0\r\nVoik-Reply: 1\r\n\r\n"), rounded up.
const replyMarkerBytes = 32

// subscribe joins the API. FETCH, INFO and REPLAY are taken per capture
// filter, and per subject held from earlier filters (routes), so that NATS
// routes a request to the voik that captures or holds its subject, and a
// subject that no voik has gets "no responders" (peers.go). They are taken
// in a queue group (the group's, or this voik's own, so that a request
// that two of its filters match is delivered once). The bare prefix and
// the one-token verbs (SUBJECTS, and a verb without its subject: 400) go
// to one voik of all on the prefix; GROUPS to every group and standalone
// voik once.
//
// Requests wait in nats.go at most apiPendingMsgs deep: past that a
// flood's requests are dropped there (counted as the api role's slow
// consumer) instead of taking memory without bound.
func (a *api) subscribe() error {
	type sub struct {
		subject, queue string
		handler        nats.MsgHandler
	}
	var subs []sub
	for _, pattern := range a.routes() {
		for _, verb := range []string{verbFetch, verbInfo, verbReplay} {
			subs = append(subs, sub{a.prefix + "." + verb + "." + pattern, a.queue, a.route})
		}
	}
	subs = append(subs,
		sub{a.prefix, sharedQueue, a.route},
		sub{a.prefix + ".*", sharedQueue, a.route},
		sub{a.prefix + "." + verbGroups, a.queue, a.answerGroups},
	)
	if slices.ContainsFunc(a.self.Filters, func(f string) bool { return messages.Overlap(f, a.prefix+".*.>") }) {
		// Capture takes requests under the prefix too (a filter such as
		// ">"), so a request that no verb takes gets no "no responders"
		// from NATS: it would wait for its timeout. This voik answers it
		// 400 instead, and leaves the verbs to the voiks they route to.
		subs = append(subs, sub{a.prefix + ".*.>", sharedQueue, a.routeStray})
	}
	// What the peers tell each other goes on a connection of its own, so
	// that a flood of requests (or a NATS server stalling the API's
	// connection) does not delay a presence past presenceForget or a
	// subjects scatter past gatherWait.
	peerSubs := []sub{
		{scatterSubject(a.prefix), a.queue, a.answerScatter},
		{presenceSubject(a.prefix), "", a.hearPresence},
	}
	for i, s := range append(subs, peerSubs...) {
		nc, into := a.nc, &a.subs
		if i >= len(subs) {
			nc, into = a.peersNC, &a.peerSubs
		}
		ns, err := nc.QueueSubscribe(s.subject, s.queue, s.handler) // no queue: a plain subscription
		if err == nil {
			err = ns.SetPendingLimits(apiPendingMsgs, apiPendingBytes)
		}
		if err != nil {
			a.unsubscribe(context.Background())
			return fmt.Errorf("subscribe %s: %w", s.subject, err)
		}
		*into = append(*into, ns)
	}
	a.stopAnnouncing = make(chan struct{})
	a.announced = make(chan struct{})
	go func(stop <-chan struct{}, done chan<- struct{}) { defer close(done); a.announce(stop) }(a.stopAnnouncing, a.announced)
	return nil
}

// unsubscribe leaves the API: it stops announcing this voik, drains its
// subscriptions (requests already delivered are answered), and says
// goodbye to the peers (a standalone voik).
func (a *api) unsubscribe(ctx context.Context) {
	if a.stopAnnouncing != nil {
		close(a.stopAnnouncing)
		<-a.announced
		a.stopAnnouncing = nil
		a.sayGone()
	}
	drainAll(ctx, a.nc, a.subs)
	drainAll(ctx, a.peersNC, a.peerSubs)
	a.subs, a.peerSubs = nil, nil
}

// routes is the subject patterns whose FETCH, INFO and REPLAY this voik
// takes: its filters, and each subject it holds that they no longer match.
func (a *api) routes() []string {
	routes := slices.Clone(a.self.Filters)
	for _, subject := range a.store.Subjects() {
		if !slices.ContainsFunc(a.self.Filters, func(f string) bool { return messages.Matches(f, subject) }) {
			routes = append(routes, subject)
		}
	}
	return routes
}

// Pending limits of the API subscriptions: a request is small, and one
// that waited behind 65,536 others has most likely timed out already.
const (
	apiPendingMsgs  = 1 << 16
	apiPendingBytes = 64 << 20
)

// verbInvalid labels the metrics of requests to no verb at all.
const verbInvalid = "invalid"

// route hands a request to its verb, or answers 400 when its subject names
// no verb correctly.
func (a *api) route(msg *nats.Msg) {
	rest := strings.TrimPrefix(strings.TrimPrefix(msg.Subject, a.prefix), ".")
	verb, _, hasSubject := strings.Cut(rest, ".")
	var err *messages.Error
	switch verb {
	case verbFetch, verbInfo, verbReplay:
		if hasSubject {
			a.dispatch(msg, verb)
			return
		}
		err = messages.Errorf(messages.CodeBadRequest, "%s needs a subject: %s.%s.<subject>", verb, a.prefix, verb)
	case verbGroups:
		if !hasSubject {
			return // answered on a subscription of its own
		}
		err = messages.Errorf(messages.CodeBadRequest, "GROUPS takes no subject: send it to %s.GROUPS", a.prefix)
	case verbGroup:
		err = messages.Errorf(messages.CodeBadRequest, "GROUP needs a group: %s.GROUP.<group>", a.prefix)
	case verbSubjects:
		if !hasSubject {
			a.dispatch(msg, verb)
			return
		}
		err = messages.Errorf(messages.CodeBadRequest, "SUBJECTS takes no subject: send the filter in the body to %s.SUBJECTS", a.prefix)
	default:
		err = messages.Errorf(messages.CodeBadRequest, "%s is not a verb: want %s.FETCH, INFO or REPLAY followed by a subject, %s.GROUP followed by a group, or %s.SUBJECTS or GROUPS", messages.Quote(verb), a.prefix, a.prefix, a.prefix)
	}
	if msg.Reply == "" {
		return
	}
	a.respondError(&request{msg: msg, verb: verbInvalid, requester: requesterOf(msg.Reply)}, time.Now(), err)
}

// routeStray answers a request under the prefix that names more than a
// verb, taken by a voik whose capture filters reach into the prefix: 400
// unless a verb that takes a subject (or a group) routes it elsewhere.
func (a *api) routeStray(msg *nats.Msg) {
	rest := strings.TrimPrefix(msg.Subject, a.prefix+".")
	switch verb, _, _ := strings.Cut(rest, "."); verb {
	case verbFetch, verbInfo, verbReplay, verbGroup:
		return // for the voik whose filters (or group) take it, if any
	}
	a.route(msg)
}

// dispatch answers msg in a goroutine, or 503 when too many are working
// or voik is shutting down.
func (a *api) dispatch(msg *nats.Msg, verb string) {
	if msg.Reply == "" {
		return // nobody to answer
	}
	r := &request{msg: msg, verb: verb, requester: requesterOf(msg.Reply)}
	if a.shutdown.Err() != nil {
		a.respondError(r, time.Now(), messages.Errorf(messages.CodeUnavailable, "voik is shutting down"))
		return
	}
	if a.answers != nil && !a.answers() {
		// A group member back from a pause, or cut off: requests NATS
		// queued for it meanwhile get a 503 rather than what it knew
		// before; the next one reaches a member that is in sync.
		a.respondError(r, time.Now(), messages.Errorf(messages.CodeUnavailable, "this member is catching up with its group; retry"))
		return
	}
	// A FETCH that may wait (wait_ms) takes a long-poll slot from the
	// start, not a working one: a burst of long polls arriving together
	// must not fill the working slots before they reach their wait. It
	// takes a working slot once it has a page to build (toWorking).
	r.slot = a.working
	if verb == verbFetch {
		// Decoded here, once: the slot depends on wait_ms. A body that
		// does not decode gets its 400 from the handler.
		r.fetch, r.fetchErr = messages.DecodeFetchRequest(msg.Data)
		if r.fetchErr == nil && r.fetch.WaitMs > 0 {
			r.slot = a.polls
		}
	}
	select {
	case r.slot <- struct{}{}:
	default:
		a.respondError(r, time.Now(), a.slotsFull(r.slot))
		return
	}
	a.inFlight.Add(1)
	go func() {
		defer func() { <-r.slot; a.inFlight.Done() }()
		start := time.Now()
		// A FETCH reply is built in (and may point into) the builder's
		// memory, so the builder goes back to the pool only once the reply
		// is sent: nats.go copies it on publish.
		builder := a.pages.get()
		defer a.pages.put(builder)
		body, code := a.answer(r, builder)
		a.respond(r, start, body, code)
	}()
}

func (a *api) respondError(r *request, start time.Time, err *messages.Error) {
	a.respond(r, start, messages.EncodeError(err), err.Code)
}

// respond sends body (nil: the handler already replied), counts it, and
// gives back r's share of the reply budget. A body that NATS would refuse
// is replaced by a 500 that says so, so that no request goes unanswered.
func (a *api) respond(r *request, start time.Time, body []byte, code int) {
	defer a.trim(r, 0)
	msg, verb := r.msg, r.verb
	if maxReply := a.maxReply(msg.Reply); len(body) > maxReply {
		a.logger.Error("reply larger than max_payload", "verb", verb, "subject", msg.Subject, "bytes", len(body), "max_payload", maxReply)
		code = messages.CodeInternal
		body = messages.EncodeError(messages.Errorf(code, "the %s reply (%d bytes) would exceed max_payload %d", verb, len(body), maxReply))
	}
	// Counted before the reply leaves, so that a client that has its reply
	// and then scrapes /metrics finds its request counted.
	a.metrics.requests.WithLabelValues(verb, strconv.Itoa(code)).Inc()
	a.metrics.requestSeconds.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	if body == nil {
		return
	}
	if err := a.send(msg.Reply, body); err != nil {
		a.warn.Warn("cannot send reply", "verb", verb, "err", err)
	}
}

// send publishes a reply body to reply, marked when it goes outside
// _INBOX. (needsReplyMarker).
func (a *api) send(reply string, body []byte) error {
	if !needsReplyMarker(reply) {
		return a.nc.Publish(reply, body)
	}
	out := nats.NewMsg(reply)
	out.Header[messages.HeaderReply] = []string{"1"}
	out.Data = body
	return a.nc.PublishMsg(out)
}

// answer returns the reply body and its code (200 for success). REPLAY
// publishes its records itself, after its reply.
func (a *api) answer(r *request, builder *messages.FetchReplyBuilder) (body []byte, code int) {
	msg, verb := r.msg, r.verb
	defer func() {
		if p := recover(); p != nil {
			a.logger.Error("request handler panicked", "verb", verb, "subject", msg.Subject, "panic", p)
			body, code = messages.EncodeError(messages.Errorf(messages.CodeInternal, "internal error")), messages.CodeInternal
		}
	}()
	var reply any
	var err *messages.Error
	if verb == verbSubjects {
		reply, err = a.subjects(r, a.maxReply(msg.Reply))
	} else {
		subject := msg.Subject[len(a.prefix)+len(verb)+2:]
		if !messages.ValidSubject(subject) {
			err = messages.Errorf(messages.CodeBadRequest, "%s is not a valid subject", messages.Quote(subject))
		} else {
			switch verb {
			case verbFetch:
				var raw []byte
				if raw, err = a.fetch(r, subject, builder); err == nil {
					return raw, 200
				}
			case verbInfo:
				if err = messages.DecodeInfoRequest(msg.Data); err == nil {
					if err = a.reserve(r, smallReplyReserve); err == nil {
						reply, err = a.info(subject)
					}
				}
			case verbReplay:
				if err = a.reserve(r, smallReplyReserve); err == nil {
					return a.replay(msg, subject)
				}
			}
		}
	}
	if err != nil {
		return messages.EncodeError(err), err.Code
	}
	return messages.Encode(reply), 200
}

// withLog calls fn with the log of subject, held open until fn returns,
// and returns fn's reply; or, without calling fn, 404 when the subject has
// no log (nothing was ever stored for it: a subject gets its log with its
// first record) or, in a group, no committed record; 503 when voik is
// shutting down, or when this group member holds records of the subject
// but has not heard of the commit of any; and a 500 when the log cannot
// be served at all.
func (a *api) withLog(subject string, fn func(*logstore.Log) *messages.Error) *messages.Error {
	if a.vis.hidden(subject) {
		a.vis.catchUpSubject(a.shutdown, subject)
	}
	if a.vis.hidden(subject) {
		if a.holdsRecords(subject) {
			// As heldNotCommitted, for a subject's first records.
			return messages.Errorf(messages.CodeUnavailable, "records of %s are held here but none is known to be committed yet: the group is changing its leader or in-sync set; retry", messages.Quote(subject))
		}
		return messages.Errorf(messages.CodeNotFound, "no committed record for subject %s", messages.Quote(subject))
	}
	var reply *messages.Error
	err := a.store.View(subject, func(log *logstore.Log) error {
		if logErr := log.Err(); logErr != nil && log.EndOffset() == log.FirstOffset() {
			// Damaged before its first readable record: there is a log,
			// and none of it can be served.
			reply = messages.Errorf(messages.CodeInternal, "the log of %s is damaged and holds no record that can be read: %v", messages.Quote(subject), logErr)
			return nil
		}
		reply = fn(log)
		return nil
	})
	switch {
	case errors.Is(err, logstore.ErrNotFound):
		return messages.Errorf(messages.CodeNotFound, "no log for subject %s", messages.Quote(subject))
	case errors.Is(err, logstore.ErrClosed):
		return messages.Errorf(messages.CodeUnavailable, "voik is shutting down")
	case err != nil:
		// A log on disk that cannot be opened (unreadable files, say):
		// the same 500 on every verb, never a 404 that would say nothing
		// was ever stored.
		return messages.Errorf(messages.CodeInternal, "the log of %s cannot be opened: %v", messages.Quote(subject), err)
	}
	return reply
}

// deadEnd is the reply to a read at or past the end of log: a log that
// recovery found corrupt (or whose disk failed) takes no more records, so
// a 500 says so instead of an empty page or a 416 that would let a
// consumer think it is caught up. Otherwise it returns orElse.
func deadEnd(log *logstore.Log, subject string, orElse *messages.Error) *messages.Error {
	if logErr := log.Err(); logErr != nil {
		return messages.Errorf(messages.CodeInternal, "the log of %s ends at offset %d and takes no more records: %v", messages.Quote(subject), log.EndOffset(), logErr)
	}
	return orElse
}

// storeError maps a read error to its reply.
func storeError(err error) *messages.Error {
	var rangeErr *logstore.RangeError
	switch {
	case errors.As(err, &rangeErr):
		return rangeError(rangeErr.Offset, rangeErr.First, rangeErr.End)
	case errors.Is(err, logstore.ErrClosed):
		return messages.Errorf(messages.CodeUnavailable, "voik is shutting down")
	}
	return messages.Errorf(messages.CodeInternal, "%v", err)
}

// holdsRecords says whether the store holds a record of subject.
func (a *api) holdsRecords(subject string) bool {
	held := false
	_ = a.store.View(subject, func(log *logstore.Log) error {
		held = log.EndOffset() > log.FirstOffset()
		return nil
	})
	return held
}

// heldNotCommitted is the reply to a read from offset, past the visible
// end of log, when this group member holds the records before offset
// all the same but has not heard of their commit (catchUp waited for it
// in vain): the group is changing its leader or its in-sync set, and
// the commit, or the truncation of an uncommitted tail, is a moment
// away. A 416 would tell a reader paging from an offset another member
// gave it that the log is shorter than it was; a 503 has it try again
// (the Go client does so by itself). Otherwise it is outOfRange.
func heldNotCommitted(log *logstore.Log, subject string, offset, end uint64, outOfRange *messages.Error) *messages.Error {
	if offset <= end || offset > log.EndOffset() {
		return outOfRange
	}
	return messages.Errorf(messages.CodeUnavailable, "offset %d of %s is held here but its commit is not known yet (end_offset %d): the group is changing its leader or in-sync set; retry", offset, messages.Quote(subject), end)
}

func rangeError(offset, first, end uint64) *messages.Error {
	return messages.Errorf(messages.CodeOutOfRange, "offset %d is out of range: first_offset %d, end_offset %d", offset, first, end)
}

// startOffset resolves where a FETCH or REPLAY starts: start_time when
// given, else offset when given, else the first offset (first and end
// are the visible ones).
func startOffset(log *logstore.Log, first, end uint64, offset *uint64, startTime int64) (uint64, *messages.Error) {
	switch {
	case startTime > 0:
		at, err := log.OffsetAt(startTime)
		if err != nil {
			return 0, storeError(err)
		}
		return min(max(at, first), end), nil
	case offset == nil:
		return first, nil
	case *offset < first || *offset > end:
		return 0, rangeError(*offset, first, end)
	}
	return *offset, nil
}

func (a *api) info(subject string) (any, *messages.Error) {
	var info logstore.Info
	if err := a.withLog(subject, func(log *logstore.Log) *messages.Error {
		a.vis.catchUp(a.shutdown, log, log.EndOffset()) // a client with an ack finds its record counted
		info = log.Info()
		if first := a.vis.first(log); first > info.FirstOffset {
			// A group member whose segments were cut elsewhere than the
			// leader's holds a few records below its first offset.
			info.FirstOffset, info.FirstTimestamp = first, 0
			log.Scan(first, func(v logstore.RecordView) bool { info.FirstTimestamp = v.Timestamp; return false })
			info.EndOffset = max(info.EndOffset, first)
		}
		if end := a.vis.end(log); end < info.EndOffset {
			// Records past the committed end are not counted.
			info.EndOffset, info.LastTimestamp = end, info.FirstTimestamp
			if end > info.FirstOffset {
				log.Scan(end-1, func(v logstore.RecordView) bool { info.LastTimestamp = v.Timestamp; return false })
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return messages.InfoReply{
		Subject:     subject,
		FirstOffset: info.FirstOffset,
		EndOffset:   info.EndOffset,
		Messages:    info.EndOffset - info.FirstOffset,
		Bytes:       uint64(info.Bytes),
		FirstTs:     info.FirstTimestamp,
		LastTs:      info.LastTimestamp,
		Segments:    uint64(info.Segments),
	}, nil
}

func (a *api) subjects(r *request, maxPayload int) (any, *messages.Error) {
	req, err := messages.DecodeSubjectsRequest(r.msg.Data)
	if err != nil {
		return nil, err
	}
	all, err := a.gatherSubjects(a.shutdown, req.Filter)
	if err != nil {
		return nil, err
	}
	reply := messages.SubjectsReply{Subjects: []string{}, Total: uint64(len(all))}
	size := messages.SubjectsReplySize()
	for _, subject := range all[min(req.Offset, uint64(len(all))):] {
		if uint64(len(reply.Subjects)) >= req.Limit {
			break
		}
		grown := size + messages.SubjectsReplySize(len(subject)) - messages.SubjectsReplySize()
		if grown > maxPayload {
			break // the page is full
		}
		size = grown
		reply.Subjects = append(reply.Subjects, subject)
	}
	// What the reply takes is its encoding, about size bytes.
	if err := a.reserve(r, int64(size)); err != nil {
		return nil, err
	}
	return reply, nil
}
