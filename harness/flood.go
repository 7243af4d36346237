package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
)

// ReadFlood is an adversarial reader: it sends requests open loop, at a
// fixed rate whatever comes back, as a client that ignores its own
// timeouts would. Replies are counted on one wildcard inbox.
type ReadFlood struct {
	Subject  string        // the request subject, e.g. VOIK.API.FETCH.orders
	Body     []byte        // the request body
	Rate     int           // requests a second
	Duration time.Duration // how long it sends

	sent, replies atomic.Int64
}

// Sent is how many requests the flood has sent so far.
func (f *ReadFlood) Sent() int64 { return f.sent.Load() }

// Replies is how many replies the flood has had so far.
func (f *ReadFlood) Replies() int64 { return f.replies.Load() }

// FloodResult is what a flood sent and got back.
type FloodResult struct {
	Sent       int   // requests published
	Unsent     int   // requests not published while the flood's connection was down
	Replies    int64 // replies received
	Overloaded int64 // of those, 503 error replies
	OtherError int64 // of those, other error replies
	ReplyBytes int64 // bytes of all replies
}

// floodTick is how often the flood publishes its next share of requests.
const floodTick = 10 * time.Millisecond

// Run floods over nc until Duration has passed or ctx ends, then waits up
// to linger for the replies still coming, and returns the counts.
func (f *ReadFlood) Run(ctx context.Context, nc *nats.Conn, linger time.Duration) (FloodResult, error) {
	var result FloodResult
	var overloaded, otherError, replyBytes atomic.Int64
	replies := &f.replies
	inbox := nats.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", func(msg *nats.Msg) {
		replies.Add(1)
		replyBytes.Add(int64(len(msg.Data)))
		// An error reply is a small map with one key, "error"; a page is
		// not decoded.
		if len(msg.Data) < 512 {
			var reply struct {
				Error *struct {
					Code int `msgpack:"code"`
				} `msgpack:"error"`
			}
			if msgpack.Unmarshal(msg.Data, &reply) == nil && reply.Error != nil {
				if reply.Error.Code == 503 {
					overloaded.Add(1)
				} else {
					otherError.Add(1)
				}
			}
		}
	})
	if err != nil {
		return result, fmt.Errorf("flood: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	// Replies must not be dropped by this client: it counts them.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return result, err
	}
	perTick := max(1, f.Rate*int(floodTick)/int(time.Second))
	ticker := time.NewTicker(floodTick)
	defer ticker.Stop()
	deadline := time.NewTimer(f.Duration)
	defer deadline.Stop()
send:
	for {
		for range perTick {
			err := nc.PublishRequest(f.Subject, fmt.Sprintf("%s.%d", inbox, result.Sent), f.Body)
			switch {
			case errors.Is(err, nats.ErrReconnectBufExceeded):
				// The server cut the flooder (a slow consumer of its own
				// replies) and nats.go is reconnecting: an adversary goes on.
				result.Unsent++
				continue
			case err != nil:
				return result, fmt.Errorf("flood: publish: %w", err)
			}
			result.Sent++
			f.sent.Add(1)
		}
		select {
		case <-ticker.C:
		case <-deadline.C:
			break send
		case <-ctx.Done():
			break send
		}
	}
	nc.Flush()
	settle := time.NewTimer(linger)
	defer settle.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for replies.Load() < int64(result.Sent) {
		select {
		case <-settle.C:
			return result.with(replies, &overloaded, &otherError, &replyBytes), nil
		case <-ctx.Done():
			return result.with(replies, &overloaded, &otherError, &replyBytes), nil
		case <-poll.C:
		}
	}
	return result.with(replies, &overloaded, &otherError, &replyBytes), nil
}

func (r FloodResult) with(replies, overloaded, otherError, replyBytes *atomic.Int64) FloodResult {
	r.Replies, r.Overloaded, r.OtherError, r.ReplyBytes = replies.Load(), overloaded.Load(), otherError.Load(), replyBytes.Load()
	return r
}

// FloodProcess is a ReadFlood run by the voikflood command, a process of
// its own.
type FloodProcess struct {
	replies atomic.Int64
	done    chan struct{}
	result  FloodResult
	err     error
}

// StartFlood builds voikflood and runs f against the NATS server at url.
func StartFlood(tb TB, url string, f *ReadFlood) *FloodProcess {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "voikflood")
	if out, err := exec.Command(goTool(), "build", "-o", bin, "github.com/voik/voik/harness/cmd/voikflood").CombinedOutput(); err != nil {
		tb.Fatalf("go build voikflood: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-url", url, "-subject", f.Subject, "-body", base64.StdEncoding.EncodeToString(f.Body),
		"-rate", strconv.Itoa(f.Rate), "-duration", f.Duration.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill() })
	p := &FloodProcess{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		lines := bufio.NewScanner(stdout)
		var last string
		for lines.Scan() {
			last = lines.Text()
			var n int64
			if _, err := fmt.Sscanf(last, "replies %d", &n); err == nil {
				p.replies.Store(n)
			}
		}
		if err := cmd.Wait(); err != nil {
			p.err = fmt.Errorf("voikflood: %v: %s", err, stderr.String())
			return
		}
		p.err = json.Unmarshal([]byte(last), &p.result)
	}()
	return p
}

// Replies is how many replies the flood had at its last report.
func (p *FloodProcess) Replies() int64 { return p.replies.Load() }

// Wait waits for the flood to end and returns what it counted.
func (p *FloodProcess) Wait() (FloodResult, error) {
	<-p.done
	return p.result, p.err
}
