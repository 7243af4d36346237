package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/voik/voik/harness"
)

// TestReplayToASlowSubscriberIsPacedNotCutOff: a subscriber that reads
// far slower than voik replays gets the whole history and the end marker.
// The server holds 16 MiB for it (max_pending); the history is 32 MB, so
// a replay that does not wait for the subscriber gets it cut off as a slow
// consumer half way.
func TestReplayToASlowSubscriberIsPacedNotCutOff(t *testing.T) {
	t.Parallel()
	const maxPending = 16 << 20
	e := startWith(t, []harness.NATSOption{harness.WithOptions(func(o *server.Options) { o.MaxPending = maxPending })}, nil)
	const n = 32000
	record := bytes.Repeat([]byte("r"), 1000)
	for i := 0; i < n; i++ {
		e.publish("slow.history", nil, record)
	}
	e.flush()
	e.waitForEnd("slow.history", n)

	// A raw NATS client, so that the server sees how slowly it reads
	// (nats.go would read everything into its own memory at once).
	u, err := url.Parse(e.server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 16<<10)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("server greeting %q: %v", line, err)
	}
	if _, err := io.WriteString(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\nSUB _INBOX.slow.replay 1\r\nPING\r\n"); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "PONG\r\n" {
			break // subscribed
		}
	}

	wantReplayReply(t, e.call("REPLAY.slow.history", map[string]any{"offset": 0, "deliver": "_INBOX.slow.replay"}), "slow.history", "_INBOX.slow.replay", 0, n)

	// Read about 10 MB/s, 25 times slower than voik replays here, until
	// the end marker, within a bound.
	deadline := time.Now().Add(60 * time.Second)
	var seen, tail []byte
	chunk := make([]byte, 16<<10)
	read := 0
	for time.Now().Before(deadline) {
		conn.SetReadDeadline(deadline)
		k, err := r.Read(chunk)
		if err != nil {
			t.Fatalf("after %d bytes the connection ended: %v (cut off as a slow consumer?)", read, err)
		}
		read += k
		seen = append(tail, chunk[:k]...)
		if bytes.Contains(seen, []byte("Slow Consumer")) {
			t.Fatalf("after %d bytes the server cut the subscriber off: %q", read, seen)
		}
		if bytes.Contains(seen, []byte("Voik-Status: end")) {
			if read < n*1000 {
				t.Fatalf("end marker after %d bytes, less than the %d of the records", read, n*1000)
			}
			return
		}
		tail = append(tail[:0], seen[max(0, len(seen)-64):]...)
		time.Sleep(1500 * time.Microsecond) // the subscriber's pace
	}
	t.Fatalf("no end marker within the bound; %d bytes read", read)
}
