package client

import (
	"github.com/voik/voik/messages"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestFetchReplyFastDecodeMatchesMsgpack: the reflection-free decoder of
// FETCH replies reads what the builder writes exactly as the msgpack
// library does, for records with and without headers, empty and large
// data, and every integer width; and it declines what it does not know
// (an unknown key, a map of string data) so the general decoder takes it.
func TestFetchReplyFastDecodeMatchesMsgpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1}
	for round := 0; round < 300; round++ {
		var b messages.FetchReplyBuilder
		count := rng.IntN(40)
		if round%50 == 0 {
			count = 70000 >> (round / 50) // array headers of every width
		}
		base := offsets[rng.IntN(len(offsets))] &^ (1<<17 - 1)
		for i := 0; i < count; i++ {
			var headers map[string][]string
			if rng.IntN(3) == 0 {
				headers = map[string][]string{"K": {"v"}, strings.Repeat("h", rng.IntN(40)): {"", strings.Repeat("x", rng.IntN(300))}}
			}
			size := rng.IntN(3) * rng.IntN(70000) / 2 // bin of every width
			if count > 100 {
				size = rng.IntN(4) // many records: keep them small
			}
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			ts := int64(rng.Uint64())
			if rng.IntN(4) == 0 {
				ts = -int64(rng.IntN(1 << 20))
			}
			b.Add(base+uint64(i), ts, headers, data)
		}
		subject := strings.Repeat("s", rng.IntN(300)+1)
		body := b.Finish(subject, base+uint64(count), offsets[rng.IntN(len(offsets))], offsets[rng.IntN(len(offsets))])

		var want, got messages.FetchReply
		if err := msgpack.Unmarshal(body, &want); err != nil {
			t.Fatal(err)
		}
		if err := decodeFetchReply(body, &got); err != nil {
			t.Fatalf("round %d: fast decoder declined the builder's own reply: %v", round, err)
		}
		for i := range want.Records { // msgpack decodes empty bin as an empty slice too; compare contents
			if len(want.Records[i].Data) == 0 && len(got.Records[i].Data) == 0 {
				want.Records[i].Data, got.Records[i].Data = nil, nil
			}
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("round %d: fast decoder disagrees with msgpack", round)
		}
	}

	var general messages.FetchReply
	for name, body := range map[string]any{
		"unknown key":  map[string]any{"subject": "a", "records": []any{}, "extra": 1},
		"string data":  map[string]any{"records": []any{map[string]any{"offset": 1, "data": "text"}}},
		"record field": map[string]any{"records": []any{map[string]any{"offset": 1, "data": []byte("x"), "more": true}}},
	} {
		encoded, err := msgpack.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeFetchReply(encoded, &general); err != errNotFast {
			t.Errorf("%s: fast decoder %v, want errNotFast", name, err)
		}
		general = messages.FetchReply{}
		if err := decodeReply(encoded, &general); err != nil {
			t.Errorf("%s: the general decoder fails after the fast one declined: %v", name, err)
		}
	}
}

// FuzzDecodeFetchReply: the fast decoder never panics, and when it accepts
// a body msgpack also accepts, the two agree on every field.
func FuzzDecodeFetchReply(f *testing.F) {
	var b messages.FetchReplyBuilder
	b.Add(1, 2, map[string][]string{"K": {"v"}}, []byte("data"))
	f.Add(b.Finish("orders.eu", 2, 0, 2))
	f.Add([]byte{0x85, 0xa7, 's', 'u', 'b', 'j', 'e', 'c', 't', 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		var got messages.FetchReply
		if decodeFetchReply(body, &got) != nil {
			return
		}
		var want messages.FetchReply
		if err := msgpack.Unmarshal(body, &want); err != nil {
			return // the fast path is stricter in places and laxer in none that matter
		}
		if len(want.Records) == len(got.Records) {
			for i := range want.Records { // empty is empty, however it was spelled
				if len(want.Records[i].Data) == 0 && len(got.Records[i].Data) == 0 {
					want.Records[i].Data, got.Records[i].Data = nil, nil
				}
				if len(want.Records[i].Headers) == 0 && len(got.Records[i].Headers) == 0 {
					want.Records[i].Headers, got.Records[i].Headers = nil, nil
				}
			}
			if len(want.Records) == 0 {
				want.Records, got.Records = nil, nil
			}
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("fast %+v, msgpack %+v", got, want)
		}
	})
}
