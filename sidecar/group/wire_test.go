package group

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/logstore"
)

// slowReply is the reply a pull gets through Collect, wire and
// reflection: what followers were sent before the wire path, and what a
// record in chunks is still sent as.
func slowReply(t *testing.T, m *member, head PullReply, from uint64, max, budget int) (PullReply, bool) {
	t.Helper()
	entries, err := Collect(m.store, m.journal, from, max, budget)
	if err != nil && len(entries) == 0 {
		t.Fatalf("collect from %d: %v", from, err)
	}
	if WireSize(entries[0].Subject, entries[0].Headers, entries[0].Data) > budget {
		return PullReply{}, false // in chunks
	}
	for _, e := range entries {
		head.Records = append(head.Records, wire(e, budget, 0))
	}
	return roundTrip(t, head), true
}

func roundTrip(t *testing.T, reply PullReply) PullReply {
	t.Helper()
	body, err := msgpack.Marshal(&reply)
	if err != nil {
		t.Fatal(err)
	}
	var got PullReply
	if err := msgpack.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// leadWithHeaders is lead over a number of subjects, with headers of
// several names and values, and records with no data.
func (m *member) leadWithHeaders(t testing.TB, rng *rand.Rand, n, subjects int) {
	t.Helper()
	for i := range n {
		subject := fmt.Sprintf("orders.%d", rng.IntN(subjects))
		var headers logstore.Headers
		switch rng.IntN(4) {
		case 0:
			headers = logstore.Headers{"Nats-Msg-Id": {fmt.Sprint(i)}}
		case 1:
			headers = logstore.Headers{"A": {"1", "", "three"}, "Voik-Ack": {"1"}, "b": {string(make([]byte, 300))}}
		}
		data := make([]byte, []int{0, 1, 31, 32, 255, 256, 1024, 3000}[rng.IntN(8)])
		for k := range data {
			data[k] = byte(rng.IntN(256))
		}
		first, _, err := m.store.Append(subject, []logstore.Entry{{Headers: headers, Data: data}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.journal.Append([]Pointer{{Subject: subject, Offset: first}}); err != nil {
			t.Fatal(err)
		}
	}
}

// A pull's records encoded straight from the logs decode to exactly what
// Collect, wire and reflection send: records with and without headers or
// data, start markers, pointers whose record retention deleted, batches
// cut by count and by size, and the reply's own fields. Where the first
// record needs chunks, the wire path declines and Collect's takes it.
// Subjects interleaved in the journal (the records' encodings are put in
// journal order) and one subject alone (they are in order already, and
// the reply is written around them) are both compared.
func TestWireBatchDecodesAsCollectDoes(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	leader := newRetainingMember(t, true)
	for range 3 {
		leader.leadWithHeaders(t, rng, 200, 7)
		leader.commitStarts(t)
	}
	leader.leadWithHeaders(t, rng, 50, 7) // pointers past the last commit's starts
	compared, chunked, drops, records := compareWithCollect(t, rng, leader)
	if compared < 100 || chunked == 0 || drops == 0 || records < 1000 {
		t.Fatalf("compared %d, chunked %d, drops %d, records %d: the cases were not all met", compared, chunked, drops, records)
	}
	alone := newMember(t)
	alone.leadWithHeaders(t, rng, 300, 1)
	if compared, chunked, _, records := compareWithCollect(t, rng, alone); compared < 100 || chunked == 0 || records < 1000 {
		t.Fatalf("one subject: compared %d, chunked %d, records %d: the cases were not all met", compared, chunked, records)
	}
}

// compareWithCollect pulls from random places of m's journal, with random
// limits, through both paths, and fails at the first difference.
func compareWithCollect(t *testing.T, rng *rand.Rand, m *member) (compared, chunked, drops, records int) {
	t.Helper()
	end := m.journal.End()
	for range 400 {
		// Anywhere, or among the last records, which retention kept.
		first := m.journal.Log().FirstOffset()
		from := first + uint64(rng.IntN(int(end-first)))
		if rng.IntN(2) == 0 {
			from = end - 1 - uint64(rng.IntN(60))
		}
		max, budget := 1+rng.IntN(1000), 1+rng.IntN(300_000)
		if rng.IntN(3) == 0 {
			budget = 1 + rng.IntN(4000) // about one record: some need chunks
		}
		head := PullReply{Version: ProtocolVersion, Epoch: rng.Uint64(), Committed: rng.Uint64(), InSync: rng.IntN(2) == 0, End: uint64(rng.IntN(2)) * end}
		if rng.IntN(2) == 0 {
			head.Epochs = []logstore.EpochStart{{Epoch: 3, Start: 10}, {Epoch: 9, Start: 400}}
		}
		want, whole := slowReply(t, m, head, from, max, budget)
		batch, ok, err := collectWire(m.store, m.journal, from, max, budget)
		if err != nil {
			t.Fatalf("collectWire from %d: %v", from, err)
		}
		if ok != whole {
			t.Fatalf("from %d, budget %d: wire path took it %v, Collect sends it whole %v", from, budget, ok, whole)
		}
		if !ok {
			chunked++
			continue
		}
		body, err := batch.reply(&head, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		var got PullReply
		if err := msgpack.Unmarshal(body, &got); err != nil {
			t.Fatalf("from %d: %v", from, err)
		}
		batch.release()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("from %d, max %d, budget %d:\n wire %+v\n want %+v", from, max, budget, brief(got), brief(want))
		}
		for _, r := range got.Records {
			if r.Drop != 0 {
				drops++
			} else {
				records++
			}
		}
		compared++
	}
	return compared, chunked, drops, records
}

func brief(r PullReply) string {
	s := fmt.Sprintf("epoch %d committed %d in_sync %v end %d epochs %v, %d records:", r.Epoch, r.Committed, r.InSync, r.End, r.Epochs, len(r.Records))
	for _, w := range r.Records {
		s += fmt.Sprintf(" [j%d %s@%d t%d h%v d%d x%d st%v]", w.Journal, w.Subject, w.Offset, w.Timestamp, w.Headers, len(w.Data), w.Drop, w.Start)
	}
	return s
}

// A reply that would pass max_payload carries half as many records, again
// until it fits or holds one, as the reflective path does.
func TestWireReplyHalvesItsRecordsUnderMaxPayload(t *testing.T) {
	leader := newMember(t)
	leader.lead(t, rand.New(rand.NewPCG(3, 4)), 100)
	batch, ok, err := collectWire(leader.store, leader.journal, 0, 100, 1<<30)
	if !ok || err != nil || batch.count != 100 {
		t.Fatalf("collect: %v %v", ok, err)
	}
	defer batch.release()
	whole, _ := batch.reply(&PullReply{Version: ProtocolVersion}, 1<<30)
	limit := len(whole) / 3
	body, err := batch.reply(&PullReply{Version: ProtocolVersion}, limit)
	if err != nil || len(body) > limit {
		t.Fatalf("%d bytes for max_payload %d, %v", len(body), limit, err)
	}
	var got PullReply
	if err := msgpack.Unmarshal(body, &got); err != nil || len(got.Records) != batch.count || batch.count >= 50 || got.Records[0].Journal != 0 {
		t.Fatalf("%d records (count %d), %v", len(got.Records), batch.count, err)
	}
}

// A journal pointer that does not name the record its log holds there
// (corruption of one or the other) ends the batch before it, on both
// paths: no entry is ever sent without its record.
func TestABatchEndsBeforeAPointerItsLogDoesNotBear(t *testing.T) {
	leader := newMember(t)
	if _, _, err := leader.store.Append("a", []logstore.Entry{{Data: []byte("0")}, {Data: []byte("1")}, {Data: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.journal.Append([]Pointer{{Subject: "a", Offset: 0}, {Subject: "a", Offset: 2}, {Subject: "a", Offset: 5}}); err != nil {
		t.Fatal(err)
	}
	entries, err := Collect(leader.store, leader.journal, 0, 10, 1<<20)
	if len(entries) != 1 || err == nil || string(entries[0].Data) != "0" {
		t.Fatalf("Collect: %+v, %v", entries, err)
	}
	batch, ok, err := collectWire(leader.store, leader.journal, 0, 10, 1<<20)
	if !ok || err != nil || batch.count != 1 {
		t.Fatalf("collectWire: %v, %v, %d", ok, err, batch.count)
	}
	batch.release()
	// A pointer past the log's end: nothing to send, and the error says so.
	if _, err := Collect(leader.store, leader.journal, 2, 10, 1<<20); err == nil {
		t.Fatal("Collect of a pointer past the end: no error")
	}
	batch, ok, err = collectWire(leader.store, leader.journal, 2, 10, 1<<20)
	if !ok || err == nil || batch.count != 0 {
		t.Fatalf("collectWire of a pointer past the end: %v, %v", ok, err)
	}
}

// The follower's decoder agrees with MessagePack's on every body: where
// it takes one itself, it decodes what msgpack does; where it does not,
// msgpack decodes it (or refuses it) as before.
func FuzzDecodePullReply(f *testing.F) {
	rng := rand.New(rand.NewPCG(21, 22))
	leader := newMember(f)
	leader.leadWithHeaders(f, rng, 40, 3)
	for _, budget := range []int{1, 3000, 8000} { // small seeds: the fuzzer minimizes what it finds
		batch, _, _ := collectWire(leader.store, leader.journal, 0, 1000, budget)
		if batch != nil {
			body, _ := batch.reply(&PullReply{Version: ProtocolVersion, Epoch: 3, Committed: 9, InSync: true, End: 40}, 1<<30)
			f.Add(append([]byte(nil), body...))
			batch.release()
		}
	}
	for _, r := range []PullReply{
		{Version: ProtocolVersion, Code: CodeNotLeader, Error: "not the leader"},
		{Version: ProtocolVersion, Epochs: []logstore.EpochStart{{Epoch: 1, Start: 2}}, Records: []WireRecord{{Subject: "a", Data: []byte{}, Headers: map[string][]string{"A": nil, "B": {}}}}},
		{Version: ProtocolVersion, Records: []WireRecord{{Journal: 7, Subject: "a", Chunk: 1, Chunks: 3, Data: []byte("x")}}},
	} {
		body, _ := msgpack.Marshal(&r)
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast PullReply
		if decodeHot(body, &fast) != nil {
			return
		}
		var want PullReply
		if err := msgpack.Unmarshal(body, &want); err != nil {
			t.Fatalf("the hot path took a body msgpack refuses (%v)", err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("hot path %+v\nmsgpack  %+v", brief(fast), brief(want))
		}
	})
}
