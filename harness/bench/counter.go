package bench

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// counterEnv, set in the environment of a benchmark binary, makes it a
// counting subscriber instead (see RunChildIfAsked): "URL SUBJECT N
// STALL_NS". voik runs as a child process, so the ceiling it is compared
// with is a subscriber in a child process too, with the same hops and
// the same competition for CPU with the NATS server and the publisher.
const counterEnv = "VOIKBENCH_COUNTER"

// runCounter subscribes, says "ready", counts until N messages came or
// none came for STALL, prints "COUNT UNIX_NANOS" (when it reached the
// count it stopped at), and waits for its stdin to close.
func runCounter(spec string) error {
	fields := strings.Fields(spec)
	if len(fields) != 4 {
		return fmt.Errorf("%s=%q: want URL SUBJECT N STALL_NS", counterEnv, spec)
	}
	n, err1 := strconv.Atoi(fields[2])
	stall, err2 := strconv.ParseInt(fields[3], 10, 64)
	if err1 != nil || err2 != nil || n < 1 || stall < 1 {
		return fmt.Errorf("%s=%q: bad count or stall", counterEnv, spec)
	}
	nc, err := nats.Connect(fields[0], nats.Name("voikbench counter"))
	if err != nil {
		return err
	}
	defer nc.Close()
	var count, lastAt atomic.Int64
	err = subscribeReady(nc, fields[1], func(*nats.Msg) {
		if count.Add(1) == int64(n) {
			lastAt.Store(time.Now().UnixNano())
		}
	})
	if err != nil {
		return err
	}
	got, at := waitCount(func() int { return int(count.Load()) }, n, time.Duration(stall), time.Millisecond)
	if got >= n {
		at = time.Unix(0, lastAt.Load())
	}
	fmt.Println(got, at.UnixNano())
	waitForStdinToClose()
	return nil
}

// counterProcess is a counting subscriber running as a child.
type counterProcess struct{ child }

// startCounter starts a counting subscriber on subject and returns once it
// is subscribed.
func startCounter(e *Env, url, subject string, n int, stall time.Duration) *counterProcess {
	return &counterProcess{startChild(e, "counting subscriber", fmt.Sprintf("%s=%s %s %d %d", counterEnv, url, subject, n, stall.Nanoseconds()))}
}

// result waits for the count and when it was reached.
func (c *counterProcess) result(e *Env) (int, time.Time) {
	if !c.out.Scan() {
		e.Fatalf("counting subscriber ended without a count: %v", c.out.Err())
	}
	var got int
	var at int64
	if _, err := fmt.Sscan(c.out.Text(), &got, &at); err != nil {
		e.Fatalf("counting subscriber said %q: %v", c.out.Text(), err)
	}
	return got, time.Unix(0, at)
}
