package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// smallPayload is the max_payload of these tests' NATS server: small, so
// that records near it are cheap.
const smallPayload = 64 << 10

func startSmallPayload(t *testing.T) *e2e {
	return startWith(t, []harness.NATSOption{harness.WithMaxPayload(smallPayload)}, nil)
}

// pattern is n bytes that differ from offset to offset.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

func TestRecordNearMaxPayloadIsStoredAndFetched(t *testing.T) {
	t.Parallel()
	e := startSmallPayload(t)
	if got := e.nc.MaxPayload(); got != smallPayload {
		t.Fatalf("server max_payload %d", got)
	}
	// The FETCH reply wraps a record in about 100 bytes of MessagePack.
	for i, size := range []int{smallPayload - 1024, smallPayload - 256, smallPayload - 200} {
		data := pattern(size, i)
		ack := e.appendAcked("near.limit", nil, data)
		reply := e.fetch("near.limit", messages.FetchRequest{Offset: ptr(ack.Offset)})
		if len(reply.Records) != 1 || !bytes.Equal(reply.Records[0].Data, data) || reply.NextOffset != ack.Offset+1 {
			t.Fatalf("record of %d bytes: %d records, next %d", size, len(reply.Records), reply.NextOffset)
		}
	}
	// Several big records: one per reply, none lost between pages.
	records := e.fetchAll("near.limit")
	if len(records) != 3 {
		t.Fatalf("%d records", len(records))
	}
}

func TestRecordThatCannotFitInAReplyIs413AndTheReaderCanStepOverIt(t *testing.T) {
	t.Parallel()
	e := startSmallPayload(t)
	e.appendAcked("too.big", nil, []byte("small 0"))
	// Exactly max_payload of data (no headers): NATS carries it, voik
	// stores it, but no FETCH reply can hold it with its envelope.
	e.publish("too.big", nil, pattern(smallPayload, 1))
	e.appendAcked("too.big", nil, []byte("small 2"))
	info, err := e.api.Info(context.Background(), "too.big")
	if err != nil || info.EndOffset != 3 || info.Bytes != uint64(smallPayload+2*len("small 0")+2*len("Voik-Ack1")) {
		t.Fatalf("info %+v, %v", info, err)
	}
	desc := wantError(t, "FETCH of the big record", e.call("FETCH.too.big", map[string]any{"offset": 1}), 413)
	descriptionSays(t, desc, "record 1", strconv.Itoa(smallPayload))
	// A page that reaches it stops before it: the client then asks at 1,
	// gets the 413, and goes on at 2.
	records := wantFetchReply(t, e.call("FETCH.too.big", map[string]any{"offset": 0}), "too.big", 1, 0, 3)
	if len(records) != 1 {
		t.Fatalf("%d records before the big one", len(records))
	}
	reply := e.fetch("too.big", messages.FetchRequest{Offset: ptr(2)})
	if len(reply.Records) != 1 || string(reply.Records[0].Data) != "small 2" {
		t.Fatalf("after the big one: %+v", reply)
	}
	// max_bytes does not change it: the record is too big for any reply.
	wantError(t, "FETCH of the big record with max_bytes", e.call("FETCH.too.big", map[string]any{"offset": 1, "max_bytes": 1}), 413)
}

