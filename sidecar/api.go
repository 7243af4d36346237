package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
)

// maxInFlight bounds requests being answered at once (long polls and
// replays included); past it a request is answered 503 at once.
const maxInFlight = 4096

// api answers the request/reply verbs. Each request is answered in a
// goroutine of its own, so a long poll or a replay never holds up the
// subscription, and capture runs on its own connection.
type api struct {
	nc       *nats.Conn // receives the requests
	replies  replyConns // sends the replies
	replayNC *nats.Conn // publishes REPLAY's records
	store    *logstore.Store
	prefix   string
	metrics  *metrics
	logger   *slog.Logger
	shutdown context.Context // cancelled when voik starts shutting down

	subs     []*nats.Subscription
	inFlight sync.WaitGroup
	slots    chan struct{}
	builders sync.Pool // *messages.FetchReplyBuilder
}

// subscribe takes every request under the prefix: the verbs on any
// subject, inside the capture filters or not (a subject with no log is a
// 404, and no request goes unanswered), and anything malformed (400). One
// subscription on <prefix>.> routes them, so no request is delivered twice.
// voik instances sharing a NATS cluster therefore need prefixes of their own.
func (a *api) subscribe() error {
	for _, subject := range []string{a.prefix, a.prefix + ".>"} {
		sub, err := a.nc.Subscribe(subject, a.route)
		if err == nil {
			err = sub.SetPendingLimits(-1, -1)
		}
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		a.subs = append(a.subs, sub)
	}
	return nil
}

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
	case verbSubjects:
		if !hasSubject {
			a.dispatch(msg, verb)
			return
		}
		err = messages.Errorf(messages.CodeBadRequest, "SUBJECTS takes no subject: send the filter in the body to %s.SUBJECTS", a.prefix)
	default:
		err = messages.Errorf(messages.CodeBadRequest, "%s is not a verb: want %s.FETCH, INFO or REPLAY followed by a subject, or %s.SUBJECTS", messages.Quote(verb), a.prefix, a.prefix)
	}
	if msg.Reply == "" {
		return
	}
	a.respond(msg, verbInvalid, time.Now(), messages.EncodeError(err), err.Code)
}

// dispatch answers msg in a goroutine, or 503 when too many are running
// or voik is shutting down.
func (a *api) dispatch(msg *nats.Msg, verb string) {
	if msg.Reply == "" {
		return // nobody to answer
	}
	if a.shutdown.Err() != nil {
		a.respond(msg, verb, time.Now(), messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "voik is shutting down")), messages.CodeUnavailable)
		return
	}
	select {
	case a.slots <- struct{}{}:
	default:
		a.respond(msg, verb, time.Now(), messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "too many requests in flight (%d)", maxInFlight)), messages.CodeUnavailable)
		return
	}
	a.inFlight.Add(1)
	go func() {
		defer func() { <-a.slots; a.inFlight.Done() }()
		start := time.Now()
		// A FETCH reply is built in (and may point into) the builder's
		// memory, so the builder goes back to the pool only once the reply
		// is sent: nats.go copies it on publish.
		builder := a.builders.Get().(*messages.FetchReplyBuilder)
		defer a.builders.Put(builder)
		body, code := a.answer(msg, verb, builder)
		a.respond(msg, verb, start, body, code)
	}()
}

// respond sends body (nil: the handler already replied) and counts it. A
// body that NATS would refuse is replaced by a 500 that says so, so that
// no request goes unanswered.
func (a *api) respond(msg *nats.Msg, verb string, start time.Time, body []byte, code int) {
	if maxPayload := a.replies.maxPayload(); int64(len(body)) > maxPayload {
		a.logger.Error("reply larger than max_payload", "verb", verb, "subject", msg.Subject, "bytes", len(body), "max_payload", maxPayload)
		code = messages.CodeInternal
		body = messages.EncodeError(messages.Errorf(code, "the %s reply (%d bytes) would exceed max_payload %d", verb, len(body), maxPayload))
	}
	// Counted before the reply leaves, so that a client that has its reply
	// and then scrapes /metrics finds its request counted.
	a.metrics.requests.WithLabelValues(verb, strconv.Itoa(code)).Inc()
	a.metrics.requestSeconds.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	if body != nil {
		if err := a.replies.conn().Publish(msg.Reply, body); err != nil {
			a.logger.Warn("cannot send reply", "verb", verb, "err", err)
		}
	}
}

