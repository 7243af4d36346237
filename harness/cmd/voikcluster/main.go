// Command voikcluster runs a replication group on this machine, in the
// foreground: three clustered NATS servers with JetStream (embedded, on
// 127.0.0.1) and a voik member beside each, as three pods of a
// StatefulSet would be. Ctrl-C (or SIGTERM) stops the members, each
// handing over in turn, then the servers. A member that exits (kill it to
// watch a failover) is started again after -restart.
//
//	go run ./harness/cmd/voikcluster -voik bin/voik
//
// `make cluster` runs it; the README walks through a failover with it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	var o options
	flag.StringVar(&o.voik, "voik", "bin/voik", "the voik binary")
	flag.StringVar(&o.dir, "dir", "data/cluster", "where the servers' JetStream files and the members' data dirs live (kept across runs)")
	flag.IntVar(&o.size, "n", 3, "how many NATS servers and members (1-7, odd)")
	flag.IntVar(&o.natsPort, "nats-port", 4222, "client port of the first NATS server; the others take the next ones")
	flag.IntVar(&o.routePort, "route-port", 6222, "cluster port of the first NATS server; the others take the next ones")
	flag.IntVar(&o.httpPort, "http-port", 8333, "HTTP port (/metrics, /readyz, /group) of the first member; the others take the next ones")
	flag.StringVar(&o.group, "group", "local", "the group's name (VOIK_GROUP)")
	flag.StringVar(&o.subjects, "subjects", ">", "what the group captures (VOIK_SUBJECTS)")
	flag.DurationVar(&o.restart, "restart", 5*time.Second, "start a member that exited again after this long; 0: never")
	flag.Parse()
	if o.size < 1 || o.size > 7 || o.size%2 == 0 {
		fmt.Fprintf(os.Stderr, "voikcluster: -n %d: want an odd number from 1 to 7\n", o.size)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "voikcluster: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	voik, dir, group, subjects    string
	size                          int
	natsPort, routePort, httpPort int
	restart                       time.Duration
}

// run starts the servers and members, prints how to reach them, and
// stops everything once ctx ends.
func run(ctx context.Context, o options, out io.Writer) error {
	bin, err := filepath.Abs(o.voik)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the voik binary: %w (make build)", err)
	}
	servers, err := startServers(o)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}()
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			return fmt.Errorf("NATS server n%d did not start", i)
		}
	}
	log := &lineWriter{w: out}
	log.printf("voikcluster: NATS servers on %s (JetStream; cluster %q); group %q captures %q",
		portRange("127.0.0.1", o.natsPort, o.size), "voik-local", o.group, o.subjects)
	var wg sync.WaitGroup
	for i := range o.size {
		m := &member{o: o, i: i, bin: bin, log: log}
		wg.Add(1)
		go func() { defer wg.Done(); m.keep(ctx) }()
	}
	log.printf("voikcluster: members voik-0..voik-%d, HTTP on %s; data in %s", o.size-1, portRange("127.0.0.1", o.httpPort, o.size), o.dir)
	log.printf("voikcluster: try   VOIK_NATS_URL=nats://127.0.0.1:%d bin/voik group %s   (Ctrl-C stops everything)", o.natsPort, o.group)
	wg.Wait()
	log.printf("voikcluster: members stopped; stopping NATS")
	return nil
}

func portRange(host string, first, n int) string {
	if n == 1 {
		return fmt.Sprintf("%s:%d", host, first)
	}
	return fmt.Sprintf("%s:%d-%d", host, first, first+n-1)
}

// startServers starts the clustered NATS servers, JetStream on each.
func startServers(o options) ([]*server.Server, error) {
	for i := range o.size {
		for _, port := range []int{o.natsPort + i, o.routePort + i, o.httpPort + i} {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				return nil, fmt.Errorf("port %d on 127.0.0.1 is taken (another make cluster or make run?): %w", port, err)
			}
			l.Close()
		}
	}
	var servers []*server.Server
	for i := range o.size {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       o.natsPort + i,
			NoSigs:     true,
			NoLog:      true,
			JetStream:  true,
			StoreDir:   filepath.Join(o.dir, fmt.Sprintf("nats-%d", i)),
		}
		if o.size > 1 {
			opts.Cluster = server.ClusterOpts{Name: "voik-local", Host: "127.0.0.1", Port: o.routePort + i}
			for j := range o.size {
				if j != i {
					opts.Routes = append(opts.Routes, server.RoutesFromStr(fmt.Sprintf("nats-route://127.0.0.1:%d", o.routePort+j))...)
				}
			}
		}
		s, err := server.NewServer(opts)
		if err != nil {
			for _, started := range servers {
				started.Shutdown()
			}
			return nil, fmt.Errorf("NATS server n%d: %w", i, err)
		}
		go s.Start()
		servers = append(servers, s)
	}
	return servers, nil
}

// member is one voik child, started again when it exits until ctx ends.
type member struct {
	o   options
	i   int
	bin string
	log *lineWriter
}

func (m *member) name() string { return "voik-" + strconv.Itoa(m.i) }

func (m *member) keep(ctx context.Context) {
	for {
		err := m.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if m.o.restart <= 0 {
			m.log.printf("voikcluster: %s exited (%v)", m.name(), err)
			return
		}
		m.log.printf("voikcluster: %s exited (%v); starting it again in %v", m.name(), err, m.o.restart)
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.o.restart):
		}
	}
}

// runOnce runs the member until it exits; when ctx ends it sends SIGTERM
// (the member hands over if it leads) and waits.
func (m *member) runOnce(ctx context.Context) error {
	cmd := exec.Command(m.bin, "serve")
	cmd.Env = append(os.Environ(),
		"VOIK_NATS_URL=nats://127.0.0.1:"+strconv.Itoa(m.o.natsPort+m.i),
		"VOIK_GROUP="+m.o.group,
		"VOIK_INSTANCE="+m.name(),
		"VOIK_REPLICAS="+strconv.Itoa(m.o.size),
		"VOIK_SUBJECTS="+m.o.subjects,
		"VOIK_DATA_DIR="+filepath.Join(m.o.dir, m.name()),
		"VOIK_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(m.o.httpPort+m.i),
	)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	m.log.printf("voikcluster: %s started, pid %d, beside NATS n%d", m.name(), cmd.Process.Pid, m.i)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			m.log.printf("[%s] %s", m.name(), sc.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-exited:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			err = errors.Join(errors.New("did not stop within 60s of SIGTERM; killed"), <-exited)
		}
	}
	pw.Close()
	<-copied
	return err
}

// lineWriter writes whole lines from several goroutines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}
