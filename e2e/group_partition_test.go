package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// netnsCluster is a three-server NATS cluster with JetStream, server i a
// real nats-server process in namespace i, that a test can kill -9 and
// start again on the same store.
type netnsCluster struct {
	t     *testing.T
	ns    *harness.Netns
	bin   string
	confs []string
	logs  []*os.File
	cmds  []*exec.Cmd
	urls  []string
}

// startNATSInNetns starts the cluster and waits until JetStream's meta
// group sees all three servers.
func startNATSInNetns(t *testing.T, ns *harness.Netns) *netnsCluster {
	t.Helper()
	c := &netnsCluster{t: t, ns: ns, bin: harness.BuildNATSServer(t), cmds: make([]*exec.Cmd, 3)}
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
		t.Cleanup(func() { log.Close() })
		c.confs, c.logs = append(c.confs, path), append(c.logs, log)
		c.urls = append(c.urls, fmt.Sprintf("nats://%s:4222", ns.Addr(i)))
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.cmds {
			c.kill(i)
		}
	})
	c.waitJetStream()
	return c
}

func (c *netnsCluster) start(i int) {
	args := append(c.ns.Exec(i), c.bin, "-c", c.confs[i])
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = c.logs[i], c.logs[i]
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmds[i] = cmd
}

// kill is kill -9 of server i.
func (c *netnsCluster) kill(i int) {
	if cmd := c.cmds[i]; cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
		c.cmds[i] = nil
	}
}

