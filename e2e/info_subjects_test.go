package e2e

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/harness"
)

func TestInfoReportsOffsetsCountsBytesTimestampsAndSegments(t *testing.T) {
	t.Parallel()
	e := start(t)
	var acks []uint64
	var stamps []int64
	headers := nats.Header{"Trace": {"abc"}, "Multi": {"1", "22"}}
	for i := 0; i < 4; i++ {
		ack := e.appendAcked("info.me", headers, []byte(strings.Repeat("d", 10*(i+1))))
		acks = append(acks, ack.Offset)
		stamps = append(stamps, ack.Timestamp)
	}
	// data 10+20+30+40; headers per record: Trace abc, Multi 1 22, Voik-Ack 1.
	perRecord := len("Trace") + len("abc") + len("Multi") + len("1") + len("22") + len("Voik-Ack") + len("1")
	wantBytes := uint64(100 + 4*perRecord)

	reply := e.call("INFO.info.me", nil)
	wantSuccess(t, "INFO", reply)
	wantKeys(t, "INFO reply", reply, "subject", "first_offset", "end_offset", "messages", "bytes", "first_ts", "last_ts", "segments")
	got := map[string]any{
		"subject":      reply["subject"],
		"first_offset": unum(t, reply["first_offset"]),
		"end_offset":   unum(t, reply["end_offset"]),
		"messages":     unum(t, reply["messages"]),
		"bytes":        unum(t, reply["bytes"]),
		"first_ts":     num(t, reply["first_ts"]),
		"last_ts":      num(t, reply["last_ts"]),
		"segments":     unum(t, reply["segments"]),
	}
	want := map[string]any{
		"subject":      "info.me",
		"first_offset": uint64(0),
		"end_offset":   uint64(4),
		"messages":     uint64(4),
		"bytes":        wantBytes,
		"first_ts":     stamps[0],
		"last_ts":      stamps[3],
		"segments":     uint64(1),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("INFO\n got %v\nwant %v", got, want)
	}
}

func TestInfoOfUnknownSubjectIs404(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.appendAcked("known", nil, nil)
	desc := wantError(t, "INFO of an unknown subject", e.call("INFO.unknown.subject", nil), 404)
	descriptionSays(t, desc, "unknown.subject")
	// A log that exists under another name is not this one.
	wantError(t, "INFO of a prefix of a stored subject", e.call("INFO.kno", nil), 404)
}

func TestInfoCountsSegmentsOfALogThatRotated(t *testing.T) {
	t.Parallel()
	e := startWith(t, nil, func(c *configT) { c.SegmentSize = 64 << 10 })
	for i := 0; i < 200; i++ {
		e.publish("rotating", nil, make([]byte, 1000))
	}
	e.flush()
	e.waitForEnd("rotating", 200)
	reply := e.call("INFO.rotating", nil)
	if segments := unum(t, reply["segments"]); segments < 3 {
		t.Fatalf("200 KB in 64 KiB segments: %d segments", segments)
	}
	if got := unum(t, reply["bytes"]); got != 200*1000 {
		t.Fatalf("bytes %d, want %d", got, 200*1000)
	}
}