func TestFetchRepliesNeverExceedMaxPayload(t *testing.T) {
	t.Parallel()
	e := startSmallPayload(t)
	for i := 0; i < 40; i++ {
		e.publish("paged.big", nats.Header{"N": {strconv.Itoa(i)}}, pattern(10_000, i))
	}
	e.flush()
	e.waitForEnd("paged.big", 40)
	for _, maxBytes := range []uint64{0, 1 << 40} {
		next, pages := uint64(0), 0
		for next < 40 {
			msg, err := e.nc.Request(e.prefix()+".FETCH.paged.big", encode(t, map[string]any{"offset": next, "max_messages": 10000, "max_bytes": maxBytes}), requestTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if len(msg.Data) > smallPayload {
				t.Fatalf("reply of %d bytes", len(msg.Data))
			}
			reply := decodeReply(t, msg.Data)
			records := wantFetchReply(t, reply, "paged.big", unum(t, reply["next_offset"]), 0, 40)
			if len(records) == 0 || len(records) > 6 {
				t.Fatalf("page at %d: %d records of 10 KB under 64 KiB", next, len(records))
			}
			for i, r := range records {
				if !bytes.Equal(r["data"].([]byte), pattern(10_000, int(next)+i)) {
					t.Fatalf("record %d data differs", next+uint64(i))
				}
			}
			next += uint64(len(records))
			pages++
		}
		if pages < 7 {
			t.Fatalf("400 KB came in %d pages", pages)
		}
	}
}

func TestReplayReplacesARecordThatNoLongerFitsWithA413Marker(t *testing.T) {
	t.Parallel()
	e := startSmallPayload(t)
	e.appendAcked("replay.big", nil, []byte("small 0"))
	e.publish("replay.big", nil, pattern(smallPayload-20, 1)) // fits; not with the Voik-* headers
	e.appendAcked("replay.big", nil, []byte("small 2"))
	c := e.collectReplay("_INBOX.replay.big")
	wantReplayReply(t, e.call("REPLAY.replay.big", map[string]any{"deliver": "_INBOX.replay.big"}), "replay.big", "_INBOX.replay.big", 0, 3)
	records, final := c.until()
	if len(records) != 3 {
		t.Fatalf("%d messages", len(records))
	}
	if string(records[0].Data) != "small 0" || string(records[2].Data) != "small 2" {
		t.Fatalf("records around the big one: %q, %q", records[0].Data, records[2].Data)
	}
	marker := records[1]
	if len(marker.Data) != 0 || marker.Header.Get(messages.HeaderStatus) != "413" || marker.Header.Get(messages.HeaderOffset) != "1" {
		t.Fatalf("the big record came as %d bytes with headers %v", len(marker.Data), marker.Header)
	}
	wantEndMarker(t, final, messages.StatusEnd, 3)
	// The Go client reports it as TooLarge.
	var got []string
	if _, err := e.api.Replay(context.Background(), "replay.big", messages.ReplayRequest{}, func(r client.ReplayedRecord) error {
		got = append(got, fmt.Sprintf("%d:%v:%d", r.Offset, r.TooLarge, len(r.Data)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[0:false:7 1:true:0 2:false:7]" {
		t.Fatalf("client replay: %v", got)
	}
}

func TestFetchReplyOfExactlyMaxPayloadIsServedAndOneByteMoreIs413(t *testing.T) {
	t.Parallel()
	e := startSmallPayload(t)
	const subject = "edge"
	headers := map[string][]string{messages.HeaderAck: {"1"}}
	// The reply's size for one record of n data bytes, by an encoder of
	// its own (msgpack's reflection over the reply types, whose uint64
	// and int64 fields it writes in the contract's fixed widths), for a
	// log of three records.
	replySize := func(offset uint64, n int) int {
		var buf bytes.Buffer
		err := msgpack.NewEncoder(&buf).Encode(messages.FetchReply{
			Subject:    subject,
			Records:    []messages.Record{{Offset: offset, Timestamp: time.Now().UnixNano(), Headers: headers, Data: make([]byte, n)}},
			NextOffset: offset + 1, FirstOffset: 0, EndOffset: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		return buf.Len()
	}
	exact := smallPayload - (replySize(0, 1000) - 1000) // data bytes for a reply of exactly max_payload
	sizes := []int{exact - 1, exact, exact + 1}
	for i, n := range sizes {
		if ack := e.appendAcked(subject, nil, pattern(n, i)); ack.Offset != uint64(i) {
			t.Fatalf("ack %+v", ack)
		}
	}
	for i, n := range sizes {
		want := replySize(uint64(i), n)
		if want-smallPayload != i-1 {
			t.Fatalf("record %d: a reply of %d bytes; the test wants max_payload %+d", i, want, i-1)
		}
		msg, err := e.nc.Request(e.prefix()+".FETCH."+subject, encode(t, map[string]any{"offset": i, "max_messages": 1}), requestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		reply := decodeReply(t, msg.Data)
		if want > smallPayload {
			wantError(t, fmt.Sprintf("a reply of %d bytes", want), reply, 413)
			continue
		}
		records := wantFetchReply(t, reply, subject, uint64(i)+1, 0, 3)
		if len(records) != 1 || !bytes.Equal(records[0]["data"].([]byte), pattern(n, i)) || len(msg.Data) != want {
			t.Fatalf("a reply of %d bytes (max_payload %d, predicted %d) did not carry the record", len(msg.Data), smallPayload, want)
		}
	}
}

func TestReplayDeliversAMessageOfExactlyMaxPayloadAndMarksOneByteMore413(t *testing.T) {
	t.Parallel()
	e := startSmallPayload(t)
	const subject = "replay.edge"
	// A replayed message without headers of its own carries
	// "NATS/1.0\r\n", the three Voik-* lines and "\r\n".
	headerBytes := func(offset int, ts int64) int {
		return len("NATS/1.0\r\n") +
			len("Voik-Subject: "+subject+"\r\n") +
			len("Voik-Offset: "+strconv.Itoa(offset)+"\r\n") +
			len("Voik-Timestamp: "+strconv.FormatInt(ts, 10)+"\r\n") + len("\r\n")
	}
	tsDigits := len(strconv.FormatInt(time.Now().UnixNano(), 10))
	exact := smallPayload - headerBytes(0, 0) - (tsDigits - 1)
	e.publish(subject, nil, pattern(exact, 0))   // offset 0: exactly max_payload once replayed
	e.publish(subject, nil, pattern(exact, 1))   // offset 1: the same
	e.publish(subject, nil, pattern(exact+1, 2)) // offset 2: one byte over
	e.flush()
	e.waitForEnd(subject, 3)
	c := e.collectReplay("_INBOX.replay.edge")
	wantReplayReply(t, e.call("REPLAY."+subject, map[string]any{"deliver": "_INBOX.replay.edge"}), subject, "_INBOX.replay.edge", 0, 3)
	records, final := c.until()
	if len(records) != 3 {
		t.Fatalf("%d messages", len(records))
	}
	for i := 0; i < 2; i++ {
		if !bytes.Equal(records[i].Data, pattern(exact, i)) || records[i].Header.Get(messages.HeaderStatus) != "" {
			t.Fatalf("record %d of exactly max_payload came as %d bytes, headers %v", i, len(records[i].Data), records[i].Header)
		}
	}
	if len(records[2].Data) != 0 || records[2].Header.Get(messages.HeaderStatus) != "413" || records[2].Header.Get(messages.HeaderOffset) != "2" {
		t.Fatalf("record 2, one byte over, came as %d bytes, headers %v", len(records[2].Data), records[2].Header)
	}
	wantEndMarker(t, final, messages.StatusEnd, 3)
}

// TestErrorsAboutALongSubjectFitUnderMaxPayload: an error reply names the
// subject cut short, so that under a small max_payload a 413 or a 404
// about a long subject is still that error, not a 500 for its own size.
func TestErrorsAboutALongSubjectFitUnderMaxPayload(t *testing.T) {
	t.Parallel()
	e := startWith(t, []harness.NATSOption{harness.WithMaxPayload(2048)}, nil)
	long := "M." + strings.Repeat("y", 1960)
	e.appendAcked(long, nil, nil) // its FETCH reply would be 2,0xx bytes: 413
	desc := wantError(t, "FETCH of a record whose reply cannot fit", e.call("FETCH."+long, map[string]any{"offset": 0}), 413)
	descriptionSays(t, desc, "M.yyy")
	wantError(t, "INFO of a long subject never stored", e.call("INFO.N."+strings.Repeat("z", 1990), nil), 404)
}
