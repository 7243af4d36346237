package harness

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSClusterKeyValue: three servers form a JetStream cluster, an R3
// key-value bucket works on it, keeps its data and takes writes when the
// server leading its stream stops, and that server comes back on the same
// store.
func TestNATSClusterKeyValue(t *testing.T) {
	start := time.Now()
	c := StartNATSCluster(t, 3)
	t.Logf("cluster formed in %v, meta leader n%d", time.Since(start).Round(time.Millisecond), c.MetaLeader())
	if c.Size() != 3 || len(c.ClientURLs()) != 3 {
		t.Fatalf("size %d, urls %v", c.Size(), c.ClientURLs())
	}

	nc := Connect(t, c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "CLUSTER_TEST", Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 bucket: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
		t.Fatalf("bucket has %d replicas", st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas)
	}
	rev, err := kv.Create(ctx, "k", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}

	leader := c.WaitStreamLeader(GlobalAccount, "KV_CLUSTER_TEST")
	stopped := time.Now()
	c.Stop(leader)
	if c.Server(leader) != nil || c.StreamLeader(GlobalAccount, "KV_CLUSTER_TEST") == leader {
		t.Fatalf("server %d still running or leading after Stop", leader)
	}
	next := c.WaitStreamLeader(GlobalAccount, "KV_CLUSTER_TEST")
	t.Logf("stopped stream leader n%d; n%d leads after %v", leader, next, time.Since(stopped).Round(time.Millisecond))
	if next == leader {
		t.Fatalf("stopped server %d still leads", leader)
	}

	// The connection may have been on the stopped server: the first
	// request after the stop may fail while it reconnects.
	var rev2 uint64
	Eventually(t, 15*time.Second, "an update after the stream leader stopped", func() bool {
		uctx, ucancel := context.WithTimeout(ctx, time.Second)
		defer ucancel()
		rev2, err = kv.Update(uctx, "k", []byte("two"), rev)
		return err == nil
	})
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "two" || e.Revision() != rev2 || rev2 <= rev {
		t.Fatalf("after the stop: %v %v (rev %d, was %d)", e, err, rev2, rev)
	}
	if _, err := kv.Update(ctx, "k", []byte("stale"), rev); err == nil {
		t.Fatal("compare-and-set on a stale revision succeeded")
	}

	c.Restart(leader)
	if c.Server(leader) == nil {
		t.Fatal("restarted server not running")
	}
	Eventually(t, 15*time.Second, "the restarted server to hold the bucket", func() bool {
		return c.Server(leader).JetStreamIsStreamCurrent(GlobalAccount, "KV_CLUSTER_TEST")
	})
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}
