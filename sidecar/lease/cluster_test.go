package lease_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/sidecar/lease"
)

// TestLeaseCluster runs two electors on a real three-server JetStream
// cluster: the lease is taken, the server leading the KV stream is stopped
// and the lease survives or moves, then the holder stops and the other
// takes over. At no instant do both hold it (same process, same monotonic
// clock), and every leadership has a higher epoch than the one before.
func TestLeaseCluster(t *testing.T) {
	start := time.Now()
	c := harness.StartNATSCluster(t, 3)
	const leaseDur = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Member i connects to server i first, and to the others after.
	connect := func(i int) *nats.Conn {
		urls := c.ClientURLs()
		urls = append(urls[i:], urls[:i]...)
		return harness.Connect(t, strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
			nats.ReconnectWait(20*time.Millisecond))
	}

	var mu sync.Mutex
	var took []lease.Change // every change to leader, from both, in order
	type member struct {
		e    *lease.Elector
		stop context.CancelFunc
		done chan struct{}
	}
	newMember := func(i int, name string, bootstrap bool) *member {
		nc := connect(i)
		kv, err := lease.NewKV(ctx, nc, "g1", 0)
		if err != nil {
			t.Fatal(err)
		}
		e, err := lease.New(kv, lease.Config{
			Self: lease.Member{Instance: name, DataDirID: "dir-" + name}, Lease: leaseDur, Bootstrap: bootstrap,
			OnChange: func(ch lease.Change) {
				t.Logf("%s: %v leader=%q epoch=%d: %s", name, ch.Role, ch.Leader, ch.Epoch, ch.Reason)
				if ch.Role == lease.Leader {
					mu.Lock()
					took = append(took, ch)
					mu.Unlock()
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		m := &member{e: e, stop: stop, done: make(chan struct{})}
		go func() { defer close(m.done); e.Run(rctx) }()
		t.Cleanup(func() { stop(); <-m.done })
		return m
	}

	a := newMember(0, "a", true)
	harness.Eventually(t, 10*time.Second, "a to create the group and lead", func() bool { _, ok := a.e.Valid(); return ok })
	b := newMember(1, "b", false)
	if err := a.e.SetInSync(ctx, []lease.Member{{Instance: "a", DataDirID: "dir-a"}, {Instance: "b", DataDirID: "dir-b"}}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "b to see the in-sync set", func() bool { return len(b.e.Observed().State.InSync) == 2 })

	js, err := jetstream.New(harness.Connect(t, c.URL()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_"+lease.Bucket)
	if err != nil || stream.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("bucket stream: %v %v", stream, err)
	}

	// Both holding at once, sampled every millisecond.
	var both atomic.Int64
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			_, okA := a.e.Valid()
			_, okB := b.e.Valid()
			if okA && okB {
				both.Add(1)
			}
			time.Sleep(time.Millisecond)
		}
	}()

	holder := func() (*member, string, uint64) {
		if ep, ok := a.e.Valid(); ok {
			return a, "a", ep
		}
		if ep, ok := b.e.Valid(); ok {
			return b, "b", ep
		}
		return nil, "", 0
	}
	_, name1, epoch1 := holder()
	rev1 := a.e.Observed().Revision
	leader := c.WaitStreamLeader(harness.GlobalAccount, "KV_"+lease.Bucket)
	stopped := time.Now()
	c.Stop(leader)
	t.Logf("stopped n%d, the KV stream's leader; %s held epoch %d", leader, name1, epoch1)

	// Held again, with a write after the stop: renewed or taken over.
	var name2 string
	var epoch2 uint64
	harness.Eventually(t, 10*time.Second, "the lease renewed or taken after the stop", func() bool {
		var m *member
		m, name2, epoch2 = holder()
		return m != nil && m.e.Observed().Revision > rev1
	})
	t.Logf("after %v %s holds epoch %d", time.Since(stopped).Round(time.Millisecond), name2, epoch2)
	if epoch2 < epoch1 || name2 != name1 && epoch2 == epoch1 {
		t.Fatalf("epoch %d (%s) after %d (%s)", epoch2, name2, epoch1, name1)
	}

	// The holder stops (a crash, for the group): the other takes over
	// after the lease, in a higher epoch.
	m, _, _ := holder()
	other := a
	if m == a {
		other = b
	}
	m.stop()
	<-m.done
	moved := time.Now()
	harness.Eventually(t, 4*leaseDur, "the other member to take over", func() bool { _, ok := other.e.Valid(); return ok })
	epoch3, _ := other.e.Valid()
	t.Logf("takeover after %v in epoch %d", time.Since(moved).Round(time.Millisecond), epoch3)
	if epoch3 <= epoch2 {
		t.Fatalf("epoch %d after %d", epoch3, epoch2)
	}

	stopSampling()
	<-sampled
	if n := both.Load(); n > 0 {
		t.Fatalf("both held the lead in %d samples", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(took); i++ {
		if took[i].Epoch <= took[i-1].Epoch {
			t.Fatalf("leaderships not in increasing epochs: %+v", took)
		}
	}
	t.Logf("%d leaderships, total %v", len(took), time.Since(start).Round(time.Millisecond))
}
