package sidecar

import (
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// Replay pacing. Core NATS has no flow control, and a NATS server closes
// a subscriber's connection once more than its max_pending (64 MiB by
// default) waits to be written to it. What the server does tell a
// publisher: once a subscriber has more than three quarters of that
// pending, every message to it holds up the publisher's connection for
// 2-5 ms (a "stall"). So the records go out in batches; after each batch
// a flush waits until the server has taken it, and the next record goes
// alone with a flush of its own, timed. Quick: the subscriber keeps up,
// the next batch follows. Held up: it is falling behind; replay waits,
// longer each time, and sends one record at a time until it is not.
// A batch is small against max_pending, so a subscriber below the stall
// mark cannot be pushed past the limit by one.
const (
	replayBatchMessages = 4096
	replayBatchBytes    = 2 << 20
	replayFlushTimeout  = 30 * time.Second
	// A flush of one record that takes longer than this (plus 10 ns a
	// byte) was stalled: the server's shortest stall is 2 ms.
	replayStallThreshold = time.Millisecond
	replayBackoffMin     = 5 * time.Millisecond
	replayBackoffMax     = time.Second
)

// replayPacer decides, record by record, when a replay flushes and waits.
type replayPacer struct {
	nc       *nats.Conn
	shutdown <-chan struct{}
	messages int           // sent since the last flush
	bytes    int           // of those
	probing  bool          // the record just sent is timed alone
	backoff  time.Duration // the next wait while the subscriber is behind
	stalls   int           // probes found held up, for the log
}

// sent is called after each record is published, with its size; it
// returns an error when a flush fails or shutdown interrupts a wait.
func (p *replayPacer) sent(size int) error {
	p.messages++
	p.bytes += size
	if p.probing {
		start := time.Now()
		if err := p.nc.FlushTimeout(replayFlushTimeout); err != nil {
			return err
		}
		p.messages, p.bytes = 0, 0
		if time.Since(start) <= replayStallThreshold+time.Duration(size)*10 {
			p.probing, p.backoff = false, replayBackoffMin
			return nil
		}
		p.stalls++
		timer := time.NewTimer(p.backoff)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-p.shutdown:
		}
		p.backoff = min(2*p.backoff, replayBackoffMax)
		return nil // the next record probes again
	}
	if p.messages >= replayBatchMessages || p.bytes >= replayBatchBytes {
		if err := p.nc.FlushTimeout(replayFlushTimeout); err != nil {
			return err
		}
		p.messages, p.bytes, p.probing = 0, 0, true
	}
	return nil
}

// replay answers REPLAY: it sends the reply, then publishes the records
// and an end marker to deliver. It returns the reply it already sent as
// (nil, 200) or an error reply for the caller to send.
func (a *api) replay(msg *nats.Msg, subject string) ([]byte, int) {
	req, errReply := messages.DecodeReplayRequest(msg.Data)
	if errReply == nil && messages.UnderPrefix(req.Deliver, a.prefix) {
		errReply = messages.Errorf(messages.CodeBadRequest, "deliver %s is under the API prefix %q", messages.Quote(req.Deliver), a.prefix)
	}
	if errReply != nil {
		return messages.EncodeError(errReply), errReply.Code
	}
	// The log is held open for the whole replay.
	errReply = a.withLog(subject, func(log *logstore.Log) *messages.Error {
		return a.replayFrom(msg, log, subject, req)
	})
	if errReply != nil {
		return messages.EncodeError(errReply), errReply.Code
	}
	return nil, 200
}