// answer returns the reply body and its code (200 for success). REPLAY
// publishes its records itself, after its reply.
func (a *api) answer(msg *nats.Msg, verb string, builder *messages.FetchReplyBuilder) (body []byte, code int) {
	defer func() {
		if r := recover(); r != nil {
			a.logger.Error("request handler panicked", "verb", verb, "subject", msg.Subject, "panic", r)
			body, code = messages.EncodeError(messages.Errorf(messages.CodeInternal, "internal error")), messages.CodeInternal
		}
	}()
	var reply any
	var err *messages.Error
	if verb == verbSubjects {
		reply, err = a.subjects(msg.Data)
	} else {
		subject := msg.Subject[len(a.prefix)+len(verb)+2:]
		if !messages.ValidSubject(subject) {
			err = messages.Errorf(messages.CodeBadRequest, "%s is not a valid subject", messages.Quote(subject))
		} else {
			switch verb {
			case verbFetch:
				var raw []byte
				if raw, err = a.fetch(subject, msg.Data, builder); err == nil {
					return raw, 200
				}
			case verbInfo:
				if err = messages.DecodeInfoRequest(msg.Data); err == nil {
					reply, err = a.info(subject)
				}
			case verbReplay:
				return a.replay(msg, subject)
			}
		}
	}
	if err != nil {
		return messages.EncodeError(err), err.Code
	}
	return messages.Encode(reply), 200
}

// acquire opens the log of subject for a request: 404 when there is none,
// or, unless empty is allowed, when nothing was ever stored in it.
//
// A log with nothing in it exists for a moment while capture creates it
// for a first message; when that message cannot be stored (too large, a
// full disk) capture deletes it again, unless a long poll holds it. A long
// poll may wait on it; anything else is told what the contract says of a
// subject with nothing stored: 404.
func (a *api) acquire(subject string, empty bool) (*logstore.Log, *messages.Error) {
	log, err := a.store.Acquire(subject, false)
	switch {
	case errors.Is(err, logstore.ErrNotFound):
		return nil, messages.Errorf(messages.CodeNotFound, "no log for subject %s", messages.Quote(subject))
	case errors.Is(err, logstore.ErrClosed):
		return nil, messages.Errorf(messages.CodeUnavailable, "voik is shutting down")
	case err != nil:
		return nil, messages.Errorf(messages.CodeInternal, "open log of %s: %v", messages.Quote(subject), err)
	case log.EndOffset() == 0 && !empty:
		a.store.Release(log)
		return nil, messages.Errorf(messages.CodeNotFound, "no log for subject %s", messages.Quote(subject))
	}
	return log, nil
}

