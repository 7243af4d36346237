package e2e

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// TestBurstOverInterleavedSubjectsKeepsEachSubjectsOrder publishes a
// burst that round-robins over several subjects of one wildcard filter,
// with headers on some messages and acks asked for on others, and ends it
// with a message voik does not store. Capture appends what NATS has
// queued in batches grouped by subject; every subject must still hold its
// messages in publish order at contiguous offsets, every ack must name
// the offset that holds its message, and the batch histogram must account
// for every record stored exactly once.
func TestBurstOverInterleavedSubjectsKeepsEachSubjectsOrder(t *testing.T) {
	const (
		subjects = 5
		n        = 20_000 // messages in all
		ackEvery = 97
	)
	e := startWith(t, nil, func(c *config.Config) { c.Subjects = "mix.>" })
	nc := e.nc

	type ackWant struct {
		subject string
		data    []byte
	}
	var mu sync.Mutex
	acked := map[int]messages.AckReply{}
	inbox := nc.NewRespInbox()
	allAcked := make(chan struct{})
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		i, _ := strconv.Atoi(m.Subject[len(inbox)+1:])
		var ack messages.AckReply
		if err := msgpack.Unmarshal(m.Data, &ack); err != nil {
			t.Errorf("ack %d: %v", i, err)
		}
		mu.Lock()
		defer mu.Unlock()
		acked[i] = ack
		if len(acked) == n/ackEvery+1 {
			close(allAcked)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	nc.Flush()

	wants := map[int]ackWant{}
	perSubject := make([][][]byte, subjects)
	for i := 0; i < n; i++ {
		s := i % subjects
		subject := fmt.Sprintf("mix.s%d", s)
		data := []byte(fmt.Sprintf("%s #%d", subject, i))
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		if i%3 == 0 {
			msg.Header.Set("Seq", strconv.Itoa(i))
		}
		if i%ackEvery == 0 {
			msg.Header.Set(messages.HeaderAck, "1")
			msg.Reply = inbox + "." + strconv.Itoa(i)
			wants[i] = ackWant{subject, data}
		}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		perSubject[s] = append(perSubject[s], data)
	}
	// Last of the burst: captured by the filter but never stored.
	if err := nc.Publish("mix.a.*", []byte("wildcard")); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(requestTimeout); err != nil {
		t.Fatal(err)
	}
	for s := range subjects {
		subject := fmt.Sprintf("mix.s%d", s)
		e.waitForEnd(subject, uint64(len(perSubject[s])))
		records := e.fetchAll(subject)
		if len(records) != len(perSubject[s]) {
			t.Fatalf("%s holds %d records, want %d", subject, len(records), len(perSubject[s]))
		}
		for k, r := range records {
			if r.Offset != uint64(k) || !bytes.Equal(r.Data, perSubject[s][k]) {
				t.Fatalf("%s offset %d: record %d %q, want %q", subject, k, r.Offset, r.Data, perSubject[s][k])
			}
			i, _ := strconv.Atoi(string(r.Data[bytes.IndexByte(r.Data, '#')+1:]))
			if got, want := r.Headers["Seq"], strconv.Itoa(i); i%3 == 0 && (len(got) != 1 || got[0] != want) {
				t.Fatalf("%s offset %d: header Seq %v, want %s", subject, k, got, want)
			}
		}
	}
	waitUntil(t, allAcked, 30*time.Second, "every ack")
	mu.Lock()
	for i, want := range wants {
		ack := acked[i]
		if ack.Subject != want.subject || ack.Offset != uint64(i/subjects) {
			t.Errorf("ack of message %d: %s offset %d, want %s offset %d", i, ack.Subject, ack.Offset, want.subject, i/subjects)
		}
	}
	mu.Unlock()

	// Capture counts a batch just after storing it: wait for the count to
	// reach n, then it must be exactly n.
	var h *dto.Histogram
	harness.Eventually(t, 10*time.Second, "the batch histogram to count every record", func() bool {
		h = scrape(t, e.voik.Sidecar.HTTPAddr())["voik_capture_batch_records"].GetMetric()[0].GetHistogram()
		return h.GetSampleSum() >= n
	})
	if h.GetSampleSum() != n {
		t.Fatalf("batches hold %v records in all, want %d", h.GetSampleSum(), n)
	}
	t.Logf("%d records in %d writes (%.1f per write)", n, h.GetSampleCount(), float64(n)/float64(h.GetSampleCount()))
}
