package sidecar

import (
	"context"
	"fmt"
	"time"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// FETCH: a page of records from one log, built into a reusable builder
// within the reply budget, after a long poll when the start is the end.

func (a *api) fetch(r *request, subject string, builder *messages.FetchReplyBuilder) ([]byte, *messages.Error) {
	req, err := r.fetch, r.fetchErr
	if err != nil {
		return nil, err
	}
	wait := a.shutdown
	if req.WaitMs > 0 {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(a.shutdown, time.Duration(req.WaitMs)*time.Millisecond)
		defer cancel()
		// A long poll waits, within wait_ms, for the subject's first
		// record as for any other: a consumer may start before its
		// publisher. The subject has a log from its first record on.
		if !a.store.Has(subject) || a.vis.hidden(subject) {
			if err := a.waitAsLongPoll(r, func() { a.vis.waitSubject(wait, subject) }); err != nil {
				return nil, err
			}
		}
	}
	var page []byte
	err = a.withLog(subject, func(log *logstore.Log) *messages.Error {
		var err *messages.Error
		page, err = a.fetchFrom(r, log, subject, req, wait, builder)
		return err
	})
	return page, err
}

// fetchFrom answers a FETCH from log: it finds where the page starts,
// waits there for a long poll, and reads the page.
func (a *api) fetchFrom(r *request, log *logstore.Log, subject string, req messages.FetchRequest, wait context.Context, builder *messages.FetchReplyBuilder) ([]byte, *messages.Error) {
	end := a.vis.end(log)
	if req.Offset != nil && *req.Offset > end && a.vis.lags() {
		// A group member that has not heard of the latest commits yet
		// (it was paused, or is catching up) waits for them before it
		// says 416 about an offset another member has served.
		if err := a.waitAsLongPoll(r, func() { end = a.vis.catchUp(wait, log, *req.Offset) }); err != nil {
			return nil, err
		}
	}
	start, err := startOffset(log, a.vis.first(log), end, req.Offset, req.StartTime)
	if err != nil {
		if err.Code == messages.CodeOutOfRange && req.Offset != nil && *req.Offset > end {
			err = deadEnd(log, subject, heldNotCommitted(log, subject, *req.Offset, end, err))
		}
		return nil, err
	}
	if start >= end {
		if err := deadEnd(log, subject, nil); err != nil {
			return nil, err
		}
	}
	switch {
	case req.WaitMs > 0 && start >= end:
		if err := a.waitAsLongPoll(r, func() { a.vis.waitFor(wait, log, start) }); err != nil {
			return nil, err
		}
	case start >= end && start < log.EndOffset():
		// In a group: this member holds the record asked for and has
		// not heard of its commit yet.
		if err := a.waitAsLongPoll(r, func() { a.vis.catchUp(wait, log, start+1) }); err != nil {
			return nil, err
		}
	}
	return a.readPage(r, log, subject, req, start, builder)
}

// readPage reads the page of a FETCH from start into builder, as long as
// the request, max_payload and the reply budget allow.
func (a *api) readPage(r *request, log *logstore.Log, subject string, req messages.FetchRequest, start uint64, builder *messages.FetchReplyBuilder) ([]byte, *messages.Error) {
	a.toWorking(r)
	maxPayload := a.maxReply(r.msg.Reply)
	// The page grows inside its reservation of the reply budget: a first
	// piece now, doubled while records need it (addWithinBudget).
	if err := a.reserve(r, int64(min(maxPayload, firstPageReserve))); err != nil {
		return nil, err
	}
	maxBytes := maxPayload
	if req.MaxBytes > 0 && req.MaxBytes < uint64(maxPayload) {
		maxBytes = int(req.MaxBytes)
	}
	// The reply reports the log as it is now; records appended while it is
	// built wait for the next fetch.
	first, end := a.vis.first(log), a.vis.end(log)
	builder.Reset()
	payloadBytes := 0
	var tooLarge, decodeFailed error
	var overloaded *messages.Error
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
		added, budgetErr := a.addWithinBudget(r, builder, maxPayload, subject, v, headers)
		switch {
		case added:
		case budgetErr != nil && builder.Count() == 0:
			overloaded = budgetErr
			return false
		case budgetErr != nil:
			return false // a shorter page: the budget holds no more now
		default:
			if builder.Count() == 0 {
				tooLarge = fmt.Errorf("record %d of %s (%d bytes) cannot fit in one reply under max_payload %d", v.Offset, messages.Quote(subject), size, maxPayload)
			}
			return false
		}
		payloadBytes += size
		return true
	})
	switch {
	case overloaded != nil:
		return nil, overloaded
	case tooLarge != nil:
		return nil, messages.Errorf(messages.CodeTooLarge, "%v", tooLarge)
	case decodeFailed != nil:
		return nil, messages.Errorf(messages.CodeInternal, "record headers of %s: %v", messages.Quote(subject), decodeFailed)
	case scanErr != nil && builder.Count() == 0:
		return nil, storeError(scanErr)
	case scanErr != nil:
		// Serve what was read; the next fetch starts at the bad record
		// and reports it.
		a.warn.Error("read error", "subject", subject, "offset", stoppedAt, "err", scanErr)
	}
	next := start + uint64(builder.Count()) // records are contiguous from start
	page := builder.Finish(subject, next, first, end)
	a.trim(r, int64(cap(page))) // what the page holds while it is sent
	return page, nil
}

// firstPageReserve is what a FETCH reserves of the reply budget before it
// reads a record: a page of a few small records, what a woken long poll
// needs. It is small because long polls wake together: 5,000 of one
// client woken by one record must all fit in that client's share (a
// quarter of 256 MiB holds 16,384 of these); a bigger page doubles its
// reservation as its records need.
const firstPageReserve = 4 << 10

// addWithinBudget adds record v to the page unless the page would then
// pass maxPayload, or grow past what r can reserve of the reply budget.
// The reservation doubles (up to maxPayload) while a record does not fit
// in it. added false with a nil error: the record cannot fit under
// maxPayload; with an error: the budget has no room for it now.
func (a *api) addWithinBudget(r *request, builder *messages.FetchReplyBuilder, maxPayload int, subject string, v logstore.RecordView, headers map[string][]string) (added bool, err *messages.Error) {
	for {
		limit := min(int(r.reserved), maxPayload)
		if builder.AddWithin(limit, subject, v.Offset, v.Timestamp, headers, v.Data) {
			return true, nil
		}
		if limit >= maxPayload {
			return false, nil
		}
		if err := a.reserve(r, int64(min(maxPayload, 2*limit)-limit)); err != nil {
			return false, err
		}
	}
}
