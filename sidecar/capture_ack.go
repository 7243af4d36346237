package sidecar

import (
	"context"

	"github.com/voik/voik/messages"
)

// queueAcks hands acked appends of one subject, in offset order, to
// their worker.
func (c *capture) queueAcks(subject string, a pendingAck) {
	c.acks.Add(1)
	c.ackQueues[ackShard(subject)] <- a
}

// pendingAck is acked appends to one subject waiting for their records
// to be durable: one message, or those of one batch. In a group it is
// also every run of records stored (acked or not), which the leader must
// know durable before it counts itself as holding them.
type pendingAck struct {
	subject string
	items   []ackItem // offsets ascending, but for duplicates (earlier records)
	// In a group: the last record's offset (there may be no items), its
	// run's place in the journal, and for a duplicate the journal offset
	// its ack waits to be committed (the first one is below it).
	last     uint64
	span     journalSpan
	commitAt uint64
}

type ackItem struct {
	reply     string
	offset    uint64
	ts        int64
	duplicate bool // the first record of the message's Nats-Msg-Id, not its own
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

// answerAck waits until the last record of a is durable (the store
// follows the log, even if it was evicted and reopened meanwhile), then
// answers every ack of a: with its offset, or with why durability cannot
// be promised.
func (c *capture) answerAck(a pendingAck, buf []byte) []byte {
	defer c.acks.Done()
	last := a.last
	for _, item := range a.items {
		last = max(last, item.offset)
	}
	if err := c.store.WaitDurable(context.Background(), a.subject, last); err != nil {
		if c.group != nil {
			c.group.broken(err)
		}
		c.failAcks(a, err)
		return buf
	}
	if c.group != nil {
		c.commitThenAck(a)
		return buf
	}
	for _, item := range a.items {
		buf = messages.AppendAckReply(buf[:0], a.subject, item.offset, item.ts, item.duplicate)
		c.sendAck(item.reply, buf, true) // Publish copies it
	}
	return buf
}

// failAcks answers every ack of a 503: its records cannot be promised.
func (c *capture) failAcks(a pendingAck, err error) {
	for _, item := range a.items {
		c.sendAck(item.reply, messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "record %d of %s could not be made durable: %v", item.offset, messages.Quote(a.subject), err)), false)
	}
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
