package sidecar

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// capture appends every message of its filters to the store. Each filter
// has its own subscription, so NATS calls handle from one goroutine per
// filter, in arrival order; handle does nothing slower than the append
// itself. Acknowledged appends wait for durability in goroutines of their
// own, holding their log open until the ack is sent.
type capture struct {
	store   *logstore.Store
	replies *nats.Conn // where acks are published
	prefix  string     // the API prefix, never captured
	metrics *metrics
	logger  *throttledLogger

	subs        []*nats.Subscription
	dropMu      sync.Mutex
	droppedSeen map[*nats.Subscription]int
	acksOK      prometheus.Counter // voik_acks_total{result="ok"}, resolved once: acks are hot
	acksFailed  prometheus.Counter // {result="error"}
	acks        sync.WaitGroup     // acks not answered yet
	ackQueues   []chan pendingAck  // one per ack worker
	closed      atomic.Bool
}

// filterCounters are one filter's metric children, resolved once.
type filterCounters struct {
	filter   string
	messages prometheus.Counter
	bytes    prometheus.Counter
	errors   prometheus.Counter
}

// excluded says whether a subject is never stored (PROTOCOL.md section 2).
func excluded(subject, prefix string) bool {
	return strings.HasPrefix(subject, "_INBOX.") || strings.HasPrefix(subject, "$") ||
		subject == prefix || strings.HasPrefix(subject, prefix) && subject[len(prefix)] == '.'
}

func (c *capture) subscribe(nc *nats.Conn, filters []string, pendingMsgs, pendingBytes int) error {
	for _, filter := range filters {
		counters := &filterCounters{
			filter:   filter,
			messages: c.metrics.messagesStored.WithLabelValues(filter),
			bytes:    c.metrics.bytesStored.WithLabelValues(filter),
			errors:   c.metrics.appendErrors.WithLabelValues(filter),
		}
		c.metrics.dropped.WithLabelValues(filter) // a zero series to alert on from the start
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
	if excluded(msg.Subject, c.prefix) {
		return
	}
	if _, replayed := msg.Header[messages.HeaderOffset]; replayed {
		return
	}
	start := time.Now()
	now := start.UnixNano()
	wantsAck := msg.Reply != ""
	if wantsAck {
		_, wantsAck = msg.Header[messages.HeaderAck]
	}
	if !messages.ValidSubject(msg.Subject) {
		// NATS routes a publish to a literal wildcard subject ("a.*") to
		// the subscriptions it matches, but no request could name that
		// subject (400), so it is not stored.
		if wantsAck {
			c.sendAck(msg.Reply, messages.EncodeError(messages.Errorf(messages.CodeBadRequest, "%q is not a subject voik can store: it has a wildcard token", msg.Subject)), false)
		}
		return
	}
	log, err := c.store.Acquire(msg.Subject, true)
	if err != nil {
		c.appendFailed(msg, counters, err, wantsAck)
		return
	}
	offset, ts, err := log.Append(now, logstore.Headers(msg.Header), msg.Data)
	c.metrics.appendSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		c.store.Release(log)
		c.appendFailed(msg, counters, err, wantsAck)
		return
	}
	counters.messages.Inc()
	counters.bytes.Add(float64(logstore.PayloadSize(logstore.Headers(msg.Header), msg.Data)))
	if !wantsAck {
		c.store.Release(log)
		return
	}
	log.RequestSync() // group commit starts now, with every ack waiting
	c.acks.Add(1)
	c.ackQueues[ackShard(msg.Subject)] <- pendingAck{log: log, subject: msg.Subject, reply: msg.Reply, offset: offset, ts: ts}
}

// pendingAck is an acked append waiting for its record to be durable.
type pendingAck struct {
	log     *logstore.Log
	subject string
	reply   string
	offset  uint64
	ts      int64
}

// ackWorkers answer acks: each owns a queue, and a subject always goes to
// the same queue, so its acks leave in offset order. Long-lived workers
// cost far less than a goroutine per ack, and several of them keep a slow
// subject from holding up the others for more than one sync.
const (
	ackWorkers    = 8
	ackQueueDepth = 1 << 13 // per worker; capture waits when a queue is full
)

func ackShard(subject string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(subject); i++ {
		h = (h ^ uint32(subject[i])) * 16777619
	}
	return int(h % ackWorkers)
}

// startAckWorkers starts the workers; they stop once their queues are
// closed and drained (stopAckWorkers).
func (c *capture) startAckWorkers() {
	c.acksOK = c.metrics.acks.WithLabelValues("ok")
	c.acksFailed = c.metrics.acks.WithLabelValues("error")
	c.ackQueues = make([]chan pendingAck, ackWorkers)
	for i := range c.ackQueues {
		queue := make(chan pendingAck, ackQueueDepth)
		c.ackQueues[i] = queue
		go func() {
			for a := range queue {
				c.answerAck(a)
			}
		}()
	}
}

// stopAckWorkers lets the workers finish their queues and exit; capture
// must have stopped delivering.
func (c *capture) stopAckWorkers() {
	for _, queue := range c.ackQueues {
		close(queue)
	}
}

func (c *capture) answerAck(a pendingAck) {
	defer c.acks.Done()
	defer c.store.Release(a.log)
	if err := a.log.WaitDurable(context.Background(), a.offset); err != nil {
		c.sendAck(a.reply, messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "record %d of %s could not be made durable: %v", a.offset, a.subject, err)), false)
		return
	}
	c.sendAck(a.reply, messages.AppendAckReply(nil, a.subject, a.offset, a.ts), true)
}

func (c *capture) appendFailed(msg *nats.Msg, counters *filterCounters, err error, wantsAck bool) {
	counters.errors.Inc()
	c.logger.Error("cannot store message", "subject", msg.Subject, "filter", counters.filter, "err", err)
	if !wantsAck {
		return
	}
	code := messages.CodeInternal
	switch {
	case errors.Is(err, logstore.ErrNoSpace), errors.Is(err, logstore.ErrClosed), errors.Is(err, logstore.ErrSyncFailed):
		code = messages.CodeUnavailable
	case errors.Is(err, logstore.ErrRecordTooLarge):
		code = messages.CodeTooLarge
	}
	c.sendAck(msg.Reply, messages.EncodeError(messages.Errorf(code, "%s: %v", msg.Subject, err)), false)
}

func (c *capture) sendAck(reply string, body []byte, ok bool) {
	if ok {
		c.acksOK.Inc()
	} else {
		c.acksFailed.Inc()
	}
	if err := c.replies.Publish(reply, body); err != nil {
		c.logger.Error("cannot send ack", "err", err)
	}
}

// drain stops taking messages, appends everything NATS already delivered,
// and returns once the subscriptions are closed.
func (c *capture) drain(ctx context.Context) {
	for _, sub := range c.subs {
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			continue
		}
		select {
		case <-closed:
		case <-ctx.Done():
			return
		}
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