// acquireWaiting is acquire for a FETCH; a long poll (wait) first waits
// within ctx for the subject to have a log, and waits again when the log
// it saw was deleted before it could take it (a first message that could
// not be stored), so that it is a 404 only if nothing arrives in time.
func (a *api) acquireWaiting(ctx context.Context, subject string, wait bool) (*logstore.Log, *messages.Error) {
	for {
		if wait {
			a.waitForSubject(ctx, subject)
		}
		log, err := a.acquire(subject, wait)
		if err == nil || !wait || err.Code != messages.CodeNotFound || ctx.Err() != nil {
			return log, err
		}
	}
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

// waitForSubject returns once subject has a log or ctx ends.
func (a *api) waitForSubject(ctx context.Context, subject string) {
	for {
		created := a.store.Created()
		if a.store.Has(subject) {
			return
		}
		select {
		case <-created:
		case <-ctx.Done():
			return
		}
	}
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

func rangeError(offset, first, end uint64) *messages.Error {
	return messages.Errorf(messages.CodeOutOfRange, "offset %d is out of range: first_offset %d, end_offset %d", offset, first, end)
}

// startOffset resolves where a FETCH or REPLAY starts: start_time when
// given, else offset when given, else the first offset.
func startOffset(log *logstore.Log, offset *uint64, startTime int64) (uint64, *messages.Error) {
	first, end := log.FirstOffset(), log.EndOffset()
	switch {
	case startTime > 0:
		at, err := log.OffsetAt(startTime)
		if err != nil {
			return 0, storeError(err)
		}
		return at, nil
	case offset == nil:
		return first, nil
	case *offset < first || *offset > end:
		return 0, rangeError(*offset, first, end)
	}
	return *offset, nil
}

func (a *api) fetch(subject string, body []byte, builder *messages.FetchReplyBuilder) ([]byte, *messages.Error) {
	req, err := messages.DecodeFetchRequest(body)
	if err != nil {
		return nil, err
	}
	// A long poll waits, within wait_ms, for the subject's first record
	// as for any other: a consumer may start before its publisher.
	wait := a.shutdown
	if req.WaitMs > 0 {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(a.shutdown, time.Duration(req.WaitMs)*time.Millisecond)
		defer cancel()
	}
	log, err := a.acquireWaiting(wait, subject, req.WaitMs > 0)
	if err != nil {
		return nil, err
	}
	defer a.store.Release(log)
	start, err := startOffset(log, req.Offset, req.StartTime)
	if err != nil {
		if err.Code == messages.CodeOutOfRange && req.Offset != nil && *req.Offset > log.EndOffset() {
			err = deadEnd(log, subject, err)
		}
		return nil, err
	}
	if start >= log.EndOffset() {
		if err := deadEnd(log, subject, nil); err != nil {
			return nil, err
		}
	}
	if req.WaitMs > 0 && start >= log.EndOffset() {
		log.WaitFor(wait, start)
	}

	maxPayload := int(a.replies.maxPayload())
	maxBytes := maxPayload
	if req.MaxBytes > 0 && req.MaxBytes < uint64(maxPayload) {
		maxBytes = int(req.MaxBytes)
	}
	// The reply reports the log as it is now; records appended while it is
	// built wait for the next fetch.
	first, end := log.FirstOffset(), log.EndOffset()
	builder.Reset()
	payloadBytes := 0
	var tooLarge, decodeFailed error
	// Scan's own next counts the record a callback turned down; the reply's
	// next_offset is the one after the last record returned.
	stoppedAt, scanErr := log.Scan(start, func(v logstore.RecordView) bool {
		if uint64(builder.Count()) >= req.MaxMessages || v.Offset >= end {
			return false
		}
		headers, err := v.Headers()
		if err != nil {
			decodeFailed = err
			return false
		}
		size := v.PayloadSize()
		if builder.Count() > 0 && payloadBytes+size > maxBytes {
			return false
		}
		if !builder.AddWithin(maxPayload, subject, first, end, v.Offset, v.Timestamp, headers, v.Data) {
			if builder.Count() == 0 {
				tooLarge = fmt.Errorf("record %d of %s (%d bytes) cannot fit in one reply under max_payload %d", v.Offset, messages.Quote(subject), size, maxPayload)
			}
			return false
		}
		payloadBytes += size
		return true
	})
	switch {
	case tooLarge != nil:
		return nil, messages.Errorf(messages.CodeTooLarge, "%v", tooLarge)
	case decodeFailed != nil:
		return nil, messages.Errorf(messages.CodeInternal, "record headers of %s: %v", messages.Quote(subject), decodeFailed)
	case scanErr != nil && builder.Count() == 0:
		return nil, storeError(scanErr)
	case scanErr != nil:
		// Serve what was read; the next fetch starts at the bad record
		// and reports it.
		a.logger.Error("read error", "subject", subject, "offset", stoppedAt, "err", scanErr)
	}
	next := start + uint64(builder.Count()) // records are contiguous from start
	return builder.Finish(subject, next, first, end), nil
}

func (a *api) info(subject string) (any, *messages.Error) {
	log, err := a.acquire(subject, false)
	if err != nil {
		return nil, err
	}
	defer a.store.Release(log)
	info := log.Info()
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

func (a *api) subjects(body []byte) (any, *messages.Error) {
	req, err := messages.DecodeSubjectsRequest(body)
	if err != nil {
		return nil, err
	}
	maxPayload := int(a.replies.maxPayload())
	reply := messages.SubjectsReply{Subjects: []string{}}
	size := messages.SubjectsReplySize()
	var matched uint64
	for _, subject := range a.store.Subjects() {
		if !messages.Matches(req.Filter, subject) {
			continue
		}
		index := matched
		matched++
		if index < req.Offset || uint64(len(reply.Subjects)) >= req.Limit {
			continue
		}
		grown := size + messages.SubjectsReplySize(len(subject)) - messages.SubjectsReplySize()
		if grown > maxPayload {
			req.Limit = uint64(len(reply.Subjects)) // the page is full: count the rest
			continue
		}
		size = grown
		reply.Subjects = append(reply.Subjects, subject)
	}
	reply.Total = matched
	return reply, nil
}
