package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/messages"
)

// Client speaks voik's API over a NATS connection.
type Client struct {
	nc     *nats.Conn
	prefix string
	// Timeout bounds a request whose context has no deadline; FETCH adds
	// its wait_ms to it. Default 10s.
	Timeout time.Duration
	// AttemptTimeout bounds one try of a read (FETCH, INFO, SUBJECTS;
	// FETCH adds its wait_ms). Reads change nothing, so a read that gets
	// no answer within it, or a 503 (a group member catching up, voik
	// overloaded or stopping), is sent again, with a growing pause, as
	// long as its context allows: NATS delivers a request at most once,
	// and may drop one while the members of a queue group change.
	// Default 3s.
	AttemptTimeout time.Duration
	// AppendAttemptTimeout bounds one try of AppendUntilAcked. A try
	// sent as a group's leader dies is lost with it, and the next waits
	// for this to pass, so it is short; a try that was only slow costs
	// nothing but the repeat, which voik acks as the first. Default 1s.
	AppendAttemptTimeout time.Duration
}

// New returns a client for the voik instances answering under prefix
// ("" means "VOIK.API").
func New(nc *nats.Conn, prefix string) *Client {
	if prefix == "" {
		prefix = "VOIK.API"
	}
	return &Client{nc: nc, prefix: prefix, Timeout: 10 * time.Second, AttemptTimeout: 3 * time.Second, AppendAttemptTimeout: time.Second}
}

// prepare encodes body and bounds ctx by Timeout (plus extra) when it
// has no deadline.
func (c *Client) prepare(ctx context.Context, body any, extra time.Duration) (context.Context, context.CancelFunc, []byte, error) {
	payload := []byte(nil)
	if body != nil {
		var err error
		if payload, err = msgpack.Marshal(body); err != nil {
			return ctx, func() {}, nil, err
		}
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}, payload, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout+extra)
	return ctx, cancel, payload, nil
}

func (c *Client) request(ctx context.Context, subject string, body any, extra time.Duration, reply any) error {
	ctx, cancel, payload, err := c.prepare(ctx, body, extra)
	defer cancel()
	if err != nil {
		return err
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, payload)
	if err != nil {
		return fmt.Errorf("voik: request %s: %w", subject, err)
	}
	return decodeReply(msg.Data, reply)
}

// read is request for a read, tried again as AttemptTimeout says.
func (c *Client) read(ctx context.Context, subject string, body any, extra time.Duration, reply any) error {
	ctx, cancel, payload, err := c.prepare(ctx, body, extra)
	defer cancel()
	if err != nil {
		return err
	}
	attempt := c.attempt() + extra
	return retry(ctx, attempt, time.Second, func(actx context.Context) (bool, error) {
		msg, err := c.nc.RequestWithContext(actx, subject, payload)
		var e *messages.Error
		switch {
		case err == nil:
			err = decodeReply(msg.Data, reply)
			return errors.As(err, &e) && e.Code == messages.CodeUnavailable, err
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return true, fmt.Errorf("voik: request %s: no answer within %v: %w", subject, attempt, err)
		default:
			return false, fmt.Errorf("voik: request %s: %w", subject, err)
		}
	})
}

// attempt is AttemptTimeout, or its default.
func (c *Client) attempt() time.Duration {
	if c.AttemptTimeout <= 0 {
		return 3 * time.Second
	}
	return c.AttemptTimeout
}

// retry calls try, each call given at most attempt of ctx, until try says
// not to call it again or ctx ends, pausing between calls (20 ms, doubling
// up to maxPause), and returns try's last error.
func retry(ctx context.Context, attempt, maxPause time.Duration, try func(context.Context) (again bool, err error)) error {
	pause := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		again, err := try(actx)
		cancel()
		if !again {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, maxPause)
	}
}

