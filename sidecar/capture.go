package sidecar

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voik/voik/logstore"
)

// capture appends every message of its filters to the store. Each filter
// has its own subscription, so NATS calls handle from one goroutine per
// filter, in arrival order; handle does nothing slower than the append
// itself, and appends what NATS has queued in batches.
//
// Its jobs, one file each:
//
//	capture_route.go   which filter's handler stores a message, and whether it is stored at all
//	capture_batch.go   holding messages NATS has queued behind one another, with a shared clock reading
//	capture_append.go  appending them to the store (logstore.Store.Append)
//	capture_ack.go     answering acked appends once their records are durable (Store.WaitDurable)
//	capture_dedupe.go  leaving out repeats of a Nats-Msg-Id stored within the window
//	capture_drain.go   stopping: everything delivered is appended before the subscriptions close
type capture struct {
	store   *logstore.Store
	replies replyConns // where acks are published
	prefix  string     // the API prefix, never captured
	// dedupeWindow is VOIK_DEDUPE_WINDOW; 0 turns deduplication off.
	dedupeWindow time.Duration
	metrics      *metrics
	logger       *throttledLogger
	// group is the leadership capture works for in a group; nil
	// standalone.
	group groupLog

	subs        []*nats.Subscription
	dropMu      sync.Mutex
	droppedSeen map[*nats.Subscription]int
	acksOK      prometheus.Counter // voik_acks_total{result="ok"}, resolved once: acks are hot
	acksFailed  prometheus.Counter // {result="error"}
	acks        sync.WaitGroup     // acks not answered yet
	ackQueues   []chan pendingAck  // one per ack worker
}

func (c *capture) subscribe(nc *nats.Conn, filters []string, pendingMsgs, pendingBytes int) error {
	for i, filter := range filters {
		counters := newFilterCounters(filter, filters[:i], c.metrics)
		counters.dedupe = newDedupe(c.dedupeWindow, c.store)
		sub, err := nc.Subscribe(filter, func(msg *nats.Msg) { c.handle(msg, counters) })
		if err != nil {
			return err
		}
		if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			return err
		}
		c.subs = append(c.subs, sub)
	}
	return nil
}

func (c *capture) handle(msg *nats.Msg, counters *filterCounters) {
	b := &counters.batch
	more := b.queuedBehind(msg)
	c.take(msg, counters, more)
	// Whatever became of msg, flush what is held unless more is coming:
	// the last message of a burst may be one that is not stored.
	if len(b.held) > 0 && (len(b.held) >= batchRecords || b.bytes >= batchBytes || !more) {
		c.flush(counters)
	}
}

// noteSlowConsumer counts and logs what NATS dropped on a capture
// subscription since the last time.
func (c *capture) noteSlowConsumer(sub *nats.Subscription) {
	dropped, err := sub.Dropped()
	if err != nil {
		return
	}
	c.dropMu.Lock()
	delta := dropped - c.droppedSeen[sub]
	c.droppedSeen[sub] = dropped
	c.dropMu.Unlock()
	if delta > 0 {
		c.metrics.dropped.WithLabelValues(sub.Subject).Add(float64(delta))
		c.logger.Error("capture fell behind: NATS dropped messages (slow consumer)", "filter", sub.Subject, "dropped", delta)
	}
}

// queuedBytes is what NATS has delivered to capture's subscriptions and
// capture has not yet taken.
func (c *capture) queuedBytes() int64 {
	var total int64
	for _, sub := range c.subs {
		if _, bytes, err := sub.Pending(); err == nil {
			total += int64(bytes)
		}
	}
	return total
}
