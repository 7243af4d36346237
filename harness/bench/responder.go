package bench

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
)

// responderEnv, set in the environment of a benchmark binary, makes it a
// responder that speaks voik's wire protocol from memory, storing nothing
// (see RunChildIfAsked):
//
//	"ack URL SUBJECT": answers every message on SUBJECT that has a reply
//	  subject with voik's ack (messages.AppendAckReply), offsets counting
//	  up from 0, as soon as it arrives;
//	"fetch URL PREFIX SUBJECT SIZE HISTORY": answers PREFIX.FETCH.SUBJECT
//	  with pages of HISTORY records of SIZE bytes, built as voik builds
//	  them (messages.FetchReplyBuilder, a goroutine per request).
//
// Run as a child, like voik, it measures what any NATS client acking or
// serving pages could do on this machine: the same hops, the same
// nats.go, the same competition for the CPU, and no disk.
const responderEnv = "VOIKBENCH_RESPONDER"

func runResponder(spec string) error {
	f := strings.Fields(spec)
	if len(f) < 3 {
		return fmt.Errorf("%s=%q: want ack URL SUBJECT or fetch URL PREFIX SUBJECT SIZE HISTORY", responderEnv, spec)
	}
	nc, err := nats.Connect(f[1], nats.Name("voikbench responder"))
	if err != nil {
		return err
	}
	defer nc.Close()
	switch {
	case f[0] == "ack" && len(f) == 3:
		err = subscribeReady(nc, f[2], ackResponder(nc, f[2]))
	case f[0] == "fetch" && len(f) == 6:
		size, err1 := strconv.Atoi(f[4])
		history, err2 := strconv.ParseUint(f[5], 10, 64)
		if err1 != nil || err2 != nil || size < 0 {
			return fmt.Errorf("%s=%q: bad size or history", responderEnv, spec)
		}
		err = subscribeReady(nc, f[2]+".FETCH."+f[3], fetchResponder(nc, f[3], size, history))
	default:
		return fmt.Errorf("%s=%q: want ack URL SUBJECT or fetch URL PREFIX SUBJECT SIZE HISTORY", responderEnv, spec)
	}
	if err != nil {
		return err
	}
	waitForStdinToClose() // serve until then (or until killed)
	return nil
}

// ackResponder acks at once what voik acks after storing it.
func ackResponder(nc *nats.Conn, subject string) nats.MsgHandler {
	var offset uint64
	var buf []byte
	return func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		if _, ok := m.Header[messages.HeaderAck]; !ok {
			return
		}
		buf = messages.AppendAckReply(buf[:0], subject, offset, time.Now().UnixNano(), false)
		offset++
		nc.Publish(m.Reply, buf)
	}
}

// fetchResponder answers FETCH requests with records built in memory.
func fetchResponder(nc *nats.Conn, subject string, size int, history uint64) nats.MsgHandler {
	data := make([]byte, size)
	ts := time.Now().UnixNano() // as wide as voik's timestamps, so pages hold as many records
	builders := sync.Pool{New: func() any { return new(messages.FetchReplyBuilder) }}
	maxPayload := int(nc.MaxPayload())
	return func(m *nats.Msg) {
		go func() {
			req, rerr := messages.DecodeFetchRequest(m.Data)
			if rerr != nil || req.Offset == nil {
				m.Respond(messages.EncodeError(messages.Errorf(messages.CodeBadRequest, "the responder wants an offset")))
				return
			}
			maxBytes := maxPayload
			if req.MaxBytes > 0 && req.MaxBytes < uint64(maxPayload) {
				maxBytes = int(req.MaxBytes)
			}
			b := builders.Get().(*messages.FetchReplyBuilder)
			defer builders.Put(b)
			b.Reset()
			payload := 0
			offset := *req.Offset
			for ; offset < history && uint64(b.Count()) < req.MaxMessages; offset++ {
				if b.Count() > 0 && payload+size > maxBytes {
					break
				}
				if !b.AddWithin(maxPayload, subject, offset, ts, nil, data) {
					break
				}
				payload += size
			}
			m.Respond(b.Finish(subject, offset, 0, history))
		}()
	}
}

// startResponder starts a responder (spec as responderEnv describes) and
// returns once it is subscribed; it stops when e's cleanups run.
func startResponder(e *Env, spec string) child {
	return startChild(e, "responder", responderEnv+"="+spec)
}