// waitJetStream waits until a meta leader sees the three servers.
func (c *netnsCluster) waitJetStream() {
	c.t.Helper()
	harness.Eventually(c.t, 60*time.Second, "a JetStream meta leader that sees three servers", func() bool {
		for i := range 3 {
			var jsz struct {
				Meta *struct {
					Leader string `json:"leader"`
					Size   int    `json:"cluster_size"`
				} `json:"meta_cluster"`
			}
			resp, err := httpClient.Get(fmt.Sprintf("http://%s:8222/jsz", c.ns.Addr(i)))
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
}

// streamLeader is the index of the server leading stream, or -1.
func streamLeader(nc *nats.Conn, stream string) int {
	msg, err := nc.Request("$JS.API.STREAM.INFO."+stream, nil, 2*time.Second)
	if err != nil {
		return -1
	}
	var info struct {
		Cluster *struct {
			Leader string `json:"leader"`
		} `json:"cluster"`
	}
	if json.Unmarshal(msg.Data, &info) != nil || info.Cluster == nil {
		return -1
	}
	var i int
	if _, err := fmt.Sscanf(info.Cluster.Leader, "n%d", &i); err != nil {
		return -1
	}
	return i
}

// serverOfCapture is the index of the server that member's capture
// connection is on (a member reconnects elsewhere when its own server
// goes), or -1.
func (c *netnsCluster) serverOfCapture(member int) int {
	for i := range 3 {
		var connz struct {
			Connections []struct {
				IP   string `json:"ip"`
				Name string `json:"name"`
			} `json:"connections"`
		}
		resp, err := httpClient.Get(fmt.Sprintf("http://%s:8222/connz", c.ns.Addr(i)))
		if err != nil {
			continue
		}
		err = json.NewDecoder(resp.Body).Decode(&connz)
		resp.Body.Close()
		if err != nil {
			continue
		}
		for _, conn := range connz.Connections {
			if conn.IP == c.ns.Addr(member) && strings.HasSuffix(conn.Name, "-capture") {
				return i
			}
		}
	}
	return -1
}

// startGroupInNetns starts member i in namespace i beside server i.
func startGroupInNetns(t *testing.T, ns *harness.Netns, c *netnsCluster) []*harness.VoikProcess {
	t.Helper()
	bin := harness.BuildVoik(t)
	members := make([]*harness.VoikProcess, 3)
	for i := range 3 {
		cfg := groupConfig(t, c.urls[i], i)
		cfg.HTTPAddr = ns.Addr(i) + ":8333"
		members[i] = harness.StartVoikProcessWrapped(t, bin, cfg, ns.Exec(i))
	}
	return members
}

// publisherConn is a client of every server that notices a silent one
// within a second: a server behind a cut or killed sends no reset.
func publisherConn(t *testing.T, urls []string) *nats.Conn {
	return harness.Connect(t, strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.PingInterval(500*time.Millisecond), nats.MaxPingsOutstanding(2))
}

// TestGroupSurvivesKill9OfNATSServers: real nats-server processes, each
// in a namespace of its own beside its member. kill -9 of the server
// leading the group's key-value stream, then of the leader's server,
// under acked load: the lease survives or moves, nothing acked is lost,
// and once the servers are back every member catches up.
func TestGroupSurvivesKill9OfNATSServers(t *testing.T) {
	ns, err := harness.StartNetns(t, 3)
	if err != nil {
		t.Skipf("no network namespaces here (%v): the test needs root and iproute2", err)
	}
	c := startNATSInNetns(t, ns)
	members := startGroupInNetns(t, ns, c)
	nc := publisherConn(t, c.urls)
	api := client.New(nc, "VOIK.API")
	load := newAckedLoad(api, "orders.kill9", "")
	publishers := load.start(t, 2, 5000)
	harness.Eventually(t, 30*time.Second, "acks before the first kill", func() bool { return load.count() >= 50 })
	for _, pick := range []struct {
		what   string
		server func() int
	}{
		{"the server leading the group's key-value stream", func() int { return streamLeader(nc, "KV_VOIK_GROUPS") }},
		{"the server the leader captures from", func() int {
			if leader := leaderOf(members); leader >= 0 {
				return c.serverOfCapture(leader)
			}
			return -1
		}},
	} {
		var victim int
		harness.Eventually(t, 10*time.Second, "to find "+pick.what, func() bool { victim = pick.server(); return victim >= 0 })
		c.kill(victim)
		killed := time.Now()
		next := firstAckOf(t, load.api, fmt.Sprintf("orders.probe-n%d-%d", victim, killed.UnixNano()), killed, 250*time.Millisecond)
		t.Logf("kill -9 of %s (n%d) to the next ack: %v", pick.what, victim, next.Round(time.Millisecond))
		harness.Eventually(t, 6*groupLease+30*time.Second, "the load acked after kill -9 of "+pick.what, func() bool {
			_, ok := load.firstAckAfter(killed)
			return ok
		})
		c.start(victim)
		c.waitJetStream()
		harness.Eventually(t, 60*time.Second, "every member back and caught up", func() bool { return allCaught(api, members) })
	}
	publishers.stop()
	// Every request right after the servers came back gets one reply
	// (24 runs of this test with 20 requests each: none missing, none
	// later than half a second).
	oneReplyEach(t, nc, load.subject)
	checkLog(t, api, load.subject, load, &seenRecords{seen: map[uint64]messages.Record{}}, false)
	stopAndCompare(t, members)
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
	c := startNATSInNetns(t, ns)
	urls := c.urls
	members := startGroupInNetns(t, ns, c)
	nc := publisherConn(t, urls)
	api := client.New(nc, "VOIK.API")
	load := newAckedLoad(api, "orders.partition", "")
	publishers := load.start(t, 2, 5000)
	harness.Eventually(t, 30*time.Second, "acks before the cut", func() bool { return load.count() >= 50 })

	old := leaderOf(members)
	if old < 0 {
		t.Fatal("no member says it leads")
	}
	before, _ := members[old].GroupStatus()
	// A publisher beside the leader, in its namespace: it keeps its
	// connection to the leader's server through the cut.
	beside, err := nats.Connect(urls[old], nats.SetCustomDialer(ns.Dialer(old)), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer beside.Close()
	besideLoad := newAckedLoad(client.New(beside, "VOIK.API"), "orders.partition", "beside-")

	ns.Cut(old)
	cut := time.Now()
	besideRun := besideLoad.start(t, 1, 30)
	// Timed by a probe of short tries from the cut on: the load's tries
	// in flight at the cut wait out their 2 s timeout.
	next := firstAckOf(t, load.api, "orders.partition-probe", cut, 250*time.Millisecond)
	t.Logf("the leader cut off to the next ack on the majority side: %v", next.Round(time.Millisecond))
	harness.Eventually(t, 6*groupLease+20*time.Second, "the majority side to lead in a higher epoch and the load to be acked", func() bool {
		for i, p := range members {
			if i == old {
				continue
			}
			if st, err := p.GroupStatus(); err == nil && st.Role == "leader" && st.Epoch > before.Epoch {
				_, acked := load.firstAckAfter(cut)
				return acked
			}
		}
		return false
	})
	besideBefore := besideLoad.count()

	ns.Heal(old)
	harness.Eventually(t, 60*time.Second, "the old leader back in the group, and every member caught up", func() bool {
		st, err := members[old].GroupStatus()
		return err == nil && st.Epoch > before.Epoch && st.Role != "candidate" && allCaught(api, members)
	})
	publishers.stop()
	besideRun.stop()
	if besideBefore > 0 {
		t.Errorf("%d acks reached the publisher beside the cut-off leader while it was cut off", besideBefore)
	}
	oneReplyEach(t, nc, load.subject)
	checkLog(t, api, load.subject, load, &seenRecords{seen: map[uint64]messages.Record{}}, false)
	stopAndCompare(t, members)
}
