package harness

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/voik/voik/sidecar"
)

// NATSOption adjusts the options of an embedded test server.
type NATSOption func(*server.Options)

// WithJetStream enables JetStream with its store in a temporary directory.
func WithJetStream(dir string) NATSOption {
	return func(o *server.Options) {
		o.JetStream = true
		o.StoreDir = dir
	}
}

// WithMaxPayload sets the server's max_payload.
func WithMaxPayload(n int32) NATSOption {
	return func(o *server.Options) { o.MaxPayload = n }
}

// Voik's NATS user on a server started WithVoikUser.
const (
	VoikUser     = "voik"
	VoikPassword = "voik-test-password"
)

// WithVoikUser gives the server the user voik should log in as
// (VoikUser, VoikPassword), with the permissions docs/operations.md asks
// for (sidecar.CaptureUserPermissions); every other client connects
// without credentials, as before. Set the configuration's NatsUser and
// NatsPassword to match.
func WithVoikUser() NATSOption {
	return func(o *server.Options) {
		o.Users = append(o.Users,
			&server.User{Username: VoikUser, Password: VoikPassword, Permissions: sidecar.CaptureUserPermissions()},
			&server.User{Username: "client"})
		o.NoAuthUser = "client"
	}
}

// WithOptions hands the raw options to fn (auth, TLS, ...).
func WithOptions(fn func(*server.Options)) NATSOption { return NATSOption(fn) }

// StartNATS runs a NATS server on 127.0.0.1 and a random port until the
// test ends.
func StartNATS(tb TB, opts ...NATSOption) *server.Server {
	tb.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, MaxPayload: 1 << 20}
	for _, opt := range opts {
		opt(o)
	}
	ns, err := server.NewServer(o)
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server did not start")
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Connect opens a client connection that is closed when the test ends.
func Connect(tb TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Eventually polls cond until it holds or timeout passes, then fails the
// test with what. It is for conditions with no event to wait on (a counter
// in another process, a file); a condition with an event should use it.
func Eventually(tb TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
