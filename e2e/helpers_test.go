package e2e

// Helpers of the end-to-end suite (the *_test.go files here): a NATS
// server on a random 127.0.0.1 port, voik in-process against it, a plain
// client connection, and raw MessagePack requests whose replies are checked
// key by key against the wire contract (docs/protocol.md).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// requestTimeout bounds every request of the suite that is not a long poll.
const requestTimeout = 15 * time.Second

// e2e is one test's world: a NATS server, voik, and a client connection.
type e2e struct {
	t      *testing.T
	server *server.Server
	voik   *harness.Voik
	nc     *nats.Conn
	api    *client.Client
}

// start runs NATS and voik with the test configuration.
func start(t *testing.T) *e2e { return startWith(t, nil, nil) }

// startWith runs NATS with natsOpts and voik with the test configuration
// adjusted by configure (nil: unchanged).
func startWith(t *testing.T, natsOpts []harness.NATSOption, configure func(*config.Config)) *e2e {
	t.Helper()
	ns := harness.StartNATS(t, natsOpts...)
	cfg := harness.TestConfig(t, ns.ClientURL())
	if configure != nil {
		configure(cfg)
	}
	e := &e2e{t: t, server: ns, voik: harness.StartVoik(t, cfg)}
	e.nc = harness.Connect(t, ns.ClientURL())
	e.api = client.New(e.nc, cfg.APIPrefix)
	return e
}

func (e *e2e) prefix() string { return e.voik.Config.APIPrefix }

// restart stops voik as SIGTERM would and starts it again on the same
// configuration and data dir.
func (e *e2e) restart() {
	e.t.Helper()
	e.voik.Stop(e.t)
	e.voik = harness.StartVoik(e.t, e.voik.Config)
}

// appendAcked publishes one message with Voik-Ack and returns voik's ack.
func (e *e2e) appendAcked(subject string, headers nats.Header, data []byte) *messages.AckReply {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	ack, err := e.api.Append(ctx, subject, headers, data)
	if err != nil {
		e.t.Fatalf("acked append to %s: %v", subject, err)
	}
	return ack
}

// publish publishes one message without asking for an ack.
func (e *e2e) publish(subject string, headers nats.Header, data []byte) {
	e.t.Helper()
	msg := nats.NewMsg(subject)
	for name, values := range headers {
		msg.Header[name] = values
	}
	msg.Data = data
	if err := e.nc.PublishMsg(msg); err != nil {
		e.t.Fatalf("publish %s: %v", subject, err)
	}
}

// flush makes sure the server has everything published so far.
func (e *e2e) flush() {
	e.t.Helper()
	if err := e.nc.FlushTimeout(requestTimeout); err != nil {
		e.t.Fatalf("flush: %v", err)
	}
}

// waitForEnd waits until INFO shows subject's end offset at least end.
func (e *e2e) waitForEnd(subject string, end uint64) {
	e.t.Helper()
	harness.Eventually(e.t, 30*time.Second, fmt.Sprintf("%s to reach end offset %d", subject, end), func() bool {
		info, err := e.api.Info(context.Background(), subject)
		return err == nil && info.EndOffset >= end
	})
}

// fetch is a FETCH through the Go client that must succeed.
func (e *e2e) fetch(subject string, req messages.FetchRequest) *messages.FetchReply {
	e.t.Helper()
	reply, err := e.api.Fetch(context.Background(), subject, req)
	if err != nil {
		e.t.Fatalf("fetch %s %+v: %v", subject, req, err)
	}
	return reply
}

// fetchAll reads a subject's whole log, page by page.
func (e *e2e) fetchAll(subject string) []messages.Record {
	e.t.Helper()
	var all []messages.Record
	req := messages.FetchRequest{MaxMessages: messages.MaxMessagesCap}
	for {
		reply := e.fetch(subject, req)
		all = append(all, reply.Records...)
		if reply.NextOffset >= reply.EndOffset {
			return all
		}
		if len(reply.Records) == 0 {
			e.t.Fatalf("fetch %s at %v returned nothing before end %d", subject, req.Offset, reply.EndOffset)
		}
		next := reply.NextOffset
		req.Offset = &next
	}
}

