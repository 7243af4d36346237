package group

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
)

// A follower that is behind pulls one batch ahead: as soon as a reply
// says the leader holds more than it sent, the next pull goes out, and
// the batch just received is applied while the leader reads, encodes and
// sends the next. One pull waits in the leader at most: a follower that
// has caught up pulls only after it has applied and made durable what it
// holds (Pull), so that its long poll reports it.

// aheadTimeout bounds a pull sent ahead that nobody takes.
const aheadTimeout = 30 * time.Second

// ahead is a pull sent before the batch before it was applied.
type ahead struct {
	subject string
	from    uint64
	done    chan struct{}
	msg     *nats.Msg
	err     error
	cancel  context.CancelFunc
}

// sendAhead sends req to subject now; the next Pull takes its reply if
// the journal has reached req.From by then.
func (k *Sink) sendAhead(nc *nats.Conn, subject string, req PullRequest) {
	body, err := msgpack.Marshal(req)
	if err != nil {
		return // the next Pull asks itself
	}
	ctx, cancel := context.WithTimeout(context.Background(), aheadTimeout)
	a := &ahead{subject: subject, from: req.From, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(a.done)
		a.msg, a.err = nc.RequestWithContext(ctx, subject, body)
	}()
	k.ahead = a
}

// takeAhead waits for the reply to the pull sent ahead, when it asked
// subject for what follows from; ok false when there is none that fits
// (it is dropped).
func (k *Sink) takeAhead(ctx context.Context, subject string, from uint64) (msg *nats.Msg, err error, ok bool) {
	a := k.ahead
	if a == nil {
		return nil, nil, false
	}
	k.ahead = nil
	defer a.cancel()
	if a.subject != subject || a.from != from || k.chunk != 0 {
		return nil, nil, false
	}
	select {
	case <-a.done:
		return a.msg, a.err, true
	case <-ctx.Done():
		return nil, ctx.Err(), true
	}
}

// dropAhead gives up the pull sent ahead, if any.
func (k *Sink) dropAhead() {
	if a := k.ahead; a != nil {
		a.cancel()
		k.ahead = nil
	}
}
