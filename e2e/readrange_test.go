package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/voik/voik/client"
	"github.com/voik/voik/messages"
)

// sizedRecord is record i of TestReadRange...: its size varies from 10 to
// about 3,000 bytes, so that pages limited by max_bytes hold different
// numbers of records and pipelined pages come back short.
func sizedRecord(i int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, 10+(i*7919)%3000)
}

// TestReadRangePipelinesPagesAndLosesNothing reads ranges with several
// FETCHes in flight and max_bytes small enough that most pages come back
// short of the count asked: every record arrives once, in order, and the
// range ends exactly where asked.
func TestReadRangePipelinesPagesAndLosesNothing(t *testing.T) {
	t.Parallel()
	e := start(t)
	const n = 3000
	for i := 0; i < n; i++ {
		e.publish("ranged", nil, sizedRecord(i))
	}
	e.flush()
	e.waitForEnd("ranged", n)
	for _, c := range []struct {
		from, to uint64
		opts     client.ReadOptions
	}{
		{0, n, client.ReadOptions{Depth: 3, MaxBytes: 20_000}},
		{517, 1703, client.ReadOptions{Depth: 8, MaxBytes: 7_000}},
		{0, n, client.ReadOptions{}},
		{0, n, client.ReadOptions{MaxBytes: 5_000}}, // the default depth: sixteen small pages in flight
		{n - 1, n, client.ReadOptions{}},
		{n, n, client.ReadOptions{}},
	} {
		name := fmt.Sprintf("[%d,%d) depth %d max_bytes %d", c.from, c.to, c.opts.Depth, c.opts.MaxBytes)
		next, pages := c.from, 0
		err := e.api.ReadRange(t.Context(), "ranged", c.from, c.to, c.opts, func(records []messages.Record) error {
			pages++
			for _, r := range records {
				if r.Offset != next || !bytes.Equal(r.Data, sizedRecord(int(next))) {
					return fmt.Errorf("got offset %d (%d bytes), want %d", r.Offset, len(r.Data), next)
				}
				next++
			}
			return nil
		})
		if err != nil || next != c.to {
			t.Fatalf("%s: read up to %d, %v", name, next, err)
		}
		t.Logf("%s: %d pages", name, pages)
	}
}

// A range past the end offset, and an error from the callback, end the
// read with an error that says so.
func TestReadRangeErrors(t *testing.T) {
	t.Parallel()
	e := start(t)
	for i := 0; i < 50; i++ {
		e.publish("short", nil, sizedRecord(i))
	}
	e.flush()
	e.waitForEnd("short", 50)
	err := e.api.ReadRange(t.Context(), "short", 0, 80, client.ReadOptions{MaxBytes: 10_000}, func([]messages.Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "no record at offset 50") {
		t.Fatalf("reading past the end: %v", err)
	}
	stop := errors.New("enough")
	calls := 0
	err = e.api.ReadRange(t.Context(), "short", 0, 50, client.ReadOptions{MaxBytes: 5_000}, func([]messages.Record) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("callback error: %v after %d calls", err, calls)
	}
}