// snapshot is everything voik holds: every subject's records.
func (e *e2e) snapshot() map[string][]messages.Record {
	e.t.Helper()
	reply, err := e.api.Subjects(context.Background(), messages.SubjectsRequest{Limit: 1 << 20})
	if err != nil {
		e.t.Fatalf("subjects: %v", err)
	}
	all := map[string][]messages.Record{}
	for _, subject := range reply.Subjects {
		all[subject] = e.fetchAll(subject)
	}
	return all
}

// subjects lists every stored subject matching filter.
func (e *e2e) subjects(filter string) []string {
	e.t.Helper()
	reply, err := e.api.Subjects(context.Background(), messages.SubjectsRequest{Filter: filter, Limit: 1 << 20})
	if err != nil {
		e.t.Fatalf("subjects %q: %v", filter, err)
	}
	return reply.Subjects
}

// encode marshals a request body; a []byte is sent as it is.
func encode(t testing.TB, body any) []byte {
	t.Helper()
	switch b := body.(type) {
	case nil:
		return nil
	case []byte:
		return b
	}
	raw, err := msgpack.Marshal(body)
	if err != nil {
		t.Fatalf("encode %v: %v", body, err)
	}
	return raw
}

// call sends body (see encode) to <prefix>.<verbAndSubject> and decodes
// the reply into a map: integers as int64 or uint64, bin as []byte.
func (e *e2e) call(verbAndSubject string, body any) map[string]any {
	e.t.Helper()
	return rawCall(e.t, e.nc, e.prefix()+"."+verbAndSubject, encode(e.t, body))
}

// rawCall sends a request to subject and decodes its reply.
func rawCall(t testing.TB, nc *nats.Conn, subject string, body []byte) map[string]any {
	t.Helper()
	msg, err := nc.Request(subject, body, requestTimeout)
	if err != nil {
		t.Fatalf("request %.80q (%d bytes): %v", subject, len(body), err)
	}
	return decodeReply(t, msg.Data)
}

// decodeReply decodes a reply body, which must be one MessagePack map with
// string keys and nothing after it. Integers come out as int64 or uint64,
// str as string, bin as []byte: the test can tell which was sent.
func decodeReply(t testing.TB, body []byte) map[string]any {
	t.Helper()
	d := msgpack.NewDecoder(bytes.NewReader(body))
	v, err := decodeValue(d)
	m, isMap := v.(map[string]any)
	if err != nil || !isMap {
		t.Fatalf("reply is not a MessagePack map with string keys: %v (% x)", err, body[:min(len(body), 64)])
	}
	if _, err := d.PeekCode(); err == nil {
		t.Fatalf("reply has bytes after its map")
	}
	return m
}

// decodeValue decodes one value keeping the str/bin distinction.
func decodeValue(d *msgpack.Decoder) (any, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, d.DecodeNil()
	case c == msgpcode.True || c == msgpcode.False:
		return d.DecodeBool()
	case c == msgpcode.Float || c == msgpcode.Double:
		return d.DecodeFloat64()
	case c == msgpcode.Uint64:
		return d.DecodeUint64()
	case msgpcode.IsFixedNum(c) || c >= msgpcode.Uint8 && c <= msgpcode.Int64:
		return d.DecodeInt64()
	case msgpcode.IsString(c):
		return d.DecodeString()
	case msgpcode.IsBin(c):
		b, err := d.DecodeBytes()
		if b == nil && err == nil {
			b = []byte{}
		}
		return b, err
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, min(n, 1<<16))
		for i := 0; i < n; i++ {
			v, err := decodeValue(d)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		out := make(map[string]any, min(n, 1<<16))
		for i := 0; i < n; i++ {
			kc, err := d.PeekCode()
			if err != nil {
				return nil, err
			}
			if !msgpcode.IsString(kc) {
				return nil, fmt.Errorf("map key of code %#x is not a string", kc)
			}
			key, err := d.DecodeString()
			if err != nil {
				return nil, err
			}
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("map key %q twice", key)
			}
			if out[key], err = decodeValue(d); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected MessagePack code %#x", c)
}

