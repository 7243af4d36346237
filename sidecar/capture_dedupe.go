package sidecar

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// Deduplication by Nats-Msg-Id (PROTOCOL.md section 2): a message whose
// id (the header's first value, byte for byte) was stored on its subject
// less than VOIK_DEDUPE_WINDOW before, counted from that first record's
// stored ts, is not stored again; asking for an ack, it gets the first
// one's, with duplicate: true, once the first is durable. Repeats do not
// extend the window.
//
// Each filter's handler keeps the ids of the subjects it stores (a
// subject's records all go through one handler, so no lock is needed),
// and fills a subject's ids from the tail of its log the first time it
// meets the subject, so the window holds across restarts.

// msgIDs are one subject's ids stored within the window.
type msgIDs struct {
	seen  map[string]idSeen
	order []idAt // as stored, so timestamps ascend: the oldest expire first
}

type idSeen struct {
	offset uint64
	ts     int64
}

type idAt struct {
	id string
	ts int64
}

// dedupe is one filter handler's ids, by subject.
type dedupe struct {
	window    int64 // nanoseconds; 0: off
	store     *logstore.Store
	subjects  map[string]*msgIDs
	lastSweep time.Time
}

func newDedupe(window time.Duration, store *logstore.Store) *dedupe {
	return &dedupe{window: int64(window), store: store, subjects: map[string]*msgIDs{}}
}

// msgID is msg's Nats-Msg-Id, when it has one and dedupe is on.
func (d *dedupe) msgID(msg *nats.Msg) (string, bool) {
	if d == nil || d.window <= 0 || msg.Header == nil {
		return "", false
	}
	values := msg.Header[messages.HeaderMsgID]
	if len(values) == 0 {
		return "", false
	}
	return values[0], true
}

// ids are subject's ids, filled from its log the first time, as of now
// (Unix ns).
func (d *dedupe) ids(subject string, now int64) (*msgIDs, error) {
	if ids := d.subjects[subject]; ids != nil {
		return ids, nil
	}
	ids := &msgIDs{seen: map[string]idSeen{}}
	err := d.store.View(subject, func(l *logstore.Log) error {
		from, err := l.OffsetAt(now - d.window)
		if err != nil {
			return err
		}
		var decodeErr error
		_, err = l.Scan(from, func(v logstore.RecordView) bool {
			if !v.HasHeaders() {
				return true
			}
			headers, err := v.Headers()
			if err != nil {
				decodeErr = err
				return false
			}
			if values := headers[messages.HeaderMsgID]; len(values) > 0 {
				ids.add(values[0], v.Offset, v.Timestamp)
			}
			return true
		})
		if err == nil {
			err = decodeErr
		}
		return err
	})
	if err != nil && !errors.Is(err, logstore.ErrNotFound) {
		return nil, err
	}
	d.subjects[subject] = ids
	return ids, nil
}

// find is the first record stored with id less than window before now.
func (m *msgIDs) find(id string, now, window int64) (idSeen, bool) {
	m.expire(now, window)
	seen, ok := m.seen[id]
	return seen, ok
}

// add notes that id was stored at offset with timestamp ts; the first
// record of an id keeps it until it expires.
func (m *msgIDs) add(id string, offset uint64, ts int64) {
	if _, ok := m.seen[id]; ok {
		return
	}
	m.seen[id] = idSeen{offset: offset, ts: ts}
	m.order = append(m.order, idAt{id: id, ts: ts})
}

// expire forgets the ids stored window or more before now.
func (m *msgIDs) expire(now, window int64) {
	n := 0
	for n < len(m.order) && now-m.order[n].ts >= window {
		if seen, ok := m.seen[m.order[n].id]; ok && seen.ts == m.order[n].ts {
			delete(m.seen, m.order[n].id)
		}
		n++
	}
	if n > 0 {
		clear(m.order[:n])
		m.order = m.order[n:]
	}
}

// sweep forgets, at most once a window, the subjects whose ids have all
// expired, so that a subject no longer published to holds no memory; the
// next message on one fills its ids from the log again.
func (d *dedupe) sweep(now time.Time) {
	if now.Sub(d.lastSweep) < time.Duration(d.window) {
		return
	}
	d.lastSweep = now
	for subject, ids := range d.subjects {
		ids.expire(now.UnixNano(), d.window)
		if len(ids.order) == 0 {
			delete(d.subjects, subject)
		}
	}
}

// duplicateOf says whether msg (received at ts) repeats an id already
// stored on its subject within the window, and whose record that is. A
// failure to read the subject's log is not a duplicate: the message is
// stored, and the failure logged.
func (c *capture) duplicateOf(d *dedupe, msg *nats.Msg, id string, ts int64) (idSeen, bool) {
	ids, err := d.ids(msg.Subject, ts)
	if err != nil {
		c.logger.Error("cannot read the recent message ids of a subject; its messages are stored without deduplication until it can", "subject", msg.Subject, "err", err)
		return idSeen{}, false
	}
	return ids.find(id, ts, d.window)
}