// Fetch reads a subject's history; see messages.FetchRequest.
func (c *Client) Fetch(ctx context.Context, subject string, req messages.FetchRequest) (*messages.FetchReply, error) {
	var reply messages.FetchReply
	wait := time.Duration(req.WaitMs) * time.Millisecond
	if err := c.read(ctx, c.prefix+".FETCH."+subject, req, wait, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// Info summarises a subject's log.
func (c *Client) Info(ctx context.Context, subject string) (*messages.InfoReply, error) {
	var reply messages.InfoReply
	if err := c.read(ctx, c.prefix+".INFO."+subject, nil, 0, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// Group asks the leader of group for its members and their lag
// (<prefix>.GROUP.<group>). With no leader nobody answers: the request
// times out with ctx.
func (c *Client) Group(ctx context.Context, group string) (*messages.GroupReply, error) {
	var reply messages.GroupReply
	if err := c.request(ctx, c.prefix+".GROUP."+group, nil, 0, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// GroupsWait is how long every group and standalone voik has to answer
// GROUPS (PROTOCOL.md section 9: "within a second").
const GroupsWait = time.Second

// Groups asks every group and standalone voik on the NATS system and
// prefix who it is (<prefix>.GROUPS, a scatter-gather request) and
// gathers the replies: until NATS says nobody answers, or GroupsWait
// (or ctx) ends; with quiet > 0, also once quiet passes with no new
// reply (live voiks answer within milliseconds). Each group and voik
// comes once, sorted by group, then instance; none is not an error.
func (c *Client) Groups(ctx context.Context, quiet time.Duration) ([]messages.GroupsReply, error) {
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("voik: GROUPS: %w", err)
	}
	defer sub.Unsubscribe()
	// Voik-Offset: a voik that captures this prefix as a subject (under
	// an API prefix of its own) does not store the request, as it stores
	// no replayed record.
	req := nats.NewMsg(c.prefix + ".GROUPS")
	req.Reply = inbox
	req.Header.Set(messages.HeaderOffset, "groups")
	if err := c.nc.PublishMsg(req); err != nil {
		return nil, fmt.Errorf("voik: GROUPS: %w", err)
	}
	deadline := time.Now().Add(GroupsWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var out []messages.GroupsReply
	groups := map[string]int{} // index in out of each group's reply
	for {
		wait := time.Until(deadline)
		if quiet > 0 {
			wait = min(wait, quiet)
		}
		if wait <= 0 || ctx.Err() != nil {
			break
		}
		msg, err := sub.NextMsg(wait)
		if err != nil {
			break // the deadline, or quiet
		}
		if msg.Header.Get("Status") == "503" {
			break // no responders
		}
		var reply messages.GroupsReply
		if err := decodeReply(msg.Data, &reply); err != nil {
			return nil, fmt.Errorf("voik: GROUPS: %w", err)
		}
		if reply.Group == "" {
			out = append(out, reply) // standalone voiks on one host share an instance name
			continue
		}
		// A group answers once; during a change of leader a second reply
		// may come: keep the leader's.
		if i, ok := groups[reply.Group]; ok {
			if reply.Instance == reply.Leader {
				out[i] = reply
			}
			continue
		}
		groups[reply.Group] = len(out)
		out = append(out, reply)
	}
	slices.SortFunc(out, func(x, y messages.GroupsReply) int {
		if c := strings.Compare(x.Group, y.Group); c != 0 {
			return c
		}
		return strings.Compare(x.Instance, y.Instance)
	})
	return out, nil
}

// Subjects lists stored subjects; see messages.SubjectsRequest.
func (c *Client) Subjects(ctx context.Context, req messages.SubjectsRequest) (*messages.SubjectsReply, error) {
	var reply messages.SubjectsReply
	if err := c.read(ctx, c.prefix+".SUBJECTS", req, 0, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// Append publishes data on subject with the Voik-Ack header and waits for
// voik to answer that the record is durable. It tries once: a publisher
// that must not lose the record uses AppendUntilAcked.
func (c *Client) Append(ctx context.Context, subject string, headers nats.Header, data []byte) (*messages.AckReply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	reply, err := c.nc.RequestMsgWithContext(ctx, ackedMsg(subject, headers, data))
	if err != nil {
		return nil, fmt.Errorf("voik: append to %s: %w", subject, err)
	}
	return DecodeAckReply(reply.Data)
}

// AppendUntilAcked is Append under the Nats-Msg-Id id, tried again with
// the same id until voik acks it or ctx ends (without a deadline, Timeout
// bounds it). A try is sent again when it gets no answer within
// AppendAttemptTimeout (NATS drops a request whose subscriber goes away,
// as a group's leader does when it fails), finds no responders (no voik
// captures the subject yet: a group between leaders), or is answered 503;
// any other answer, an error one included, is the result. voik stores an
// id once on a subject within VOIK_DEDUPE_WINDOW and acks a repeat with
// the first one's offset and Duplicate set: the record is stored once
// however many tries it takes, as long as they all fall within the
// window. Give each id to one record only.
func (c *Client) AppendUntilAcked(ctx context.Context, subject, id string, headers nats.Header, data []byte) (*messages.AckReply, error) {
	if id == "" {
		return nil, errors.New("voik: AppendUntilAcked needs a Nats-Msg-Id")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	msg := ackedMsg(subject, headers, data)
	msg.Header[messages.HeaderMsgID] = []string{id}
	attempt := c.AppendAttemptTimeout
	if attempt <= 0 {
		attempt = time.Second
	}
	var ack *messages.AckReply
	// Pauses of at most a tenth of a second: a group's failover takes
	// about a second, the record's publisher waits on it, and a try
	// that finds no responders costs voik nothing.
	err := retry(ctx, attempt, 100*time.Millisecond, func(actx context.Context) (bool, error) {
		reply, err := c.nc.RequestMsgWithContext(actx, msg)
		var e *messages.Error
		switch {
		case err == nil:
			ack, err = DecodeAckReply(reply.Data)
			return errors.As(err, &e) && e.Code == messages.CodeUnavailable, err
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return true, fmt.Errorf("voik: append to %s: no ack within %v: %w", subject, attempt, err)
		case errors.Is(err, nats.ErrNoResponders):
			return true, fmt.Errorf("voik: append to %s: %w", subject, err)
		default:
			return false, fmt.Errorf("voik: append to %s: %w", subject, err)
		}
	})
	if err != nil {
		return nil, err
	}
	return ack, nil
}

// ackedMsg is the message of an acked append: data on subject with
// headers and Voik-Ack.
func ackedMsg(subject string, headers nats.Header, data []byte) *nats.Msg {
	msg := nats.NewMsg(subject)
	for name, values := range headers {
		msg.Header[name] = append([]string(nil), values...)
	}
	if _, ok := msg.Header[messages.HeaderAck]; !ok {
		msg.Header[messages.HeaderAck] = []string{"1"}
	}
	msg.Data = data
	return msg
}

// DecodeAckReply decodes voik's answer to an acked append (a message with
// Voik-Ack and a reply subject): the ack, or its error reply as a *messages.Error.
func DecodeAckReply(body []byte) (*messages.AckReply, error) {
	var ack messages.AckReply
	if err := decodeReply(body, &ack); err != nil {
		return nil, err
	}
	return &ack, nil
}

// ReplayTo asks voik to replay a subject to req.Deliver and returns its
// reply; the records go to whoever subscribes there.
func (c *Client) ReplayTo(ctx context.Context, subject string, req messages.ReplayRequest) (*messages.ReplayReply, error) {
	var reply messages.ReplayReply
	if err := c.request(ctx, c.prefix+".REPLAY."+subject, req, 0, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// ReplayedRecord is one record delivered by a replay.
type ReplayedRecord struct {
	Subject   string
	Offset    uint64
	Timestamp int64
	Headers   nats.Header // as published, without the Voik-* replay headers
	Data      []byte
	TooLarge  bool // Voik-Status 413: the record no longer fits under max_payload
}

// ErrReplayInterrupted: voik stopped a replay early. Its end marker
// carried a status other than "end": 503 when voik was shutting down, 416
// when retention deleted the next record first, 500 at a record voik could
// not read. The error says which, and the first offset not delivered.
var ErrReplayInterrupted = errors.New("voik: replay interrupted")

// ErrReplayGap: a replayed record did not arrive (a message lost between
// voik and this client); the records passed to fn before it are complete.
var ErrReplayGap = errors.New("voik: replay lost a record")

// Replay asks voik to replay a subject and calls fn for each record in
// order until the end marker. The records go to req.Deliver when it is
// set, else to a fresh inbox; either way Replay subscribes there before it
// asks, so nothing is missed. On a req.Deliver of the caller's, messages
// that are not this replay's (no Voik-Offset, or another Voik-Subject)
// are skipped. It returns voik's first reply; ErrReplayInterrupted when
// voik cut the replay short, ErrReplayGap when a record went missing on
// the way.
func (c *Client) Replay(ctx context.Context, subject string, req messages.ReplayRequest, fn func(ReplayedRecord) error) (*messages.ReplayReply, error) {
	shared := req.Deliver != ""
	if !shared {
		req.Deliver = c.nc.NewRespInbox()
	}
	// A synchronous subscription with no pending limit queues everything
	// that arrives while fn works; a channel subscription would drop
	// messages silently once its channel is full.
	sub, err := c.nc.SubscribeSync(req.Deliver)
	if err != nil {
		return nil, fmt.Errorf("voik: replay: %w", err)
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("voik: replay: %w", err)
	}
	var reply messages.ReplayReply
	if err := c.request(ctx, c.prefix+".REPLAY."+subject, req, 0, &reply); err != nil {
		return nil, err
	}
	next := reply.FirstOffset
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return &reply, fmt.Errorf("voik: replay at offset %d: %w", next, err)
		}
		status := msg.Header.Get(messages.HeaderStatus)
		// On a deliver subject of the caller's, skip what is not this
		// replay's: messages without Voik-Offset, and records (or markers
		// that carry one) with another Voik-Subject. voik's markers carry
		// no Voik-Subject (PROTOCOL.md section 6), so another replay's end
		// marker there cannot be told apart: give each replay a deliver
		// subject of its own.
		if from := msg.Header.Get(messages.HeaderSubject); shared &&
			(msg.Header.Get(messages.HeaderOffset) == "" || from != subject && (status == "" || from != "")) {
			continue
		}
		offset, _ := strconv.ParseUint(msg.Header.Get(messages.HeaderOffset), 10, 64)
		switch status {
		case "", "413":
		case messages.StatusEnd:
			if offset != next {
				return &reply, fmt.Errorf("%w: ended at %d, next expected %d", ErrReplayGap, offset, next)
			}
			return &reply, nil
		case "503":
			return &reply, fmt.Errorf("%w at offset %d by a shutdown (Voik-Status 503)", ErrReplayInterrupted, offset)
		case "416":
			return &reply, fmt.Errorf("%w at offset %d: retention deleted the record before it was sent (Voik-Status 416)", ErrReplayInterrupted, offset)
		case "500":
			return &reply, fmt.Errorf("%w at offset %d: the record could not be read (Voik-Status 500)", ErrReplayInterrupted, offset)
		default:
			return &reply, fmt.Errorf("%w at offset %d (Voik-Status %s)", ErrReplayInterrupted, offset, status)
		}
		if offset != next {
			return &reply, fmt.Errorf("%w: got offset %d, expected %d", ErrReplayGap, offset, next)
		}
		next++
		if status == "413" {
			if err := fn(ReplayedRecord{Subject: subject, Offset: offset, TooLarge: true}); err != nil {
				return &reply, err
			}
			continue
		}
		ts, _ := strconv.ParseInt(msg.Header.Get(messages.HeaderTimestamp), 10, 64)
		headers := nats.Header{}
		for name, values := range msg.Header {
			switch name {
			case messages.HeaderSubject, messages.HeaderOffset, messages.HeaderTimestamp:
				continue
			}
			headers[name] = values
		}
		if len(headers) == 0 {
			headers = nil
		}
		if err := fn(ReplayedRecord{Subject: subject, Offset: offset, Timestamp: ts, Headers: headers, Data: msg.Data}); err != nil {
			return &reply, err
		}
	}
}
