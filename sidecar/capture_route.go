package sidecar

import (
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voik/voik/messages"
)

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
	dedupe   *dedupe // the ids of the subjects this handler stores
}

// newFilterCounters makes the counters of filter, which comes after
// before in the capture filters.
func newFilterCounters(filter string, before []string, m *metrics) *filterCounters {
	var earlier []string
	for _, other := range before {
		if messages.Overlap(other, filter) {
			earlier = append(earlier, other)
		}
	}
	m.dropped.WithLabelValues(filter) // a zero series to alert on from the start
	return &filterCounters{
		filter:   filter,
		earlier:  earlier,
		messages: m.messagesStored.WithLabelValues(filter),
		bytes:    m.bytesStored.WithLabelValues(filter),
		errors:   m.appendErrors.WithLabelValues(filter),
	}
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

// take stores msg at once, or holds it for a batch while more messages
// are queued behind it, unless it is not to be stored: another filter's
// handler stores it, or it is voik's own (the API, a replay, a reply), or
// its subject has a wildcard token.
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
	b.hold(msg, start, wantsAck)
}