// answerDuplicate answers a duplicate that asked for an ack with the
// first record's, once that record is durable; one that did not ask is
// only counted.
func (c *capture) answerDuplicate(msg *nats.Msg, wantsAck bool, first idSeen) {
	c.metrics.duplicates.Inc()
	if wantsAck {
		a := pendingAck{subject: msg.Subject, items: []ackItem{{reply: msg.Reply, offset: first.offset, ts: first.ts, duplicate: true}}}
		if c.group != nil {
			a.commitAt = c.group.journalEnd() // the first one is journaled below it
		}
		c.queueAcks(msg.Subject, a)
	}
}

// stored notes the ids of records just stored on subject.
func (d *dedupe) stored(subject, id string, offset uint64, ts int64) {
	if ids := d.subjects[subject]; ids != nil {
		ids.add(id, offset, ts)
	}
}

// batchRepeat is a held message (held) that repeats the id of an earlier
// one in the same batch (of), not yet stored when the repeat is met.
type batchRepeat struct{ held, of int }

// batchIDs is what a pass over a batch's ids found.
type batchIDs struct {
	indexes []int // the batch's held indexes; nil: all that are held
	count   int   // messages in the batch
	kept    []int // the held indexes to append, once one was left out
	dropped bool  // some were left out: append kept, not the batch
	repeats []batchRepeat
	firstIn map[string]int // id -> the held index of its first message in the batch
}

// at is the held index of the batch's k-th message.
func (f *batchIDs) at(k int) int {
	if f.indexes == nil {
		return k
	}
	return f.indexes[k]
}

// appendDeduplicated appends the held messages at indexes (nil: all) of
// subject, as appendGroup does, leaving out the repeats of an id stored
// within the window or earlier in the batch, each answered with its first
// record's ack.
func (c *capture) appendDeduplicated(subject string, indexes []int, counters *filterCounters) {
	d, b := counters.dedupe, &counters.batch
	if d == nil || d.window <= 0 {
		c.appendGroup(subject, indexes, counters)
		return
	}
	found := batchIDs{indexes: indexes, count: len(indexes)}
	if indexes == nil {
		found.count = len(b.held)
	}
	c.leaveOutRepeats(d, b, &found)
	switch {
	case !found.dropped:
		c.appendGroup(subject, indexes, counters)
	case len(found.kept) > 0:
		c.appendGroup(subject, found.kept, counters)
	}
	if found.firstIn != nil {
		c.noteStoredIDs(d, b, subject, &found)
	}
	d.sweep(time.Now())
}

// leaveOutRepeats finds the messages of a batch that repeat an id: those
// stored within the window are answered now; those first met in the
// batch, once their first is stored. kept is made only once a message is
// left out: most batches carry no ids, and allocate nothing here.
func (c *capture) leaveOutRepeats(d *dedupe, b *captureBatch, found *batchIDs) {
	for k := range found.count {
		i := found.at(k)
		repeat := c.isRepeat(d, &b.held[i], i, found)
		switch {
		case repeat && !found.dropped:
			found.dropped = true
			found.kept = make([]int, 0, found.count)
			for before := range k {
				found.kept = append(found.kept, found.at(before))
			}
		case !repeat && found.dropped:
			found.kept = append(found.kept, i)
		}
	}
}

// isRepeat says whether the held message h (held index i) repeats an id:
// one stored within the window (answered now) or one first met earlier
// in the batch (answered once that one is stored). A first is noted.
func (c *capture) isRepeat(d *dedupe, h *heldMsg, i int, found *batchIDs) bool {
	id, ok := d.msgID(h.msg)
	if !ok {
		return false
	}
	if first, dup := c.duplicateOf(d, h.msg, id, h.arrived.UnixNano()); dup {
		c.answerDuplicate(h.msg, h.wantsAck, first)
		return true
	}
	if j, seen := found.firstIn[id]; seen {
		found.repeats = append(found.repeats, batchRepeat{held: i, of: j})
		return true
	}
	if found.firstIn == nil {
		found.firstIn = map[string]int{}
	}
	found.firstIn[id] = i
	return false
}

// noteStoredIDs notes the ids of the batch's messages that were stored,
// in the order stored (so the window's timestamps ascend), then answers
// the repeats of ids first met in the batch.
func (c *capture) noteStoredIDs(d *dedupe, b *captureBatch, subject string, found *batchIDs) {
	stored := found.count
	if found.dropped {
		stored = len(found.kept)
	}
	for k := range stored {
		i := found.at(k)
		if found.dropped {
			i = found.kept[k]
		}
		h := &b.held[i]
		if id, ok := d.msgID(h.msg); ok && h.stored {
			d.stored(subject, id, h.offset, h.ts)
		}
	}
	for _, r := range found.repeats {
		first, h := &b.held[r.of], &b.held[r.held]
		switch {
		case first.stored:
			c.answerDuplicate(h.msg, h.wantsAck, idSeen{offset: first.offset, ts: first.ts})
		case h.wantsAck:
			c.sendAck(h.msg.Reply, messages.EncodeError(messages.Errorf(messages.CodeUnavailable,
				"%s: the first message with this Nats-Msg-Id could not be stored", messages.Quote(subject))), false)
		}
	}
}
