package harness

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// GlobalAccount is the account clients use on a server without accounts:
// the one to name when asking which server leads a stream.
const GlobalAccount = server.DEFAULT_GLOBAL_ACCOUNT

// clusterWait bounds how long StartNATSCluster and Restart wait for the
// JetStream meta group to elect a leader and hear from every running
// server. NATS's Raft election timeout alone is 4-9 s.
const clusterWait = 30 * time.Second

// Cluster is n embedded NATS servers on 127.0.0.1 in one cluster, each with
// JetStream and its own store, every one routing to all the others (a
// JetStream cluster does not form around a single seed). Servers can be
// stopped and restarted on the same ports and store.
type Cluster struct {
	tb   TB
	name string

	mu      sync.Mutex
	opts    []*server.Options // per server, as configured; cloned for each start
	servers []*server.Server  // nil while stopped
}

// StartNATSCluster starts n clustered servers with JetStream and waits
// until JetStream has a meta leader that sees every server. opts apply to
// every server, after the cluster's own settings. The servers stop when
// the test ends.
func StartNATSCluster(tb TB, n int, opts ...NATSOption) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("StartNATSCluster: n = %d", n)
	}
	ports := freePorts(tb, 2*n)
	clientPorts, routePorts := ports[:n], ports[n:]
	c := &Cluster{tb: tb, name: "voik-test", opts: make([]*server.Options, n), servers: make([]*server.Server, n)}
	base := tb.TempDir()
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: 1 << 20,
			JetStream:  true,
			StoreDir:   filepath.Join(base, fmt.Sprintf("n%d", i)),
			Cluster: server.ClusterOpts{
				Name: c.name,
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
		}
		for j := range n {
			if j != i {
				o.Routes = append(o.Routes, server.RoutesFromStr(fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[j]))...)
			}
		}
		for _, opt := range opts {
			opt(o)
		}
		c.opts[i] = o
	}
	tb.Cleanup(func() {
		for i := range n {
			c.stop(i)
		}
	})
	for i := range n {
		c.start(i)
	}
	c.WaitJetStream()
	return c
}

// freePorts finds n distinct free TCP ports on 127.0.0.1, holding each
// open until all are found. Another process may take one before the
// server binds it; that is rare and fails the start loudly.
func freePorts(tb TB, n int) []int {
	tb.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func (c *Cluster) start(i int) {
	c.tb.Helper()
	c.mu.Lock()
	o := c.opts[i].Clone()
	c.mu.Unlock()
	ns, err := server.NewServer(o)
	if err != nil {
		c.tb.Fatalf("nats server %d: %v", i, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		c.tb.Fatalf("nats server %d did not start", i)
	}
	c.mu.Lock()
	c.servers[i] = ns
	c.mu.Unlock()
}

func (c *Cluster) stop(i int) {
	c.mu.Lock()
	ns := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Size is the number of servers, running or stopped.
func (c *Cluster) Size() int { return len(c.opts) }

// Server is server i, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// ClientURL is server i's client URL; it stays the same across restarts.
func (c *Cluster) ClientURL(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port)
}

// ClientURLs are every server's client URL, server i's at i.
func (c *Cluster) ClientURLs() []string {
	urls := make([]string, c.Size())
	for i := range urls {
		urls[i] = c.ClientURL(i)
	}
	return urls
}

// URL is every server's client URL joined by commas, as nats.Connect
// takes them.
func (c *Cluster) URL() string { return strings.Join(c.ClientURLs(), ",") }

// Stop shuts server i down and waits until it has; its store stays for
// Restart. Its Raft groups hand their leadership to another server as it
// goes, as on a clean shutdown.
func (c *Cluster) Stop(i int) {
	c.tb.Helper()
	if c.Server(i) == nil {
		c.tb.Fatalf("Stop(%d): server is not running", i)
	}
	c.stop(i)
}

// Restart starts server i again, stopped before, on the same ports and
// store, and waits until JetStream is current on every running server.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	if c.Server(i) != nil {
		c.tb.Fatalf("Restart(%d): server is running", i)
	}
	c.start(i)
	c.WaitJetStream()
}

// running returns the running servers and their indexes.
func (c *Cluster) running() ([]*server.Server, []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ss []*server.Server
	var idx []int
	for i, s := range c.servers {
		if s != nil {
			ss = append(ss, s)
			idx = append(idx, i)
		}
	}
	return ss, idx
}

// MetaLeader is the index of the server leading JetStream's meta group, or
// -1 if none does.
func (c *Cluster) MetaLeader() int {
	ss, idx := c.running()
	for k, s := range ss {
		if s.JetStreamIsLeader() {
			return idx[k]
		}
	}
	return -1
}

// jetStreamReady says whether exactly one running server leads the meta
// group, sees every running server online with JetStream, and every
// running server is current with it and names it as the leader. Only
// then can streams with as many replicas as running servers be placed.
func (c *Cluster) jetStreamReady() bool {
	ss, _ := c.running()
	var leader *server.Server
	for _, s := range ss {
		if s.JetStreamIsLeader() {
			if leader != nil {
				return false
			}
			leader = s
		}
	}
	if leader == nil || len(leader.JetStreamClusterPeers()) < len(ss) {
		return false
	}
	for _, s := range ss {
		if !s.JetStreamIsCurrent() {
			return false
		}
		jsz, err := s.Jsz(nil)
		if err != nil || jsz.Meta == nil || jsz.Meta.Leader != leader.Name() {
			return false
		}
	}
	return true
}

// WaitJetStream waits until JetStream's meta group has a leader that every
// running server follows and that sees every running server.
func (c *Cluster) WaitJetStream() {
	c.tb.Helper()
	Eventually(c.tb, clusterWait, "a JetStream meta leader seeing every running server", c.jetStreamReady)
}

// StreamLeader is the index of the server leading stream's Raft group in
// account (GlobalAccount without accounts), or -1 if none does now. A key-value
// bucket B is the stream "KV_B".
func (c *Cluster) StreamLeader(account, stream string) int {
	ss, idx := c.running()
	for k, s := range ss {
		if s.JetStreamIsStreamLeader(account, stream) {
			return idx[k]
		}
	}
	return -1
}

// WaitStreamLeader waits until some running server leads stream and
// returns its index.
func (c *Cluster) WaitStreamLeader(account, stream string) int {
	c.tb.Helper()
	leader := -1
	Eventually(c.tb, clusterWait, "a leader for stream "+stream, func() bool {
		leader = c.StreamLeader(account, stream)
		return leader >= 0
	})
	return leader
}
