package client

import "testing"

// ReadRange keeps about ReadAheadBytes of replies in flight by default,
// whatever the server's max_payload: more pages when they are small, fewer
// when they are large, never fewer than two or more than sixteen.
func TestReadRangeDefaultDepthBoundsTheBytesInFlight(t *testing.T) {
	for _, c := range []struct {
		maxBytes   uint64
		maxPayload int64
		want       int
	}{
		{0, 1 << 20, 8},          // NATS's default max_payload
		{0, 4 << 20, 2},          // large pages: 8 MiB is two of them
		{0, 2 << 20, 4},          //
		{0, 64 << 20, 2},         // larger than the budget: still two
		{0, 64 << 10, 16},        // small pages: no more than sixteen
		{256 << 10, 8 << 20, 16}, // max_bytes makes the pages smaller
		{2 << 20, 8 << 20, 4},    //
		{16 << 20, 1 << 20, 8},   // max_bytes above max_payload: the payload bounds a page
		{0, 0, 16},               // not connected: no max_payload known
	} {
		if got := defaultDepth(c.maxBytes, c.maxPayload); got != c.want {
			t.Errorf("defaultDepth(max_bytes %d, max_payload %d) = %d, want %d", c.maxBytes, c.maxPayload, got, c.want)
		}
	}
}
