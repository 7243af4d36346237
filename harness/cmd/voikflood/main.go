// Command voikflood is an adversarial reader for voik's load tests: it
// sends one request open loop, at a fixed rate, for a fixed time, and
// prints what came back. It runs as a process of its own so that a test
// built with the race detector does not make the flood itself the
// bottleneck (see harness.StartFlood).
//
// While it runs it prints "replies N" every 100 ms; at the end one line of
// JSON, a harness.FloodResult.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/harness"
)

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server")
	subject := flag.String("subject", "", "request subject, e.g. VOIK.API.FETCH.orders")
	body := flag.String("body", "", "request body, base64")
	rate := flag.Int("rate", 3000, "requests a second")
	duration := flag.Duration("duration", 5*time.Second, "how long it sends")
	linger := flag.Duration("linger", 10*time.Second, "how long it waits for replies after")
	flag.Parse()
	if err := run(*url, *subject, *body, *rate, *duration, *linger); err != nil {
		fmt.Fprintln(os.Stderr, "voikflood:", err)
		os.Exit(1)
	}
}

func run(url, subject, body64 string, rate int, duration, linger time.Duration) error {
	body, err := base64.StdEncoding.DecodeString(body64)
	if err != nil {
		return fmt.Errorf("-body: %w", err)
	}
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	flood := &harness.ReadFlood{Subject: subject, Body: body, Rate: rate, Duration: duration}
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Printf("replies %d\n", flood.Replies())
			}
		}
	}()
	result, err := flood.Run(context.Background(), nc, linger)
	close(done)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(result)
}
