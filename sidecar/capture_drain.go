package sidecar

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// drain stops taking messages, appends everything NATS already delivered,
// and returns once the subscriptions are closed.
func (c *capture) drain(ctx context.Context, nc *nats.Conn) { drainAll(ctx, nc, c.subs) }

// drainAll drains subs: NATS stops sending, the messages already delivered
// are handled, and it returns once every one is closed (or ctx is done).
func drainAll(ctx context.Context, nc *nats.Conn, subs []*nats.Subscription) {
	if !nc.IsConnected() {
		// A drain starts with a round trip to the server, which waits
		// for a reconnect (10 s); with NATS away nothing more can
		// arrive, so finish what was delivered and unsubscribe.
		finishDelivered(ctx, subs)
		return
	}
	reconnects := nc.Stats().Reconnects
	var closing []<-chan nats.SubStatus
	for _, sub := range subs { // all at once: each drain takes a round trip or more
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err == nil {
			closing = append(closing, closed)
		}
	}
	waitClosed := func(ctx context.Context) bool {
		for _, closed := range closing {
			select {
			case <-closed:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	if waitClosed(ctx) {
		resubscribeAfterDrain(nc, reconnects)
		return
	}
	go func() { // finish the check once the drains end
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if waitClosed(ctx) {
			resubscribeAfterDrain(nc, reconnects)
		}
	}()
}

// resubscribeAfterDrain makes nc connect afresh when it reconnected while
// subscriptions were being drained. nats.go (v1.55.0) sends the server a
// subscription that is draining again when it reconnects, then closes it
// on its side only: the server goes on delivering to it, and nobody reads
// what it delivers. For a queue group that is a share of the requests
// lost (seen in TestGroupSurvivesKill9OfNATSServers: two subscriptions of
// one member in the group's queue on one connection, the stale one taking
// every other request). A new connection carries only the live
// subscriptions.
func resubscribeAfterDrain(nc *nats.Conn, reconnectsBefore uint64) {
	if nc.Stats().Reconnects != reconnectsBefore && !nc.IsClosed() {
		nc.ForceReconnect()
	}
}

// finishDelivered waits until the handlers of subs have taken every
// message delivered to them (nats.go has no event for it, so it looks
// every few milliseconds), then unsubscribes, as a drain does after its
// round trip.
func finishDelivered(ctx context.Context, subs []*nats.Subscription) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for _, sub := range subs {
		for {
			if msgs, _, err := sub.Pending(); err != nil || msgs == 0 {
				break
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
		sub.Unsubscribe()
	}
}
