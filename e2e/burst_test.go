package e2e

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

func TestBurstOf300000MessagesFromOnePublisherIsStoredWithoutLoss(t *testing.T) {
	// Not parallel: it is the heaviest test of the package.
	n := 300_000
	if testing.Short() {
		n = 30_000
	}
	e := start(t)
	began := time.Now()
	for i := 0; i < n; i++ {
		if err := e.nc.Publish("burst", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	e.flush()
	published := time.Since(began)
	harness.Eventually(t, 60*time.Second, "voik to store the whole burst", func() bool {
		info, err := e.api.Info(context.Background(), "burst")
		return err == nil && info.EndOffset >= uint64(n)
	})
	stored := time.Since(began)
	info, err := e.api.Info(context.Background(), "burst")
	if err != nil {
		t.Fatal(err)
	}
	if info.FirstOffset != 0 || info.EndOffset != uint64(n) || info.Messages != uint64(n) {
		t.Fatalf("INFO %+v, want end_offset %d", info, n)
	}
	// Offsets are contiguous and each holds its message, in publish order.
	next := uint64(0)
	for next < uint64(n) {
		reply := e.fetch("burst", messages.FetchRequest{Offset: &next, MaxMessages: messages.MaxMessagesCap})
		if len(reply.Records) == 0 {
			t.Fatalf("no records at %d of %d", next, n)
		}
		for _, r := range reply.Records {
			if r.Offset != next || string(r.Data) != strconv.FormatUint(next, 10) {
				t.Fatalf("offset %d holds offset %d, %q", next, r.Offset, r.Data)
			}
			next++
		}
		if reply.NextOffset != next {
			t.Fatalf("next_offset %d after offset %d", reply.NextOffset, next-1)
		}
	}
	t.Logf("%d messages: published in %v, all stored after %v, read back in %v", n, published, stored, time.Since(began)-stored)
}
