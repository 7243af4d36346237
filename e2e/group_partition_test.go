package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// startNATSInNetns runs a three-server NATS cluster with JetStream, server
// i in namespace i, and waits until JetStream's meta group sees all three.
func startNATSInNetns(t *testing.T, ns *harness.Netns) []string {
	t.Helper()
	bin := harness.BuildNATSServer(t)
	urls := make([]string, 3)
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://%s:6222", ns.Addr(j)))
			}
		}
		dir := t.TempDir()
		conf := fmt.Sprintf(`server_name: n%d
listen: "%s:4222"
http: "%s:8222"
max_payload: 1048576
jetstream { store_dir: %q }
cluster { name: voik-netns, listen: "%s:6222", routes: [%s] }
`, i, ns.Addr(i), ns.Addr(i), filepath.Join(dir, "js"), ns.Addr(i), strings.Join(routes, ", "))
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		log, err := os.Create(filepath.Join(dir, "nats.log"))
		if err != nil {
			t.Fatal(err)
		}
		args := append(ns.Exec(i), bin, "-c", path)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
		urls[i] = fmt.Sprintf("nats://%s:4222", ns.Addr(i))
	}
	harness.Eventually(t, 60*time.Second, "a JetStream meta leader that sees three servers", func() bool {
		for i := range 3 {
			var jsz struct {
				Meta *struct {
					Leader string `json:"leader"`
					Size   int    `json:"cluster_size"`
				} `json:"meta_cluster"`
			}
			resp, err := httpClient.Get(fmt.Sprintf("http://%s:8222/jsz", ns.Addr(i)))
			if err != nil {
				return false
			}
			err = json.NewDecoder(resp.Body).Decode(&jsz)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || jsz.Meta == nil || jsz.Meta.Leader == "" || jsz.Meta.Size != 3 {
				return false
			}
		}
		return true
	})
	return urls
}

// TestGroupPartitionCutsOffTheLeader: each NATS server and its voik in a
// network namespace of their own; the leader's namespace is cut off (its
// link down: a real partition). The cut-off leader acks nothing more,
// even to a publisher beside it; the majority side elects a new leader
// and goes on acking; on healing, the old leader follows, drops what it
// never committed, and the copies converge.
func TestGroupPartitionCutsOffTheLeader(t *testing.T) {
	ns, err := harness.StartNetns(t, 3)
	if err != nil {
		t.Skipf("no network namespaces here (%v): the partition test needs root and iproute2", err)
	}
	urls := startNATSInNetns(t, ns)
	bin := harness.BuildVoik(t)
	members := make([]*harness.VoikProcess, 3)
	for i := range 3 {
		cfg := groupConfig(t, urls[i], i)
		cfg.HTTPAddr = ns.Addr(i) + ":8333"
		members[i] = harness.StartVoikProcessWrapped(t, bin, cfg, ns.Exec(i))
	}
	// Pings every half second: a server behind a cut sends no reset, and
	// only missed pings tell the client to go to another.
	nc := harness.Connect(t, strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.PingInterval(500*time.Millisecond), nats.MaxPingsOutstanding(2))
	api := client.New(nc, "VOIK.API")
	load := &ackedLoad{api: api, subject: "orders.partition", acked: map[string]messages.AckReply{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var publishers sync.WaitGroup
	for p := range 2 {
		publishers.Add(1)
		go func() { defer publishers.Done(); load.run(ctx, p, 5000) }()
	}
	harness.Eventually(t, 30*time.Second, "acks before the cut", func() bool { return load.count() >= 50 })

	old := leaderOf(members)
	if old < 0 {
		t.Fatal("no member says it leads")
	}
	before, _ := getGroup(members[old])
	// A publisher beside the leader, in its namespace: it keeps its
	// connection to the leader's server through the cut.
	beside, err := nats.Connect(urls[old], nats.SetCustomDialer(ns.Dialer(old)), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer beside.Close()
	besideLoad := &ackedLoad{api: client.New(beside, "VOIK.API"), subject: "orders.partition", acked: map[string]messages.AckReply{}}

	ns.Cut(old)
	cut := time.Now()
	publishers.Add(1)
	go func() { defer publishers.Done(); besideLoad.run(ctx, 9, 30) }()
	harness.Eventually(t, 6*groupLease+20*time.Second, "the majority side to lead in a higher epoch and ack", func() bool {
		for i, p := range members {
			if i == old {
				continue
			}
			if st, err := getGroup(p); err == nil && st.Role == "leader" && st.Epoch > before.Epoch {
				_, acked := load.firstAckAfter(cut)
				return acked
			}
		}
		return false
	})
	next, _ := load.firstAckAfter(cut)
	t.Logf("the leader cut off to the next ack on the majority side: %v", next.Sub(cut).Round(time.Millisecond))
	besideBefore := besideLoad.count()

	ns.Heal(old)
	harness.Eventually(t, 60*time.Second, "the old leader back in the group, and every member caught up", func() bool {
		st, err := getGroup(members[old])
		return err == nil && st.Epoch > before.Epoch && st.Role != "candidate" && allCaught(api, members)
	})
	cancel()
	publishers.Wait()
	if besideBefore > 0 {
		t.Errorf("%d acks reached the publisher beside the cut-off leader while it was cut off", besideBefore)
	}
	oneReplyEach(t, nc, load.subject)
	checkLog(t, api, load.subject, load, &seenRecords{seen: map[uint64]messages.Record{}}, false)
	stopAndCompare(t, members)
}
