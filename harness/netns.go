package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Netns is n network namespaces of this test's own, each joined to a
// bridge in the host's namespace by a veth pair, on a /24 of addresses
// made up here (10.x.y.1 .. 10.x.y.n; the bridge is 10.x.y.254, so the
// test process reaches every namespace). Cut takes one namespace's link
// down: a real partition, unlike SIGSTOP. Everything is deleted when the
// test ends. It needs root and the ip command.
type Netns struct {
	tb     TB
	names  []string // namespaces
	hosts  []string // the host ends of the veth pairs, on the bridge
	bridge string
	addrs  []string
}

// StartNetns makes n namespaces, or returns why it cannot (not root, no
// ip command, no network namespaces): the caller skips with it.
func StartNetns(tb TB, n int) (*Netns, error) {
	tb.Helper()
	if os.Geteuid() != 0 {
		return nil, errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("no ip command (iproute2)")
	}
	tag := fmt.Sprintf("vk%d", os.Getpid()%100000)
	subnet := fmt.Sprintf("10.%d.%d.", 200+os.Getpid()%50, (os.Getpid()/50)%250)
	ns := &Netns{tb: tb, bridge: tag + "b"}
	tb.Cleanup(ns.remove)
	if err := ns.ip("link", "add", ns.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	for _, step := range [][]string{
		{"addr", "add", subnet + "254/24", "dev", ns.bridge},
		{"link", "set", ns.bridge, "up"},
	} {
		if err := ns.ip(step...); err != nil {
			return nil, err
		}
	}
	for i := range n {
		name, host, inner := fmt.Sprintf("%sn%d", tag, i), fmt.Sprintf("%sh%d", tag, i), fmt.Sprintf("%sv%d", tag, i)
		addr := fmt.Sprintf("%s%d", subnet, i+1)
		ns.names, ns.hosts, ns.addrs = append(ns.names, name), append(ns.hosts, host), append(ns.addrs, addr)
		for _, step := range [][]string{
			{"netns", "add", name},
			{"link", "add", host, "type", "veth", "peer", "name", inner},
			{"link", "set", inner, "netns", name},
			{"-n", name, "addr", "add", addr + "/24", "dev", inner},
			{"-n", name, "link", "set", inner, "up"},
			{"-n", name, "link", "set", "lo", "up"},
			{"link", "set", host, "master", ns.bridge},
			{"link", "set", host, "up"},
		} {
			if err := ns.ip(step...); err != nil {
				return nil, err
			}
		}
	}
	return ns, nil
}

func (ns *Netns) ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (ns *Netns) remove() {
	for _, name := range ns.names {
		ns.ip("netns", "del", name) // takes its veth pair with it
	}
	ns.ip("link", "del", ns.bridge)
}

// Addr is namespace i's address.
func (ns *Netns) Addr(i int) string { return ns.addrs[i] }

// Exec is the command prefix that runs a program in namespace i.
func (ns *Netns) Exec(i int) []string { return []string{"ip", "netns", "exec", ns.names[i]} }

// Cut takes namespace i's link to the bridge down: it can reach nobody
// and nobody reaches it, its own processes still reach each other.
func (ns *Netns) Cut(i int) {
	ns.tb.Helper()
	if err := ns.ip("link", "set", ns.hosts[i], "down"); err != nil {
		ns.tb.Fatal(err)
	}
}

// Heal brings namespace i's link up again.
func (ns *Netns) Heal(i int) {
	ns.tb.Helper()
	if err := ns.ip("link", "set", ns.hosts[i], "up"); err != nil {
		ns.tb.Fatal(err)
	}
}

// Dialer dials from inside namespace i (for nats.SetCustomDialer): a
// client there keeps talking to its namespace's server through a cut.
func (ns *Netns) Dialer(i int) *NetnsDialer {
	return &NetnsDialer{path: "/var/run/netns/" + ns.names[i]}
}

// NetnsDialer opens TCP connections from inside a network namespace.
type NetnsDialer struct{ path string }

// Dial dials from a thread moved into the namespace and back: the
// connection, once made, belongs to the namespace whatever thread uses
// it. The thread goes back to its own namespace before it is unlocked: a
// thread that ended locked would be retired, and a child process whose
// parent thread ends gets its Pdeathsig (StartVoikProcess's children
// would be killed).
func (d *NetnsDialer) Dial(network, address string) (net.Conn, error) {
	runtime.LockOSThread()
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer own.Close()
	target, err := os.Open(d.path)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", d.path, err)
	}
	conn, dialErr := net.Dial(network, address)
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stuck in the other namespace: keep the thread locked for good
		// rather than let other goroutines run there.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return conn, dialErr
}
