package sidecar

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// appendOne stores a message that arrived alone. The store writes one
// record through the mapping, and makes a new subject's log with it.
func (c *capture) appendOne(msg *nats.Msg, counters *filterCounters, start time.Time, wantsAck bool) {
	b := &counters.batch
	id, hasID := counters.dedupe.msgID(msg)
	if hasID {
		if first, dup := c.duplicateOf(counters.dedupe, msg, id, start.UnixNano()); dup {
			c.answerDuplicate(msg, wantsAck, first)
			return
		}
	}
	headers := logstore.Headers(msg.Header)
	b.one[0] = logstore.Entry{Timestamp: start.UnixNano(), Headers: headers, Data: msg.Data}
	offset, _, err := c.store.Append(msg.Subject, b.one[:])
	ts := b.one[0].Timestamp
	b.one[0] = logstore.Entry{} // hold no message for the garbage collector
	c.metrics.appendSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		c.appendFailed(msg, counters, err, wantsAck)
		return
	}
	c.stored(counters, 1, logstore.PayloadSize(headers, msg.Data))
	c.metrics.batchRecords.Observe(1)
	var items []ackItem
	if wantsAck {
		items = []ackItem{{reply: msg.Reply, offset: offset, ts: ts}}
	}
	var span journalSpan
	if c.group != nil {
		if span, err = c.group.journal(msg.Subject, offset, 1); err != nil {
			c.journalFailed(msg.Subject, counters, err, items)
			return
		}
	}
	if hasID {
		counters.dedupe.stored(msg.Subject, id, offset, ts)
		counters.dedupe.sweep(start)
	}
	if !wantsAck && c.group == nil {
		return
	}
	c.store.RequestSync(msg.Subject) // group commit starts now, with every ack waiting
	c.queueAcks(msg.Subject, pendingAck{subject: msg.Subject, items: items, last: offset, span: span})
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
	entries := b.entries[:0]
	for k := range count {
		h := held(k)
		entries = append(entries, logstore.Entry{Timestamp: h.arrived.UnixNano(), Headers: logstore.Headers(h.msg.Header), Data: h.msg.Data})
	}
	var acks []ackItem // acked messages of this group, answered together
	for done := 0; done < len(entries); {
		first, n, err := c.store.Append(subject, entries[done:])
		stored := time.Now()
		if n > 0 {
			c.metrics.batchRecords.Observe(float64(n))
		}
		payload := 0
		for k := range n {
			h := held(done + k)
			h.stored, h.offset, h.ts = true, first+uint64(k), entries[done+k].Timestamp
			c.metrics.appendSeconds.Observe(stored.Sub(h.arrived).Seconds())
			payload += logstore.PayloadSize(logstore.Headers(h.msg.Header), h.msg.Data)
			if h.wantsAck {
				acks = append(acks, ackItem{reply: h.msg.Reply, offset: first + uint64(k), ts: entries[done+k].Timestamp})
			}
		}
		c.stored(counters, n, payload)
		if c.group != nil && n > 0 {
			// In a group, each stored run is journaled at once and
			// waits for its commit on its own.
			acks = c.journalRun(subject, counters, first, n, acks)
		}
		done += n
		switch {
		case err == nil:
		case done < len(entries) && refusedAlone(err):
			// entries[done] was not stored; the next may be.
			h := held(done)
			c.appendFailed(h.msg, counters, err, h.wantsAck)
			done++
		case done < len(entries):
			// None of the rest can be stored now (the log cannot be
			// opened, is corrupt, or its sync failed): each is told so.
			for ; done < len(entries); done++ {
				h := held(done)
				c.appendFailed(h.msg, counters, err, h.wantsAck)
			}
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
		return
	}
	c.store.RequestSync(subject)
	c.queueAcks(subject, pendingAck{subject: subject, items: acks})
}

// journalRun journals the n records of subject stored from first on, and
// queues them, with acks (theirs), to wait for durability and commit. It
// returns acks emptied for the next run.
func (c *capture) journalRun(subject string, counters *filterCounters, first uint64, n int, acks []ackItem) []ackItem {
	span, err := c.group.journal(subject, first, n)
	if err != nil {
		c.journalFailed(subject, counters, err, acks)
		return acks[:0]
	}
	c.store.RequestSync(subject)
	c.queueAcks(subject, pendingAck{subject: subject, items: acks, last: first + uint64(n) - 1, span: span})
	return nil
}

// journalFailed answers acks 503 for records stored but not journaled:
// they are not the group's (no copy will hold them, and the next leader
// drops them), and this member cannot go on leading.
func (c *capture) journalFailed(subject string, counters *filterCounters, err error, acks []ackItem) {
	counters.errors.Inc()
	c.logger.Error("cannot journal stored records: giving up the lead", "subject", subject, "err", err)
	c.group.broken(err)
	for _, item := range acks {
		c.sendAck(item.reply, messages.EncodeError(messages.Errorf(messages.CodeUnavailable, "%s: not replicated: %v; retry", messages.Quote(subject), err)), false)
	}
}

// refusedAlone says whether an append error is about the record refused
// only, so that the records after it may still be stored: one too large,
// or too large for the space left.
func refusedAlone(err error) bool {
	return errors.Is(err, logstore.ErrRecordTooLarge) || errors.Is(err, logstore.ErrNoSpace)
}

// stored counts n messages stored, with payload bytes in all.
func (c *capture) stored(counters *filterCounters, n, payload int) {
	counters.messages.Add(float64(n))
	counters.bytes.Add(float64(payload))
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
