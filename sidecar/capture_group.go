package sidecar

import (
	"github.com/voik/voik/messages"
)

// Capture in a group (PROTOCOL.md section 8): only the leader captures.
// Every run of records it stores is journaled at once (the group's one
// order of appends), counted durable on the leader once the run and its
// pointers are, and its acks leave only once the run is committed (held
// durably by every member of the in-sync set) and the lease is still held.

// journalSpan is a run's place in the journal: pointers [start, end).
type journalSpan struct{ start, end uint64 }

// groupLog is what capture needs of the leadership it captures for.
type groupLog interface {
	// journal journals the n records of subject stored from first on.
	journal(subject string, first uint64, n int) (journalSpan, error)
	// journalEnd is where the next pointer goes.
	journalEnd() uint64
	// durable counts span as held durably by the leader once its
	// pointers are durable (its records already are).
	durable(span journalSpan) error
	// afterCommit calls answer once the journal is committed up to at
	// and the lease is held (nil), or with why it will not be (a 503).
	afterCommit(at uint64, answer func(*messages.Error))
	// broken says that the leader cannot go on: it steps down.
	broken(err error)
}

// commitThenAck finishes a's records in a group: they are durable here;
// once their pointers are too, the leader counts them, and a's acks wait
// for their commit.
func (c *capture) commitThenAck(a pendingAck) {
	if a.span.end > a.span.start {
		if err := c.group.durable(a.span); err != nil {
			c.group.broken(err)
			c.failAcks(a, err)
			return
		}
	}
	if len(a.items) == 0 {
		return
	}
	c.group.afterCommit(max(a.span.end, a.commitAt), func(err *messages.Error) {
		var buf []byte
		for _, item := range a.items {
			if err != nil {
				c.sendAck(item.reply, messages.EncodeError(err), false)
				continue
			}
			buf = messages.AppendAckReply(buf[:0], a.subject, item.offset, item.ts, item.duplicate)
			c.sendAck(item.reply, buf, true)
		}
	})
}
