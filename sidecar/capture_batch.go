package sidecar

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
)

// Capture under load appends the messages NATS has already queued for a
// filter together (logstore.Store.Append of many: one system call for
// many records); a message that arrives alone is appended at once. A
// message is held only while more are queued behind it, and only until
// 512 are held, so batching adds at most the time to take those from the
// queue: the last of a burst flushes everything held.
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
	one     [1]logstore.Entry // the entry of a message appended alone
	behind  int               // messages known to be queued behind the last one handled
	mixed   bool              // held has more than one subject

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
	// Set by appendGroup: whether the message was stored, and as what.
	stored bool
	offset uint64
	ts     int64
}

// hold keeps msg, received at arrived, for the next flush.
func (b *captureBatch) hold(msg *nats.Msg, arrived time.Time, wantsAck bool) {
	if len(b.held) > 0 && msg.Subject != b.held[0].msg.Subject {
		b.mixed = true
	}
	b.held = append(b.held, heldMsg{msg: msg, arrived: arrived, wantsAck: wantsAck})
	b.bytes += len(msg.Data)
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

// flush appends everything held, one batch per subject, in arrival order
// within each subject.
func (c *capture) flush(counters *filterCounters) {
	b := &counters.batch
	if !b.mixed {
		// One subject (the common case): no grouping to do.
		c.appendDeduplicated(b.held[0].msg.Subject, nil, counters)
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
		c.appendDeduplicated(subject, b.groups[subject], counters)
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
