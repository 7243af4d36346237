package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
	"github.com/voik/voik/sidecar"
)

func TestCaptureWithSeveralWildcardFiltersStoresExactlyTheMatchingSubjects(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *configT) { c.Subjects = "orders.*, metrics.>,exact.one" })
	publish := map[string]bool{ // subject → captured
		"orders.eu":        true,
		"orders.us":        true,
		"orders":           false, // * needs a token
		"orders.eu.late":   false, // * is one token
		"metrics.cpu":      true,
		"metrics.a.b.c":    true,
		"metrics":          false, // > needs a token
		"exact.one":        true,
		"exact.two":        false,
		"exact.one.more":   false,
		"other.subject":    false,
		"Orders.eu":        false, // subjects are case-sensitive
		"prefix.orders.eu": false,
	}
	for subject := range publish {
		e.publish(subject, nil, []byte(subject))
	}
	e.flush()
	var want []string
	for subject, captured := range publish {
		if captured {
			e.waitForEnd(subject, 1)
			want = append(want, subject)
		}
	}
	// Subjects outside the filters reach no subscription of voik's at all,
	// so once the captured ones are in, nothing else can come.
	got := e.subjects(">")
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	for _, subject := range want {
		records := e.fetchAll(subject)
		if len(records) != 1 || string(records[0].Data) != subject {
			t.Fatalf("%s: %+v", subject, records)
		}
	}
	// The API answers for the captured subjects under every filter.
	if info, err := e.api.Info(context.Background(), "metrics.a.b.c"); err != nil || info.Messages != 1 {
		t.Fatalf("INFO metrics.a.b.c: %+v, %v", info, err)
	}
}

func TestCaptureNeverStoresAPIInboxDollarOrReplayedMessages(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *configT) { c.APIPrefix = "my.api" })
	e.publish("my.api", nil, []byte("the prefix itself"))
	e.publish("my.api.anything", nil, []byte("under the prefix"))
	e.publish("my.api.FETCH.x", nil, nil)
	e.publish("_INBOX.abc", nil, []byte("an inbox"))
	e.publish("_INBOX.abc.def", nil, []byte("an inbox"))
	e.publish("$SYS.fake", nil, []byte("a $ subject"))
	e.publish("$KV.bucket.key", nil, []byte("a $ subject"))
	e.publish("plain", nats.Header{messages.HeaderOffset: {"7"}}, []byte("a replayed copy"))
	e.publish("plain", nats.Header{messages.HeaderOffset: {""}, "Other": {"x"}}, []byte("a replayed copy"))
	// Not excluded: only look alike.
	e.publish("my.apiary", nil, []byte("1"))
	e.publish("VOIK.API.x", nil, []byte("2")) // the default prefix, not this voik's
	e.publish("_INBOXES", nil, []byte("3"))
	e.publish("x.$y", nil, []byte("4"))
	e.publish("plain", nats.Header{"voik-offset": {"7"}}, []byte("5")) // names match exactly
	// One filter ('>') is one subscription, read in order: once this acked
	// append is stored, everything published before it has been handled.
	if ack := e.appendAcked("plain", nil, []byte("6")); ack.Offset != 1 {
		t.Fatalf("marker stored at offset %d, want 1 (a replayed copy was stored?)", ack.Offset)
	}
	want := []string{"VOIK.API.x", "_INBOXES", "my.apiary", "plain", "x.$y"}
	if got := e.subjects(">"); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

