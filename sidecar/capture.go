package sidecar

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// capture appends every message of its filters to the store. Each filter
// has its own subscription, so NATS calls handle from one goroutine per
// filter, in arrival order; handle does nothing slower than the append
// itself, and appends what NATS has queued in batches (captureBatch).
// Acknowledged appends wait for durability in ack workers, holding their
// log open until the ack is sent.
type capture struct {
	store   *logstore.Store
	replies replyConns // where acks are published
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
}

// filterCounters are one filter's metric children, resolved once, and
// the batch its handler holds.
type filterCounters struct {
	filter string
	// earlier are the filters before this one that some subject matches
	// as well ("orders.*" before "*.eu"). NATS delivers a message to every
	// subscription it matches; the first filter's handler stores it and the
	// others pass, so it is stored once, and a subject's records all come
	// through one handler, in order.
	earlier  []string
	messages prometheus.Counter
	bytes    prometheus.Counter
	errors   prometheus.Counter
	batch    captureBatch
}

// takenEarlier says whether an earlier filter's handler stores subject.
func (f *filterCounters) takenEarlier(subject string) bool {
	for _, filter := range f.earlier {
		if messages.Matches(filter, subject) {
			return true
		}
	}
	return false
}

func (c *capture) subscribe(nc *nats.Conn, filters []string, pendingMsgs, pendingBytes int) error {
	for i, filter := range filters {
		var earlier []string
		for _, other := range filters[:i] {
			if messages.Overlap(other, filter) {
				earlier = append(earlier, other)
			}
		}
		counters := &filterCounters{
			filter:   filter,
			earlier:  earlier,
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
	b := &counters.batch
	more := b.queuedBehind(msg)
	c.take(msg, counters, more)
	// Whatever became of msg, flush what is held unless more is coming:
	// the last message of a burst may be one that is not stored.
	if len(b.held) > 0 && (len(b.held) >= batchRecords || b.bytes >= batchBytes || !more) {
		c.flush(counters)
	}
}

// take stores msg at once, or holds it for a batch while more messages
// are queued behind it.
func (c *capture) take(msg *nats.Msg, counters *filterCounters, more bool) {
	b := &counters.batch
	start := b.receiveTime() // for every message, stored or not
	// Under load most messages are on the subject of the one before; the
	// checks of the subject itself passed for that one.
	known := msg.Subject == b.accepted
	if !known && (messages.NeverStored(msg.Subject, c.prefix) || counters.takenEarlier(msg.Subject)) {
		return
	}
	if _, replayed := msg.Header[messages.HeaderOffset]; replayed {
		return
	}
	if _, reply := msg.Header[messages.HeaderReply]; reply {
		return // voik's own reply to a custom inbox that a filter covers
	}
	wantsAck := msg.Reply != ""
	if wantsAck {
		_, wantsAck = msg.Header[messages.HeaderAck]
	}
	if !known {
		if !messages.ValidSubject(msg.Subject) {
			// NATS routes a publish to a literal wildcard subject ("a.*")
			// to the subscriptions it matches, but no request could name
			// that subject (400), so it is not stored.
			if wantsAck {
				c.sendAck(msg.Reply, messages.EncodeError(messages.Errorf(messages.CodeBadRequest, "%s is not a subject voik can store: it has a wildcard token", messages.Quote(msg.Subject))), false)
			}
			return
		}
		b.accepted = msg.Subject
	}
	if len(b.held) == 0 && !more {
		c.appendOne(msg, counters, start, wantsAck)
		return
	}
	if len(b.held) > 0 && msg.Subject != b.held[0].msg.Subject {
		b.mixed = true
	}
	b.held = append(b.held, heldMsg{msg: msg, arrived: start, wantsAck: wantsAck})
	b.bytes += len(msg.Data)
}

// Capture under load appends the messages NATS has already queued for a
// filter together (logstore.Log.AppendBatch: one system call for many
// records); a message that arrives alone is appended at once. A message
// is held only while more are queued behind it, and only until 512 are
// held, so batching adds at most the time to take those from the queue:
// the last of a burst flushes everything held.
const (
	batchRecords = 512     // at most this many records held
	batchBytes   = 1 << 20 // or this much data
)

// captureBatch is what one filter's handler holds; only that handler's
// goroutine touches it.
type captureBatch struct {
	held    []heldMsg
	bytes   int
	groups  map[string][]int // subject -> indexes into held, in arrival order
	order   []string         // subjects in groups, in first arrival order
	entries []logstore.Entry
	behind  int  // messages known to be queued behind the last one handled
	mixed   bool // held has more than one subject

	accepted string // the last subject that passed the subject checks
	// clock is the last reading of the clock; covered is how many
	// messages NATS had queued when it was taken that are still to be
	// handled, and sinceClock how many have been given it.
	clock      time.Time
	covered    int
	sinceClock int
}

// clockEvery is how many messages share one reading of the clock at most.
const clockEvery = 16

// counted notes that NATS has n messages queued for this handler, the one
// being handled among them. Each of them arrived before now, so a reading
// of the clock taken now may stand for their receive time.
func (b *captureBatch) counted(n int) {
	b.clock, b.covered, b.sinceClock = time.Now(), n, 0
}

// receiveTime is the time the message being handled is stored as received
// at. A message that NATS had already queued when the clock was last read
// (counted) gets that reading, shared by up to clockEvery messages (each
// reading cost 3% of capture at 128 B); any other gets a reading of its
// own. So a receive time is never before the message arrived, and times
// stay in order.
func (b *captureBatch) receiveTime() time.Time {
	if b.covered > 0 {
		b.covered--
		if b.sinceClock < clockEvery {
			b.sinceClock++
			return b.clock
		}
	}
	b.clock, b.sinceClock = time.Now(), 1
	return b.clock
}

type heldMsg struct {
	msg      *nats.Msg
	arrived  time.Time
	wantsAck bool
}

// queuedBehind says, from inside msg's handler, whether NATS has more
// messages queued for its subscription. Asking takes the subscription's
// lock, which NATS's reader takes for every message it queues, so the
// answer is remembered: n queued behind this message means n-1 behind
// the next one, without asking again.
func (b *captureBatch) queuedBehind(msg *nats.Msg) bool {
	if b.behind > 0 {
		b.behind--
		if b.behind > 0 {
			return true
		}
	}
	if msg.Sub == nil {
		return false
	}
	// nats.go counts the message being handled as pending until its
	// handler returns, hence the -1.
	n, _, err := msg.Sub.Pending()
	if err != nil || n <= 1 {
		return false
	}
	b.behind = n - 1
	b.counted(n)
	return true
}

// appendOne stores a message that arrived alone.
func (c *capture) appendOne(msg *nats.Msg, counters *filterCounters, start time.Time, wantsAck bool) {
	log, err := c.store.Acquire(msg.Subject, true)
	if err != nil {
		c.appendFailed(msg, counters, err, wantsAck)
		return
	}
	offset, ts, err := log.Append(start.UnixNano(), logstore.Headers(msg.Header), msg.Data)
	c.metrics.appendSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		c.store.ReleaseUnused(log) // a new subject's log stays only with a record in it
		c.appendFailed(msg, counters, err, wantsAck)
		return
	}
	c.stored(counters, 1, logstore.PayloadSize(logstore.Headers(msg.Header), msg.Data))
	c.metrics.batchRecords.Observe(1)
	if !wantsAck {
		c.store.Release(log)
		return
	}
	log.RequestSync() // group commit starts now, with every ack waiting
	c.queueAcks(log, msg.Subject, []ackItem{{reply: msg.Reply, offset: offset, ts: ts}})
}

// flush appends everything held, one batch per subject, in arrival order
// within each subject.
func (c *capture) flush(counters *filterCounters) {
	b := &counters.batch
	if !b.mixed {
		// One subject (the common case): no grouping to do.
		c.appendGroup(b.held[0].msg.Subject, nil, counters)
		b.reset()
		return
	}
	if b.groups == nil {
		b.groups = make(map[string][]int)
	}
	for i, h := range b.held {
		subject := h.msg.Subject
		group, ok := b.groups[subject]
		if !ok {
			b.order = append(b.order, subject)
		}
		b.groups[subject] = append(group, i)
	}
	for _, subject := range b.order {
		c.appendGroup(subject, b.groups[subject], counters)
	}
	b.order = b.order[:0]
	clear(b.groups)
	b.reset()
}

// reset empties the batch after a flush.
func (b *captureBatch) reset() {
	clear(b.held) // hold no messages for the garbage collector
	b.held, b.bytes, b.mixed = b.held[:0], 0, false
}

// appendGroup appends the held messages at indexes (nil: all of them),
// all for subject.
func (c *capture) appendGroup(subject string, indexes []int, counters *filterCounters) {
	b := &counters.batch
	held := func(k int) *heldMsg {
		if indexes == nil {
			return &b.held[k]
		}
		return &b.held[indexes[k]]
	}
	count := len(indexes)
	if indexes == nil {
		count = len(b.held)
	}
	log, err := c.store.Acquire(subject, true)
	if err != nil {
		for k := range count {
			c.appendFailed(held(k).msg, counters, err, held(k).wantsAck)
		}
		return
	}
	entries := b.entries[:0]
	for k := range count {
		h := held(k)
		entries = append(entries, logstore.Entry{Timestamp: h.arrived.UnixNano(), Headers: logstore.Headers(h.msg.Header), Data: h.msg.Data})
	}
	var acks []ackItem // acked messages of this group, answered together
	storedAny := false
	for done := 0; done < len(entries); {
		first, n, err := log.AppendBatch(entries[done:])
		stored := time.Now()
		if n > 0 {
			c.metrics.batchRecords.Observe(float64(n))
		}
		payload := 0
		for k := range n {
			h := held(done + k)
			c.metrics.appendSeconds.Observe(stored.Sub(h.arrived).Seconds())
			payload += logstore.PayloadSize(logstore.Headers(h.msg.Header), h.msg.Data)
			if h.wantsAck {
				acks = append(acks, ackItem{reply: h.msg.Reply, offset: first + uint64(k), ts: entries[done+k].Timestamp})
			}
		}
		c.stored(counters, n, payload)
		storedAny = storedAny || n > 0
		done += n
		switch {
		case err == nil:
		case done < len(entries): // entries[done] was not stored
			h := held(done)
			c.appendFailed(h.msg, counters, err, h.wantsAck)
			done++
		default:
			// All stored, but not made durable (SyncAlways): the acks
			// waiting for durability are answered with the error.
			counters.errors.Inc()
			c.logger.Error("stored messages could not be made durable", "subject", subject, "filter", counters.filter, "err", err)
		}
	}
	clear(entries)
	b.entries = entries[:0]
	if len(acks) == 0 {
		if storedAny {
			c.store.Release(log)
		} else {
			c.store.ReleaseUnused(log) // a new subject's log stays only with a record in it
		}
		return
	}
	log.RequestSync()
	c.queueAcks(log, subject, acks) // the acks hold the reference until answered
}

// stored counts n messages stored, with payload bytes in all.
func (c *capture) stored(counters *filterCounters, n, payload int) {
	counters.messages.Add(float64(n))
	counters.bytes.Add(float64(payload))
}

// queueAcks hands acked appends of one subject, in offset order, to
// their worker, with the log reference they hold until they are answered.
func (c *capture) queueAcks(log *logstore.Log, subject string, items []ackItem) {
	c.acks.Add(1)
	c.ackQueues[ackShard(subject)] <- pendingAck{log: log, subject: subject, items: items}
}

// pendingAck is acked appends to one log waiting for their records to be
// durable: one message, or those of one batch.
type pendingAck struct {
	log     *logstore.Log
	subject string
	items   []ackItem // offsets ascending
}

type ackItem struct {
	reply  string
	offset uint64
	ts     int64
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
			var buf []byte
			for a := range queue {
				buf = c.answerAck(a, buf)
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

func (c *capture) answerAck(a pendingAck, buf []byte) []byte {
	defer c.acks.Done()
	defer c.store.Release(a.log)
	last := a.items[len(a.items)-1].offset
	if err := a.log.WaitDurable(context.Background(), last); err != nil {
		for _, item := range a.items {
			c.sendAck(item.reply, messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "record %d of %s could not be made durable: %v", item.offset, messages.Quote(a.subject), err)), false)
		}
		return buf
	}
	for _, item := range a.items {
		buf = messages.AppendAckReply(buf[:0], a.subject, item.offset, item.ts)
		c.sendAck(item.reply, buf, true) // Publish copies it
	}
	return buf
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
	c.sendAck(msg.Reply, messages.EncodeError(messages.Errorf(code, "%s: %v", messages.Quote(msg.Subject), err)), false)
}

func (c *capture) sendAck(reply string, body []byte, ok bool) {
	if ok {
		c.acksOK.Inc()
	} else {
		c.acksFailed.Inc()
	}
	if err := c.replies.conn().Publish(reply, body); err != nil {
		c.logger.Error("cannot send ack", "err", err)
	}
}

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
	var closing []<-chan nats.SubStatus
	for _, sub := range subs { // all at once: each drain takes a round trip or more
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err == nil {
			closing = append(closing, closed)
		}
	}
	for _, closed := range closing {
		select {
		case <-closed:
		case <-ctx.Done():
			return
		}
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
