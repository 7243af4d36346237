package sidecar

import (
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/voik/voik/messages"
)

// replyBudget bounds the memory that API replies take: the bytes of every
// reply being built or handed to NATS are reserved here first, and a
// request that finds no room is answered 503 at once, before anything of
// its page is allocated. So voik's heap under any read load is the budget
// plus a constant, whatever the request rate.
//
// One requester (a reply-subject prefix, see requesterOf) may hold at most
// a share of the budget, so that a client that floods voik with requests
// leaves room for everyone else: its excess requests get 503 while others
// are served. Clients that send each request from an inbox of its own
// cannot be told apart; they share the budget as before.
type replyBudget struct {
	limit int64 // the whole budget, bytes
	share int64 // the most one requester may hold

	mu      sync.Mutex
	used    int64            // guarded by mu
	holders map[string]int64 // guarded by mu: requester → bytes it holds
}

// shareDivisor: one requester may hold 1/shareDivisor of the budget.
const shareDivisor = 4

func newReplyBudget(limit int64) *replyBudget {
	return &replyBudget{limit: limit, share: max(limit/shareDivisor, 1), holders: map[string]int64{}}
}

// overBudget says why a reservation was refused.
type overBudget int

const (
	withinBudget overBudget = iota
	budgetFull              // the whole budget is taken
	shareFull               // this requester holds its share
)

// reserve takes n bytes for requester, or says why it cannot.
func (b *replyBudget) reserve(requester string, n int64) overBudget {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.holders[requester]
	switch {
	case b.used+n > b.limit:
		return budgetFull
	case held+n > b.share:
		return shareFull
	}
	b.used += n
	b.holders[requester] = held + n
	return withinBudget
}

// release gives back n bytes that requester reserved.
func (b *replyBudget) release(requester string, n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if held := b.holders[requester] - n; held > 0 {
		b.holders[requester] = held
	} else {
		delete(b.holders, requester) // the map holds only requesters with bytes out
	}
}

// inUse is the bytes reserved now.
func (b *replyBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// requesterOf names who sent a request, from its reply subject: the
// subject without its last token when it has three or more. nats.go, the
// nats CLI and nats.js answer every request of one connection on
// "_INBOX.<connection's id>.<token>", so this is the connection; a reply
// subject of one or two tokens is its own requester.
func requesterOf(reply string) string {
	last := strings.LastIndexByte(reply, '.')
	if last < 0 || strings.IndexByte(reply[:last], '.') < 0 {
		return reply
	}
	return reply[:last]
}

// pagePool keeps the builders of FETCH pages between requests, up to a
// total of limit bytes of their memory (a quarter of the reply budget: as
// much as one requester may hold). A flood of FETCHes then reuses the
// same pages instead of making garbage at its own rate: with sync.Pool
// (emptied by every collection) and GOGC=400, a flood of 1 MiB pages grew
// voik's heap to four times what was live. Builders nobody took for
// pagePoolIdle are dropped (trim), so that memory falls back after a burst.
type pagePool struct {
	limit int64

	mu        sync.Mutex
	free      []*messages.FetchReplyBuilder // guarded by mu; most recently used last
	freeBytes int64                         // guarded by mu: their Cap, summed
	lastGet   time.Time                     // guarded by mu
}

// pagePoolIdle is how long the pool keeps builders nobody asks for.
const pagePoolIdle = 10 * time.Second

func (p *pagePool) get() *messages.FetchReplyBuilder {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastGet = time.Now()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.freeBytes -= int64(b.Cap())
		return b
	}
	return new(messages.FetchReplyBuilder)
}

// put gives a builder back; past the limit it is left to the collector.
func (p *pagePool) put(b *messages.FetchReplyBuilder) {
	size := int64(b.Cap())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.freeBytes+size > p.limit {
		return
	}
	p.free = append(p.free, b)
	p.freeBytes += size
}

// trim drops every builder when none was asked for in pagePoolIdle, and
// returns the bytes it let go.
func (p *pagePool) trim(now time.Time) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.lastGet) < pagePoolIdle || len(p.free) == 0 {
		return 0
	}
	dropped := p.freeBytes
	clear(p.free)
	p.free, p.freeBytes = p.free[:0], 0
	return dropped
}

// releaseAfterLoad gives memory back to the system once a read burst is
// over: every half pagePoolIdle it trims the pool, and when that let go of at
// least releaseAtLeast bytes it runs debug.FreeOSMemory (a collection, and
// the freed pages returned at once rather than over minutes). It returns
// when done is closed.
func (p *pagePool) releaseAfterLoad(done <-chan struct{}, logger *slog.Logger) {
	tick := time.NewTicker(pagePoolIdle / 2)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			if dropped := p.trim(now); dropped >= releaseAtLeast {
				debug.FreeOSMemory()
				logger.Debug("read load over: memory of idle FETCH pages returned", "bytes", dropped)
			}
		}
	}
}

// releaseAtLeast is how much trimmed memory is worth a FreeOSMemory.
const releaseAtLeast = 32 << 20