func TestHeadersAndDataArePreservedExactly(t *testing.T) {
	t.Parallel()
	e := start(t)
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\r', '\n', 0, 0x80}
	cases := []struct {
		name    string
		headers nats.Header
		data    []byte
	}{
		{"no headers, text", nil, []byte("hello")},
		{"no headers, binary with NULs", nil, binary},
		{"no headers, empty data", nil, []byte{}},
		{"case of names kept", nats.Header{"x-lower": {"1"}, "X-UPPER": {"2"}, "MiXeD-CaSe": {"3"}}, []byte("a")},
		{"names differing only in case", nats.Header{"Key": {"a"}, "key": {"b"}, "KEY": {"c"}}, []byte("b")},
		{"several values in their order", nats.Header{"Multi": {"3", "1", "2", "1"}}, []byte("c")},
		{"empty value", nats.Header{"Empty": {""}, "Full": {"x"}}, []byte("d")},
		{"values with spaces, colons and unicode", nats.Header{"Odd": {"a: b  c", "日本語 ✓", "k=v;q=\"1\""}}, binary},
		{"a long value", nats.Header{"Long": {strings.Repeat("v", 4000)}}, []byte("e")},
		{"many names", manyHeaders(50), []byte("f")},
		{"headers, empty data", nats.Header{"Only": {"headers"}}, nil},
	}
	for _, c := range cases {
		e.publish("exact.headers", c.headers, c.data)
	}
	e.flush()
	e.waitForEnd("exact.headers", uint64(len(cases)))
	records := e.fetchAll("exact.headers")
	for i, c := range cases {
		r := records[i]
		wantHeaders := map[string][]string(c.headers)
		if !reflect.DeepEqual(r.Headers, wantHeaders) {
			t.Errorf("%s: FETCH headers\n got %v\nwant %v", c.name, r.Headers, wantHeaders)
		}
		if string(r.Data) != string(c.data) {
			t.Errorf("%s: FETCH data %q, want %q", c.name, r.Data, c.data)
		}
	}
	// The raw reply: headers absent (not empty) when there were none, data bin.
	raw := wantFetchReply(t, e.call("FETCH.exact.headers", map[string]any{"max_messages": 4}), "exact.headers", 4, 0, uint64(len(cases)))
	for i, r := range raw {
		if _, has := r["headers"]; has != (cases[i].headers != nil) {
			t.Errorf("%s: headers key present %v", cases[i].name, has)
		}
		if _, isBin := r["data"].([]byte); !isBin {
			t.Errorf("%s: data is %T, want bin", cases[i].name, r["data"])
		}
	}
	// REPLAY delivers the same headers, plus its own three.
	var replayed []client.ReplayedRecord
	_, err := e.api.Replay(context.Background(), "exact.headers", messages.ReplayRequest{}, func(r client.ReplayedRecord) error {
		replayed = append(replayed, r)
		return nil
	})
	if err != nil || len(replayed) != len(cases) {
		t.Fatalf("replay: %d records, %v", len(replayed), err)
	}
	for i, c := range cases {
		if !reflect.DeepEqual(replayed[i].Headers, c.headers) || string(replayed[i].Data) != string(c.data) {
			t.Errorf("%s: REPLAY gave headers %v data %q", c.name, replayed[i].Headers, replayed[i].Data)
		}
	}
}

func manyHeaders(n int) nats.Header {
	h := nats.Header{}
	for i := 0; i < n; i++ {
		h["H-"+strings.Repeat("n", i+1)] = []string{strings.Repeat("v", n-i)}
	}
	return h
}

func TestTimestampsAreReceiveTimesThatNeverDecrease(t *testing.T) {
	t.Parallel()
	e := start(t)
	before := time.Now().UnixNano()
	for i := 0; i < 200; i++ {
		e.publish("stamped", nil, nil)
	}
	e.flush()
	e.waitForEnd("stamped", 200)
	after := time.Now().UnixNano()
	records := e.fetchAll("stamped")
	for i, r := range records {
		if r.Timestamp < before || r.Timestamp > after {
			t.Fatalf("record %d timestamp %d outside [%d, %d]", i, r.Timestamp, before, after)
		}
		if i > 0 && r.Timestamp < records[i-1].Timestamp {
			t.Fatalf("record %d timestamp %d below the one before, %d", i, r.Timestamp, records[i-1].Timestamp)
		}
	}
}