func TestSubjectsFiltersSortsBytewiseAndPages(t *testing.T) {
	t.Parallel()
	e := start(t)
	stored := []string{"a.1", "a.10", "a.2", "A.1", "a.b.c", "b.1", "a_1", "z", "é.1"}
	for _, s := range stored {
		e.appendAcked(s, nil, []byte(s))
	}
	sorted := append([]string(nil), stored...)
	sort.Strings(sorted) // bytewise: "A.1" < "a.1" < "a.10" < "a.2" < ... < "é.1"

	type page struct {
		subjects []string
		total    uint64
	}
	subjectsCall := func(body any) page {
		t.Helper()
		reply := e.call("SUBJECTS", body)
		wantSuccess(t, "SUBJECTS", reply)
		wantKeys(t, "SUBJECTS reply", reply, "subjects", "total")
		raw, ok := reply["subjects"].([]any)
		if !ok {
			t.Fatalf("subjects is %T, want an array", reply["subjects"])
		}
		p := page{subjects: []string{}, total: unum(t, reply["total"])}
		for _, s := range raw {
			str, ok := s.(string)
			if !ok {
				t.Fatalf("subject %#v is not a string", s)
			}
			p.subjects = append(p.subjects, str)
		}
		return p
	}
	cases := []struct {
		name string
		body any
		want page
	}{
		{"empty body: every subject", nil, page{sorted, uint64(len(sorted))}},
		{"nil body", []byte{0xc0}, page{sorted, uint64(len(sorted))}},
		{"filter > ", map[string]any{"filter": ">"}, page{sorted, uint64(len(sorted))}},
		{"filter a.*", map[string]any{"filter": "a.*"}, page{[]string{"a.1", "a.10", "a.2"}, 3}},
		{"filter a.>", map[string]any{"filter": "a.>"}, page{[]string{"a.1", "a.10", "a.2", "a.b.c"}, 4}},
		{"filter *.1", map[string]any{"filter": "*.1"}, page{[]string{"A.1", "a.1", "b.1", "é.1"}, 4}},
		{"filter of a literal subject", map[string]any{"filter": "z"}, page{[]string{"z"}, 1}},
		{"filter matching nothing", map[string]any{"filter": "nothing.>"}, page{[]string{}, 0}},
		{"filter as bin", map[string]any{"filter": []byte("b.*")}, page{[]string{"b.1"}, 1}},
		{"empty filter is the default", map[string]any{"filter": ""}, page{sorted, uint64(len(sorted))}},
		{"limit 2", map[string]any{"limit": 2}, page{sorted[:2], uint64(len(sorted))}},
		{"offset 2 limit 3", map[string]any{"offset": 2, "limit": 3}, page{sorted[2:5], uint64(len(sorted))}},
		{"limit 0 is the default", map[string]any{"offset": 7, "limit": 0}, page{sorted[7:], uint64(len(sorted))}},
		{"offset past the end", map[string]any{"offset": 100}, page{[]string{}, uint64(len(sorted))}},
		{"filtered page", map[string]any{"filter": "a.>", "offset": 1, "limit": 2}, page{[]string{"a.10", "a.2"}, 4}},
		{"unknown keys ignored", map[string]any{"verbose": true, "limit": 1}, page{sorted[:1], uint64(len(sorted))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := subjectsCall(c.body); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestSubjectsPageIsCutShortUnderMaxPayloadAndTotalLetsTheClientGoOn(t *testing.T) {
	t.Parallel()
	const maxPayload = 8 << 10
	e := startWith(t, []harness.NATSOption{harness.WithMaxPayload(maxPayload)}, nil)
	var want []string
	for i := 0; i < 100; i++ {
		s := fmt.Sprintf("long.%03d.%s", i, strings.Repeat("x", 300))
		e.appendAcked(s, nil, nil)
		want = append(want, s)
	}
	var got []string
	pages := 0
	for offset := uint64(0); ; {
		msg, err := e.nc.Request(e.prefix()+".SUBJECTS", encode(t, map[string]any{"offset": offset}), requestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Data) > maxPayload {
			t.Fatalf("reply of %d bytes above max_payload %d", len(msg.Data), maxPayload)
		}
		reply := decodeReply(t, msg.Data)
		wantSuccess(t, "SUBJECTS", reply)
		if total := unum(t, reply["total"]); total != 100 {
			t.Fatalf("total %d, want 100", total)
		}
		page := reply["subjects"].([]any)
		for _, s := range page {
			got = append(got, s.(string))
		}
		pages++
		offset += uint64(len(page))
		if len(page) == 0 || offset >= 100 {
			break
		}
	}
	if pages < 4 {
		t.Fatalf("30 KB of subject names came in %d pages under an 8 KiB max_payload", pages)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paged subjects differ from the stored ones:\n got %d %v\nwant %d", len(got), got, len(want))
	}
}

// TestSubjectsPageHoldsASubjectThatFitsExactly: a page is cut by the size
// of the reply as encoded, not by a guess at it, so a subject that fits
// under max_payload is listed instead of an empty page no client gets past.
func TestSubjectsPageHoldsASubjectThatFitsExactly(t *testing.T) {
	t.Parallel()
	const maxPayload = 2048
	e := startWith(t, []harness.NATSOption{harness.WithMaxPayload(maxPayload)}, nil)
	long := "L." + strings.Repeat("y", 1990) // its reply is 2,021 bytes
	e.appendAcked(long, nil, nil)
	msg, err := e.nc.Request(e.prefix()+".SUBJECTS", encode(t, map[string]any{"filter": "L.*"}), requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	reply := decodeReply(t, msg.Data)
	wantSuccess(t, "SUBJECTS", reply)
	if page := reply["subjects"].([]any); len(page) != 1 || page[0] != long {
		t.Fatalf("page %d subjects, total %v: want the one subject, which fits in %d bytes", len(page), reply["total"], len(msg.Data))
	}
}
