package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/messages"
)

// pagingReader pages through a subject with next_offset, as a consumer
// does, and keeps what would hurt one: a 416, a page that does not start
// where it asked, offsets that are not consecutive, and any other error.
type pagingReader struct {
	mu       sync.Mutex
	pages    int
	records  int
	problems []string
	errs     map[string]int // errors retried, by kind
}

func (r *pagingReader) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) < 20 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

func (r *pagingReader) read(ctx context.Context, api *client.Client, subject string) {
	next := uint64(0)
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		reply, err := api.Fetch(fctx, subject, messages.FetchRequest{Offset: &next, MaxMessages: 50, WaitMs: 200})
		cancel()
		var e *messages.Error
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &e) && e.Code == messages.CodeOutOfRange:
			r.problem("FETCH at %d: %v", next, err)
			continue
		case err != nil:
			kind := "other: " + err.Error()
			switch {
			case errors.Is(err, nats.ErrNoResponders):
				kind = "no responders"
			case errors.Is(err, context.DeadlineExceeded):
				kind = "timeout"
			case errors.As(err, &e):
				kind = fmt.Sprintf("error %d", e.Code)
			}
			r.mu.Lock()
			r.errs[kind]++
			r.mu.Unlock()
			continue
		}
		for i, rec := range reply.Records {
			if rec.Offset != next+uint64(i) {
				r.problem("FETCH at %d: record %d has offset %d (skipped or repeated)", next, i, rec.Offset)
			}
		}
		if reply.NextOffset != next+uint64(len(reply.Records)) {
			r.problem("FETCH at %d: %d records and next_offset %d", next, len(reply.Records), reply.NextOffset)
		}
		r.mu.Lock()
		r.pages++
		r.records += len(reply.Records)
		r.mu.Unlock()
		next = reply.NextOffset
	}
}

// TestGroupRollingRestartLosesNothingAndReadersNeverNotice restarts the
// members one at a time as a StatefulSet rolling update does: in reverse
// ordinal order (the leader among them), SIGTERM, start, and the next only
// once the restarted member is ready (leader or in sync). Acked load and
// two paging readers run throughout: no acked record is lost or stored
// twice, and the readers never get a 416, a skipped or repeated offset, or
// an error at all (the client retries what a member going away answers).
func TestGroupRollingRestartLosesNothingAndReadersNeverNotice(t *testing.T) {
	g := startGroupUnderLoad(t, "orders.rolling", 2500)
	readCtx, stopReaders := context.WithCancel(context.Background())
	defer stopReaders()
	readers := []*pagingReader{{errs: map[string]int{}}, {errs: map[string]int{}}}
	var reading sync.WaitGroup
	for _, r := range readers {
		reading.Add(1)
		go func() { defer reading.Done(); r.read(readCtx, g.api, g.load.subject) }()
	}
	for round := range 2 {
		for i := len(g.members) - 1; i >= 0; i-- {
			rollOne(t, g, round, i)
		}
	}
	g.run.wait()
	stopReaders()
	reading.Wait()
	for i, r := range readers {
		t.Logf("reader %d: %d pages, %d records, retried errors %v", i, r.pages, r.records, r.errs)
		for _, p := range r.problems {
			t.Errorf("reader %d: %s", i, p)
		}
		if len(r.errs) > 0 {
			t.Errorf("reader %d saw errors %v", i, r.errs)
		}
		if r.records == 0 {
			t.Errorf("reader %d read nothing", i)
		}
	}
	g.finish(t)
	stopAndCompare(t, g.members)
}

// rollOne restarts member i as a rolling update does: SIGTERM, start, and
// back once it is ready (leader or in sync).
func rollOne(t *testing.T, g *groupUnderLoad, round, i int) {
	t.Helper()
	p := g.members[i]
	wasLeader := leaderOf(g.members) == i
	before := g.load.count()
	began := time.Now()
	p.Stop(t)
	p.Restart(t) // returns once /readyz says leader or in sync
	t.Logf("round %d: member m%d (leader: %v) restarted and ready in %v; %d acks meanwhile",
		round, i, wasLeader, time.Since(began).Round(time.Millisecond), g.load.count()-before)
}