// replayFrom answers REPLAY from log: it sends the reply, then delivers
// the records. An error is a reply for the caller to send instead.
func (a *api) replayFrom(msg *nats.Msg, log *logstore.Log, subject string, req messages.ReplayRequest) *messages.Error {
	end := a.vis.end(log)
	if req.Offset != nil && *req.Offset > end {
		end = a.vis.catchUp(a.shutdown, log, *req.Offset) // as FETCH does
	}
	start, errReply := startOffset(log, a.vis.first(log), end, req.Offset, req.StartTime)
	if errReply != nil {
		if errReply.Code == messages.CodeOutOfRange && req.Offset != nil && *req.Offset > end {
			errReply = heldNotCommitted(log, subject, *req.Offset, end, errReply)
		}
		return errReply
	}
	if req.MaxMessages > 0 && req.MaxMessages < end-start {
		end = start + req.MaxMessages
	}
	if err := a.send(msg.Reply, messages.Encode(messages.ReplayReply{Subject: subject, FirstOffset: start, EndOffset: end, Deliver: req.Deliver})); err != nil {
		a.warn.Warn("cannot send replay reply", "subject", subject, "err", err)
		return nil
	}
	// The records leave on another connection: the server must have
	// routed the reply first, as the contract orders them.
	if err := a.nc.FlushTimeout(replayFlushTimeout); err != nil {
		a.warn.Warn("cannot send replay reply", "subject", subject, "err", err)
		return nil
	}
	a.deliver(log, subject, req.Deliver, start, end)
	return nil
}

// deliver publishes records [start, end) of log to deliver, paced, then
// the end marker; a shutdown cuts it short with a 503 marker.
func (a *api) deliver(log *logstore.Log, subject, deliver string, start, end uint64) {
	next := start
	pacer := replayPacer{nc: a.replayNC, shutdown: a.shutdown.Done(), backoff: replayBackoffMin}
	status := messages.StatusEnd
	var publishErr error
	for next < end && publishErr == nil {
		if a.shutdown.Err() != nil {
			status = "503"
			break
		}
		_, err := log.Scan(next, func(v logstore.RecordView) bool {
			if v.Offset >= end || a.shutdown.Err() != nil {
				return false
			}
			out := nats.NewMsg(deliver)
			headers, herr := v.Headers()
			if herr == nil {
				for name, values := range headers {
					out.Header[name] = values
				}
			}
			out.Header[messages.HeaderSubject] = []string{subject}
			out.Header[messages.HeaderOffset] = []string{strconv.FormatUint(v.Offset, 10)}
			out.Header[messages.HeaderTimestamp] = []string{strconv.FormatInt(v.Timestamp, 10)}
			out.Data = v.Data
			if herr != nil {
				out = statusMsg(deliver, "413", v.Offset)
			}
			publishErr = a.replayNC.PublishMsg(out)
			if errors.Is(publishErr, nats.ErrMaxPayload) {
				// The record with voik's headers is over max_payload;
				// nats.go refused it whole. It is marked, not lost.
				publishErr = a.replayNC.PublishMsg(statusMsg(deliver, "413", v.Offset))
			}
			if publishErr != nil {
				return false
			}
			a.metrics.replayed.Inc()
			next = v.Offset + 1
			publishErr = pacer.sent(len(out.Data))
			return publishErr == nil
		})
		if err != nil {
			// Stop here and say where, with the code a FETCH at that
			// offset would get: 416 when retention deleted what was next,
			// 500 for a record that cannot be read (a retry meets it again).
			a.warn.Warn("replay stopped", "subject", subject, "offset", next, "err", err)
			status = strconv.Itoa(storeError(err).Code)
			break
		}
	}
	if publishErr != nil {
		a.warn.Warn("replay publish failed", "subject", subject, "deliver", deliver, "err", publishErr)
		return
	}
	marker := next
	if status == messages.StatusEnd {
		marker = end
	}
	if err := a.replayNC.PublishMsg(statusMsg(deliver, status, marker)); err != nil {
		a.warn.Warn("replay end marker not sent", "subject", subject, "err", err)
	}
	a.replayNC.FlushTimeout(replayFlushTimeout)
	if pacer.stalls > 0 {
		a.logger.Info("replay slowed down for a subscriber that fell behind", "subject", subject, "deliver", deliver, "waits", pacer.stalls)
	}
}

func statusMsg(deliver, status string, offset uint64) *nats.Msg {
	m := nats.NewMsg(deliver)
	m.Header[messages.HeaderStatus] = []string{status}
	m.Header[messages.HeaderOffset] = []string{strconv.FormatUint(offset, 10)}
	return m
}
