package client

import (
	"context"
	"fmt"
	"github.com/voik/voik/messages"
)

// ReadOptions tune ReadRange.
type ReadOptions struct {
	// Depth is how many FETCH requests are in flight at once. While fn
	// looks at one page, voik reads the next ones and NATS carries them.
	// Default: as many pages as fit in ReadAheadBytes (8 at NATS's
	// default max_payload of 1 MiB), at least 2, at most 16.
	Depth int
	// MaxBytes is each FETCH's max_bytes; 0 is the reply limit.
	MaxBytes uint64
}

// ReadAheadBytes bounds the replies ReadRange keeps in flight when
// ReadOptions.Depth is not set. Reading 1 KiB records on loopback with two
// cores, 8 pages of 1 MiB in flight read about a quarter faster than 4;
// 16 gained a little more but cost voik about 40 MiB more heap while it
// served them (see docs/performance.md).
const ReadAheadBytes = 8 << 20

// defaultDepth is how many pages of at most maxBytes (0: the reply
// limit), under a server's max_payload, fit in ReadAheadBytes; at least 2,
// so that voik reads one page while the reader takes the other, and at
// most 16, past which small pages gain nothing more.
func defaultDepth(maxBytes uint64, maxPayload int64) int {
	page := uint64(max(maxPayload, 1))
	if maxBytes > 0 && maxBytes < page {
		page = maxBytes
	}
	return int(max(2, min(ReadAheadBytes/page, 16)))
}

// ReadRange calls fn with the records [from, to) of subject, in order, a
// page at a time, keeping several FETCH requests in flight instead of
// waiting for each page before asking for the next. The first page tells
// how many records a page holds; the next pages are asked for at the
// offsets that predicts, and a page that comes back short (its records
// were larger) is completed by further requests before fn sees what
// follows it. fn must not keep the records past its return (messages.Record.Data
// points into the reply). to must not be beyond the subject's end offset.
// An error from fn or from a FETCH ends the read; requests still in flight
// are left to finish on their own.
func (c *Client) ReadRange(ctx context.Context, subject string, from, to uint64, opts ReadOptions, fn func([]messages.Record) error) error {
	depth := opts.Depth
	if depth <= 0 {
		depth = defaultDepth(opts.MaxBytes, c.nc.MaxPayload())
	}
	rr := &rangeReader{c: c, ctx: ctx, subject: subject, maxBytes: opts.MaxBytes, to: to, fn: fn, next: from}
	if rr.next >= to {
		return nil
	}
	// The first page alone, as large as a reply may be, to learn its size.
	if err := rr.fetchAndDeliver(min(to-rr.next, messages.MaxMessagesCap)); err != nil {
		return err
	}
	ahead := pipeline{fetch: rr.fetch, depth: depth, planned: rr.next, perPage: rr.next - from, to: to}
	for rr.next < to {
		ahead.fill()
		p, reply, err := ahead.take(ctx)
		if err != nil {
			return err
		}
		if err := rr.deliver(reply); err != nil {
			return err
		}
		if err := rr.completeShortPage(p.offset + p.count); err != nil {
			return err
		}
	}
	return nil
}

// rangeReader is one ReadRange's delivery of records to fn: in order,
// each record once, none past to, whichever request fetched it.
type rangeReader struct {
	c        *Client
	ctx      context.Context
	subject  string
	maxBytes uint64 // each FETCH's max_bytes; 0 is the reply limit
	to       uint64
	fn       func([]messages.Record) error
	next     uint64 // the next offset fn gets
}

// fetch is one FETCH of count records of the subject from offset. The
// pipeline calls it from several goroutines at once.
func (rr *rangeReader) fetch(offset, count uint64) (*messages.FetchReply, error) {
	return rr.c.Fetch(rr.ctx, rr.subject, messages.FetchRequest{Offset: &offset, MaxMessages: count, MaxBytes: rr.maxBytes})
}

// deliver passes a reply's records, which must start at next, to fn, up to
// to, and moves next past them. A reply with no records is an error: to is
// within the subject, so the record at next is missing, and reading on
// would ask for it again for ever.
func (rr *rangeReader) deliver(r *messages.FetchReply) error {
	at := rr.next
	if len(r.Records) == 0 {
		return fmt.Errorf("voik: read %s: no record at offset %d (end offset %d)", rr.subject, at, r.EndOffset)
	}
	if r.Records[0].Offset != at {
		return fmt.Errorf("voik: read %s: asked for offset %d, got %d", rr.subject, at, r.Records[0].Offset)
	}
	n := uint64(len(r.Records))
	if at+n > rr.to {
		n = rr.to - at
	}
	if err := rr.fn(r.Records[:n]); err != nil {
		return err
	}
	rr.next += n
	return nil
}

// fetchAndDeliver reads count records from next, one FETCH, and passes
// them on.
func (rr *rangeReader) fetchAndDeliver(count uint64) error {
	r, err := rr.fetch(rr.next, count)
	if err != nil {
		return err
	}
	return rr.deliver(r)
}

// completeShortPage fetches, one request at a time, what a short page left
// of its range before end: the pages in flight after it start at end, so
// fn would otherwise miss those records.
func (rr *rangeReader) completeShortPage(end uint64) error {
	for rr.next < end {
		if err := rr.fetchAndDeliver(end - rr.next); err != nil {
			return err
		}
	}
	return nil
}

// pipeline is ReadRange's FETCH requests in flight, oldest first, each
// for perPage records at the offset after the previous one's.
type pipeline struct {
	fetch    func(offset, count uint64) (*messages.FetchReply, error)
	depth    int    // requests in flight at most
	planned  uint64 // the next offset asked for, after the first page
	perPage  uint64 // records asked for per page: what the first page held
	to       uint64
	inFlight []page
}

// page is a request in flight and where its reply will come.
type page struct {
	offset, count uint64
	reply         chan pageReply
}

type pageReply struct {
	reply *messages.FetchReply
	err   error
}

// fill asks for the next pages until depth are in flight or all of the
// range has been asked for.
func (p *pipeline) fill() {
	for len(p.inFlight) < p.depth && p.planned < p.to {
		count := min(p.perPage, p.to-p.planned)
		p.ask(p.planned, count)
		p.planned += count
	}
}

// ask sends a FETCH of count records from offset without waiting for it.
// The reply channel has room for the reply, so a request whose reply is
// never taken (the read ended) still finishes.
func (p *pipeline) ask(offset, count uint64) {
	pg := page{offset: offset, count: count, reply: make(chan pageReply, 1)}
	go func() {
		r, err := p.fetch(offset, count)
		pg.reply <- pageReply{r, err}
	}()
	p.inFlight = append(p.inFlight, pg)
}

// take removes the oldest request in flight and waits for its reply.
func (p *pipeline) take(ctx context.Context) (page, *messages.FetchReply, error) {
	pg := p.inFlight[0]
	p.inFlight = p.inFlight[1:]
	var r pageReply
	select {
	case r = <-pg.reply:
	case <-ctx.Done():
		return pg, nil, ctx.Err()
	}
	return pg, r.reply, r.err
}
