package harness

import (
	"net"
	"sync"
)

// FreezeProxy is a TCP proxy in front of a server that can freeze: while
// frozen it keeps every socket open and forwards nothing, in either
// direction, as a server stopped with SIGSTOP (or a link that drops
// packets) looks to its clients. New connections are accepted and held the
// same way.
type FreezeProxy struct {
	listener net.Listener
	target   string

	mu     sync.Mutex
	frozen bool
	thawed chan struct{} // closed when Thaw ends a freeze
	conns  []net.Conn
	closed bool
}

// StartFreezeProxy listens on 127.0.0.1 and forwards to target until the
// test ends.
func StartFreezeProxy(tb TB, target string) *FreezeProxy {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &FreezeProxy{listener: l, target: target, thawed: make(chan struct{})}
	close(p.thawed) // not frozen
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// Addr is where clients connect: host:port.
func (p *FreezeProxy) Addr() string { return p.listener.Addr().String() }

// URL is Addr as a NATS URL.
func (p *FreezeProxy) URL() string { return "nats://" + p.Addr() }

// Freeze stops all forwarding; sockets stay open.
func (p *FreezeProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen, p.thawed = true, make(chan struct{})
	}
}

// Thaw forwards again what was held and what comes.
func (p *FreezeProxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thawed)
	}
}

// gate returns a channel that is closed once forwarding may go on.
func (p *FreezeProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.thawed
}

func (p *FreezeProxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

// pipe copies from src to dst, each chunk only while not frozen.
func (p *FreezeProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed socket: the other pipe ends too
		}
	}
}

func (p *FreezeProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	if p.frozen {
		p.frozen = false
		close(p.thawed)
	}
	p.mu.Unlock()
	p.listener.Close()
	for _, c := range conns {
		c.Close()
	}
}