func TestLiteralWildcardSubjectsAreNotStored(t *testing.T) {
	t.Parallel()
	e := start(t)
	// NATS routes a publish to a literal "a.*" or "a.>" to matching
	// subscribers, but no FETCH could ever name it (400): voik does not
	// store what it could not serve.
	e.publish("wild.*", nil, []byte("x"))
	e.publish("wild.>", nil, []byte("x"))
	e.publish("wild.*.deeper", nil, []byte("x"))
	// An acked one is told why.
	msg := nats.NewMsg("wild.*")
	msg.Header.Set(messages.HeaderAck, "1")
	reply, err := e.nc.RequestMsg(msg, requestTimeout)
	if err != nil {
		t.Fatalf("acked publish on a wildcard subject: %v", err)
	}
	wantError(t, "ack of a wildcard subject", decodeReply(t, reply.Data), 400)
	e.appendAcked("wild.marker", nil, nil)
	if got := e.subjects(">"); !reflect.DeepEqual(got, []string{"wild.marker"}) {
		t.Fatalf("stored %v", got)
	}
}

func TestTwoVoiksSharingNATSEachAnswerOnTheirOwnPrefix(t *testing.T) {
	t.Parallel()
	orders := startWith(t, nil, func(c *configT) { c.Subjects, c.APIPrefix = "orders.>", "ORDERS.API" })
	paymentsCfg := harness.TestConfig(t, orders.server.ClientURL())
	paymentsCfg.Subjects, paymentsCfg.APIPrefix = "payments.>", "PAYMENTS.API"
	harness.StartVoik(t, paymentsCfg)
	payments := client.New(orders.nc, paymentsCfg.APIPrefix)

	orders.appendAcked("orders.eu", nil, []byte("an order"))
	orders.appendAcked("payments.eu", nil, []byte("a payment"))
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	for _, c := range []struct {
		api     *client.Client
		subject string
		data    string // "": nobody answers on that prefix
	}{
		{orders.api, "orders.eu", "an order"},
		{orders.api, "payments.eu", ""},
		{payments, "payments.eu", "a payment"},
		{payments, "orders.eu", ""},
	} {
		reply, err := c.api.Fetch(ctx, c.subject, messages.FetchRequest{})
		switch {
		case c.data == "" && !errors.Is(err, nats.ErrNoResponders):
			t.Errorf("FETCH %s on the prefix of the voik that does not capture it: %+v, %v; want no responders", c.subject, reply, err)
		case c.data != "" && (err != nil || len(reply.Records) != 1 || string(reply.Records[0].Data) != c.data):
			t.Errorf("FETCH %s: %+v, %v", c.subject, reply, err)
		}
	}
}

// TestSubjectsOutsideTheFiltersAreRoutedOnlyWhenHeld: a voik takes the
// verbs of the subjects its filters match, and of those it still holds
// from filters it had before; for any other subject NATS answers "no
// responders", so that another voik on the prefix can take it.
func TestSubjectsOutsideTheFiltersAreRoutedOnlyWhenHeld(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.appendAcked("payments.eu", nil, []byte("a payment"))
	e.voik.Stop(t)
	e.voik.Config.Subjects = "orders.>"
	e.voik = harness.StartVoik(t, e.voik.Config)
	for _, call := range []struct {
		subject string
		body    any
	}{
		{"FETCH.other.subject", nil},
		{"FETCH.other.subject", map[string]any{"wait_ms": 50}},
		{"INFO.other.subject", nil},
		{"REPLAY.other.subject", map[string]any{"deliver": "_INBOX.x"}},
		{"FETCH.payments.us", nil}, // beside a held subject, not held itself
	} {
		if _, err := e.nc.Request(e.prefix()+"."+call.subject, encode(t, call.body), requestTimeout); !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("%s: %v, want no responders", call.subject, err)
		}
	}
	// Never stored, inside the filters: 404 from this voik.
	wantError(t, "FETCH inside the filters", e.call("FETCH.orders.none", nil), 404)
	if records := e.fetchAll("payments.eu"); len(records) != 1 || string(records[0].Data) != "a payment" {
		t.Fatalf("FETCH of a subject stored under the old filters: %+v", records)
	}
	wantKeys(t, "INFO of a held subject", e.call("INFO.payments.eu", nil), "subject", "first_offset", "end_offset", "messages", "bytes", "first_ts", "last_ts", "segments")
}

