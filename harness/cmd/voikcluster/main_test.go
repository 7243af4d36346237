package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/voik/voik/harness"
)

// syncBuffer is an io.Writer that tests may read while run writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// freeRun finds n consecutive free ports on 127.0.0.1.
func freeRun(t *testing.T, n int) int {
	for range 100 {
		first := 20000 + rand.IntN(30000)
		ok := true
		for p := first; p < first+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatal("no run of free ports")
	return 0
}

type status struct {
	Role   string `json:"role"`
	Leader string `json:"leader"`
	Epoch  uint64 `json:"epoch"`
}

func groupStatus(port int) (status, error) {
	var st status
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/group", port))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// TestClusterRunsAGroupThatFailsOverAndStopsOnSignal: the local cluster
// elects one leader among three members; kill -9 of the leader's process
// gives the lead to a later epoch (and the killed member comes back); then the
// end of ctx (Ctrl-C) stops every member and server, and run returns.
func TestClusterRunsAGroupThatFailsOverAndStopsOnSignal(t *testing.T) {
	o := options{voik: harness.BuildVoik(t), dir: t.TempDir(), size: 3, group: "local", subjects: "orders.>", restart: time.Second}
	ports := freeRun(t, 9)
	o.natsPort, o.routePort, o.httpPort = ports, ports+3, ports+6
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(out.String())
		}
	})
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, out) }()

	leader := func() (int, status) {
		for i := range 3 {
			if st, err := groupStatus(o.httpPort + i); err == nil && st.Role == "leader" {
				return i, st
			}
		}
		return -1, status{}
	}
	var first status
	var firstAt int
	harness.Eventually(t, 60*time.Second, "a leader", func() bool { firstAt, first = leader(); return firstAt >= 0 })
	pids := regexp.MustCompile(`voik-` + strconv.Itoa(firstAt) + ` started, pid (\d+)`).FindStringSubmatch(out.String())
	if pids == nil {
		t.Fatalf("no pid of voik-%d in\n%s", firstAt, out.String())
	}
	pid, _ := strconv.Atoi(pids[1])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Another member, or the killed one back within its own lease.
	harness.Eventually(t, 60*time.Second, "a leader in a later epoch", func() bool {
		at, st := leader()
		return at >= 0 && st.Epoch > first.Epoch
	})
	harness.Eventually(t, 60*time.Second, "the killed member back", func() bool {
		st, err := groupStatus(o.httpPort + firstAt)
		return err == nil && (st.Role == "follower" || st.Role == "leader")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("run did not return after its context ended\n%s", out.String())
	}
	for i := range 3 {
		if _, err := groupStatus(o.httpPort + i); err == nil {
			t.Errorf("voik-%d still answers HTTP after the cluster stopped", i)
		}
	}
}
