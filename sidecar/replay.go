package sidecar

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// Replay pacing: after this many records or bytes, wait for NATS to
// acknowledge what was sent (a flush) before sending more, so that at most
// one batch is ever in flight towards a subscriber. 4 MiB stays far below
// what a NATS server lets pile up for a client (64 MiB by default) and
// below nats.go's default pending limits, while a round trip every 512
// records made replay wait on the network most of the time.
const (
	replayBatchMessages = 4096
	replayBatchBytes    = 4 << 20
	replayFlushTimeout  = 30 * time.Second
)

// replay answers REPLAY: it sends the reply, then publishes the records
// and an end marker to deliver. It returns the reply it already sent as
// (nil, 200) or an error reply for the caller to send.
func (a *api) replay(msg *nats.Msg, subject string) ([]byte, int) {
	req, errReply := messages.DecodeReplayRequest(msg.Data)
	if errReply == nil && (req.Deliver == a.prefix || strings.HasPrefix(req.Deliver, a.prefix+".")) {
		errReply = messages.Errorf(messages.CodeBadRequest, "deliver %s is under the API prefix %q", messages.Quote(req.Deliver), a.prefix)
	}
	if errReply != nil {
		return messages.EncodeError(errReply), errReply.Code
	}
	log, errReply := a.acquire(subject, false)
	if errReply != nil {
		return messages.EncodeError(errReply), errReply.Code
	}
	defer a.store.Release(log)
	start, errReply := startOffset(log, req.Offset, req.StartTime)
	if errReply != nil {
		return messages.EncodeError(errReply), errReply.Code
	}
	end := log.EndOffset()
	if req.MaxMessages > 0 && req.MaxMessages < end-start {
		end = start + req.MaxMessages
	}
	if err := msg.Respond(messages.Encode(messages.ReplayReply{Subject: subject, FirstOffset: start, EndOffset: end, Deliver: req.Deliver})); err != nil {
		a.logger.Warn("cannot send replay reply", "subject", subject, "err", err)
		return nil, 200
	}
	a.deliver(log, subject, req.Deliver, start, end)
	return nil, 200
}

// deliver publishes records [start, end) of log to deliver, paced, then
// the end marker; a shutdown cuts it short with a 503 marker.
func (a *api) deliver(log *logstore.Log, subject, deliver string, start, end uint64) {
	next := start
	batchMessages, batchBytes := 0, 0
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
			publishErr = a.nc.PublishMsg(out)
			if errors.Is(publishErr, nats.ErrMaxPayload) {
				// The record with voik's headers is over max_payload;
				// nats.go refused it whole. It is marked, not lost.
				publishErr = a.nc.PublishMsg(statusMsg(deliver, "413", v.Offset))
			}
			if publishErr != nil {
				return false
			}
			a.metrics.replayed.Inc()
			next = v.Offset + 1
			batchMessages++
			batchBytes += len(out.Data)
			if batchMessages >= replayBatchMessages || batchBytes >= replayBatchBytes {
				batchMessages, batchBytes = 0, 0
				if publishErr = a.nc.FlushTimeout(replayFlushTimeout); publishErr != nil {
					return false
				}
			}
			return true
		})
		if err != nil {
			// Stop here and say where, with the code a FETCH at that
			// offset would get: 416 when retention deleted what was next,
			// 500 for a record that cannot be read (a retry meets it again).
			a.logger.Warn("replay stopped", "subject", subject, "offset", next, "err", err)
			status = strconv.Itoa(storeError(err).Code)
			break
		}
	}
	if publishErr != nil {
		a.logger.Warn("replay publish failed", "subject", subject, "deliver", deliver, "err", publishErr)
		return
	}
	marker := next
	if status == messages.StatusEnd {
		marker = end
	}
	if err := a.nc.PublishMsg(statusMsg(deliver, status, marker)); err != nil {
		a.logger.Warn("replay end marker not sent", "subject", subject, "err", err)
	}
	a.nc.FlushTimeout(replayFlushTimeout)
}

func statusMsg(deliver, status string, offset uint64) *nats.Msg {
	m := nats.NewMsg(deliver)
	m.Header[messages.HeaderStatus] = []string{status}
	m.Header[messages.HeaderOffset] = []string{strconv.FormatUint(offset, 10)}
	return m
}