// TestOverlappingFiltersStoreEachMessageOnce: with filters that overlap
// without one covering the other, NATS delivers a message matching both
// to both subscriptions; voik stores it once, in order, and acks it once.
func TestOverlappingFiltersStoreEachMessageOnce(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *configT) { c.Subjects = "orders.*,*.eu" })
	const n = 200
	subjects := []string{"orders.eu", "orders.us", "payments.eu"}
	inbox := e.nc.NewRespInbox() + "."
	acks, err := e.nc.SubscribeSync(inbox + ">")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		for _, subject := range subjects {
			msg := nats.NewMsg(subject)
			msg.Data = []byte(fmt.Sprintf("%s %d", subject, i))
			if i%10 == 0 {
				msg.Header.Set(messages.HeaderAck, "1")
				msg.Reply = inbox + subject
			}
			if err := e.nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Acked markers behind everything on a subject only one filter takes:
	// once acked, each handler has appended all it was going to.
	e.appendAcked("orders.us", nil, []byte("marker"))
	e.appendAcked("payments.eu", nil, []byte("marker"))
	for _, subject := range subjects {
		records := e.fetchAll(subject)
		if subject != "orders.eu" {
			records = records[:len(records)-1] // the marker
		}
		if len(records) != n {
			t.Fatalf("%s: %d records for %d messages", subject, len(records), n)
		}
		for i, r := range records {
			if want := fmt.Sprintf("%s %d", subject, i); string(r.Data) != want {
				t.Fatalf("%s record %d is %q, want %q", subject, i, r.Data, want)
			}
		}
	}
	// An ack is sent for a stored record: one record each, one ack each.
	got := map[string]int{}
	for range len(subjects) * n / 10 {
		msg, err := acks.NextMsg(requestTimeout)
		if err != nil {
			t.Fatalf("acks so far %v: %v", got, err)
		}
		got[msg.Subject[len(inbox):]]++
	}
	for _, subject := range subjects {
		if got[subject] != n/10 {
			t.Fatalf("acks %v, want %d per subject", got, n/10)
		}
	}
}

// TestAVoikWhoseFiltersOverlapAnothersOnThePrefixIsRefused: a second
// voik on the same API prefix whose filters share a subject with the
// first's stops at start with a configuration error (exit status 2) that
// names the other voik and the filters; with filters apart, or a prefix
// of its own, it starts.
func TestAVoikWhoseFiltersOverlapAnothersOnThePrefixIsRefused(t *testing.T) {
	t.Parallel()
	first := startWith(t, nil, func(c *configT) { c.Subjects = "orders.>,audit.*" })
	for _, c := range []struct {
		prefix, subjects string
		refused          []string // what the error names; nil: starts
	}{
		{first.prefix(), "orders.eu", []string{"standalone voik", "orders.eu with orders.>", first.prefix()}},
		{first.prefix(), "payments.>,*.login", []string{"*.login with audit.*"}},
		{first.prefix(), ">", []string{"> with orders.>", "> with audit.*"}},
		{first.prefix(), "payments.>", nil},
		{"OTHER.API", "orders.>", nil},
	} {
		cfg := harness.TestConfig(t, first.server.ClientURL())
		cfg.APIPrefix, cfg.Subjects = c.prefix, c.subjects
		if c.refused == nil {
			harness.StartVoik(t, cfg).Stop(t)
			continue
		}
		s, err := sidecar.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = s.Run(ctx)
		cancel()
		var configErr *sidecar.ConfigError
		if !errors.As(err, &configErr) {
			t.Fatalf("filters %s on %s beside orders.>,audit.*: %v, want a configuration error", c.subjects, c.prefix, err)
		}
		for _, want := range c.refused {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("filters %s: %q does not say %q", c.subjects, err, want)
			}
		}
	}
	// The first voik captures orders.> and audit.*: none of the others'
	// start-up requests was stored.
	first.appendAcked("orders.marker", nil, nil)
	if got := first.subjects(">"); !reflect.DeepEqual(got, []string{"orders.marker"}) {
		t.Fatalf("the first voik stored %q", got)
	}
}