// wantKeys fails unless m has exactly keys.
func wantKeys(t testing.TB, what string, m map[string]any, keys ...string) {
	t.Helper()
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(keys)
	if !reflect.DeepEqual(got, keys) {
		t.Fatalf("%s has keys %v, want exactly %v (%.300v)", what, got, keys, m)
	}
}

// wantError checks that reply is exactly {error: {code, description}} with
// code and a description, and returns the description.
func wantError(t testing.TB, what string, reply map[string]any, code int) string {
	t.Helper()
	wantKeys(t, what+" (an error reply)", reply, "error")
	body, ok := reply["error"].(map[string]any)
	if !ok {
		t.Fatalf("%s: error is %T, want a map", what, reply["error"])
	}
	wantKeys(t, what+": error", body, "code", "description")
	if got := num(t, body["code"]); got != int64(code) {
		t.Fatalf("%s: code %d (%v), want %d", what, got, body["description"], code)
	}
	desc, ok := body["description"].(string)
	if !ok || desc == "" {
		t.Fatalf("%s: description %#v, want a non-empty string", what, body["description"])
	}
	return desc
}

// wantSuccess fails when reply is an error.
func wantSuccess(t testing.TB, what string, reply map[string]any) {
	t.Helper()
	if errBody, isError := reply["error"]; isError {
		t.Fatalf("%s: error reply %v", what, errBody)
	}
}

// num reads a MessagePack integer decoded loosely.
func num(t testing.TB, v any) int64 {
	t.Helper()
	switch n := v.(type) {
	case int64:
		return n
	case uint64:
		if n > 1<<63-1 {
			t.Fatalf("integer %d out of int64 range", n)
		}
		return int64(n)
	}
	t.Fatalf("%#v (%T) is not an integer", v, v)
	return 0
}

// unum reads a MessagePack unsigned integer decoded loosely.
func unum(t testing.TB, v any) uint64 {
	t.Helper()
	switch n := v.(type) {
	case int64:
		if n < 0 {
			t.Fatalf("%d is negative", n)
		}
		return uint64(n)
	case uint64:
		return n
	}
	t.Fatalf("%#v (%T) is not an integer", v, v)
	return 0
}

// ptr returns a pointer to v, for optional request fields.
func ptr(v uint64) *uint64 { return &v }

// waitUntil waits for a value on ch, failing after timeout.
func waitUntil[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
	var zero T
	return zero
}

// descriptionSays fails unless desc contains every part.
func descriptionSays(t testing.TB, desc string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(desc, p) {
			t.Fatalf("description %q does not say %q", desc, p)
		}
	}
}

// inboxCollector receives replies to many requests on one wildcard inbox,
// so that a test can have thousands in flight without a goroutine each.
type inboxCollector struct {
	prefix string
	msgs   chan *nats.Msg
	sub    *nats.Subscription
}

// capacity must hold every reply that may arrive before the test reads it.
func newInboxCollector(t testing.TB, nc *nats.Conn, capacity int) *inboxCollector {
	t.Helper()
	c := &inboxCollector{prefix: nats.NewInbox(), msgs: make(chan *nats.Msg, capacity)}
	var err error
	if c.sub, err = nc.ChanSubscribe(c.prefix+".*", c.msgs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.sub.Unsubscribe() })
	return c
}

// replyTo is the reply subject of request i.
func (c *inboxCollector) replyTo(i int) string { return fmt.Sprintf("%s.%d", c.prefix, i) }

// index is the request number a reply answers.
func (c *inboxCollector) index(t testing.TB, msg *nats.Msg) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(msg.Subject[len(c.prefix)+1:], "%d", &i); err != nil {
		t.Fatalf("reply on %q: %v", msg.Subject, err)
	}
	return i
}

// configT shortens the configuration type in startWith callbacks.
type configT = config.Config

// isCode says whether err is voik's error reply with code.
func isCode(err error, code int) bool {
	var apiErr *messages.Error
	return errors.As(err, &apiErr) && apiErr.Code == code
}
