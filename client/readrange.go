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
	fetch := func(offset, count uint64) (*messages.FetchReply, error) {
		return c.Fetch(ctx, subject, messages.FetchRequest{Offset: &offset, MaxMessages: count, MaxBytes: opts.MaxBytes})
	}
	type page struct {
		offset, count uint64
		reply         chan pageReply
	}
	var (
		next     = from // the next offset fn gets
		planned  uint64 // the next offset asked for, after the first page
		perPage  uint64 // records asked for per page: what the first page held
		inFlight []page
	)
	ask := func(offset, count uint64) {
		p := page{offset: offset, count: count, reply: make(chan pageReply, 1)}
		go func() {
			r, err := fetch(offset, count)
			p.reply <- pageReply{r, err}
		}()
		inFlight = append(inFlight, p)
	}
	// deliver passes a reply's records to fn and says how many there were.
	deliver := func(r *messages.FetchReply, at uint64) (uint64, error) {
		if len(r.Records) == 0 {
			return 0, fmt.Errorf("voik: read %s: no record at offset %d (end offset %d)", subject, at, r.EndOffset)
		}
		if r.Records[0].Offset != at {
			return 0, fmt.Errorf("voik: read %s: asked for offset %d, got %d", subject, at, r.Records[0].Offset)
		}
		n := uint64(len(r.Records))
		if at+n > to {
			n = to - at
		}
		return n, fn(r.Records[:n])
	}
	// fetchAndDeliver reads count records from at, one FETCH, and passes
	// them on.
	fetchAndDeliver := func(at, count uint64) (uint64, error) {
		r, err := fetch(at, count)
		if err != nil {
			return 0, err
		}
		return deliver(r, at)
	}

	// The first page alone, as large as a reply may be, to learn its size.
	if next < to {
		n, err := fetchAndDeliver(next, min(to-next, messages.MaxMessagesCap))
		if err != nil {
			return err
		}
		next += n
		planned, perPage = next, n
	}
	for next < to {
		for len(inFlight) < depth && planned < to {
			count := min(perPage, to-planned)
			ask(planned, count)
			planned += count
		}
		p := inFlight[0]
		inFlight = inFlight[1:]
		var r pageReply
		select {
		case r = <-p.reply:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return r.err
		}
		n, err := deliver(r.reply, next)
		if err != nil {
			return err
		}
		next += n
		// A short page: fetch the rest of its range before going on.
		for end := p.offset + p.count; next < end; {
			n, err := fetchAndDeliver(next, end-next)
			if err != nil {
				return err
			}
			next += n
		}
	}
	return nil
}

type pageReply struct {
	reply *messages.FetchReply
	err   error
}
