package sidecar

import (
	"strings"
	"sync"
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
