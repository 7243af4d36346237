package sidecar

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/voik/voik/config"
	"github.com/voik/voik/natsauth"
)

// ConfigError is a problem with the settings found at start (a port
// already taken, say): main reports it in one line and exits non-zero.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return "configuration: " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// CaptureUserPermissions are what voik's NATS user needs, and no more
// than it should have: it may not subscribe to _INBOX.>. Requesters take
// their replies there, voik's FETCH pages among them; with a capture
// filter that covers them (">", "_INBOX.>"), the server would send every
// page back to voik's capture connection to be dropped (_INBOX. is never
// stored), doubling what a read costs and putting capture at the mercy of
// readers. A wildcard subscription of a user with a deny clause gets
// nothing the clause matches: the server filters it (nats-server's
// deny-on-delivery). voik applies this to its embedded server;
// docs/operations.md gives the configuration for an external one.
func CaptureUserPermissions() *server.Permissions {
	return &server.Permissions{Subscribe: &server.SubjectPermission{Deny: []string{"_INBOX.>"}}}
}

// embeddedVoikUser is the user voik's connections take on its embedded
// server; other clients connect without credentials (embeddedClientUser).
const (
	embeddedVoikUser   = "voik"
	embeddedClientUser = "client"
)

// startEmbeddedServer runs a NATS server inside the process for when no
// VOIK_NATS_URL is set, and returns it with the options that log voik in
// as its own user. A port that is taken is a configuration error.
func startEmbeddedServer(cfg *config.Config, logger *slog.Logger) (*server.Server, []nats.Option, error) {
	addr := net.JoinHostPort(cfg.EmbeddedHost, strconv.Itoa(cfg.EmbeddedPort))
	password := rand.Text() // this process's alone: nobody else logs in as voik
	opts := &server.Options{
		Host:   cfg.EmbeddedHost,
		Port:   cfg.EmbeddedPort,
		NoSigs: true,
		NoLog:  true,
		Users: []*server.User{
			{Username: embeddedVoikUser, Password: password, Permissions: CaptureUserPermissions()},
			{Username: embeddedClientUser},
		},
		NoAuthUser: embeddedClientUser,
	}
	if cfg.Group != "" {
		// A group keeps its state in JetStream's key-value store; the
		// server's files live inside the data dir, as everything does.
		opts.JetStream = true
		opts.StoreDir = filepath.Join(cfg.DataDir, groupDir, "nats")
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, &ConfigError{fmt.Errorf("embedded NATS server: %v", err)}
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, nil, &ConfigError{fmt.Errorf("embedded NATS server did not start listening on %s", addr)}
	}
	logger.Info("embedded NATS server listening", "url", ns.ClientURL())
	return ns, []nats.Option{nats.UserInfo(embeddedVoikUser, password)}, nil
}

// checkEmbeddedPort fails with a *ConfigError when the embedded server
// would be started and its port is taken. New checks it before anything
// runs, so that the error is the one line voik prints; a port taken between
// then and the start is the server's not becoming ready, also a
// *ConfigError.
func checkEmbeddedPort(cfg *config.Config) error {
	if cfg.NatsURL != "" || cfg.EmbeddedPort <= 0 {
		return nil
	}
	addr := net.JoinHostPort(cfg.EmbeddedHost, strconv.Itoa(cfg.EmbeddedPort))
	probe, err := net.Listen("tcp", addr)
	if err != nil {
		return &ConfigError{fmt.Errorf("embedded NATS server cannot listen on %s: %v", addr, errors.Unwrap(err))}
	}
	probe.Close()
	return nil
}

// inboxPrefix is where voik's own connections take replies to their
// requests: under $, which capture never stores, and outside _INBOX.>,
// which the NATS user of voik may be denied.
const inboxPrefix = "$VOIK.INBOX"

// natsOptions are the connection options from the settings: auth, TLS,
// and reconnecting forever with backoff, each failure logged.
//
// Every connection counts its slow-consumer events under its role;
// onSlowConsumer (nil: none) also hears of the subscription.
func natsOptions(cfg *config.Config, role string, logger *slog.Logger, m *metrics, connected chan<- struct{}, hooks natsHooks) ([]nats.Option, error) {
	onSlowConsumer := hooks.slowConsumer
	notify := func() {
		select {
		case connected <- struct{}{}:
		default:
		}
	}
	opts := []nats.Option{
		nats.Name(cfg.NatsName + "-" + role),
		// Liveness: a server that stops answering (frozen, or a link that
		// black-holes) is noticed after MaxPingsOut pings, and /readyz
		// turns not ready; nats.go's 2 minutes would hide it.
		nats.PingInterval(cfg.NatsPingInterval),
		nats.MaxPingsOutstanding(cfg.NatsMaxPingsOut),
		// voik's own requests (the start-up probe) take their replies
		// under $VOIK, which is never stored, so that the NATS user of
		// voik may be denied _INBOX.> (docs/operations.md): the server
		// then keeps every client's replies, voik's pages among them,
		// away from a capture filter such as ">".
		nats.CustomInboxPrefix(inboxPrefix),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				m.slowConsumers.WithLabelValues(role).Inc()
				if sub != nil && onSlowConsumer != nil {
					onSlowConsumer(sub)
					return
				}
			}
			logger.Error("NATS error", "role", role, "err", err)
		}),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(64 << 20),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return min(time.Duration(attempts)*250*time.Millisecond, 5*time.Second)
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			logger.Info("connected to NATS", "role", role, "url", nc.ConnectedUrlRedacted())
			m.natsConnected.WithLabelValues(role).Set(1)
			notify()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("reconnected to NATS", "role", role, "url", nc.ConnectedUrlRedacted())
			m.reconnects.Inc()
			m.natsConnected.WithLabelValues(role).Set(1)
			notify()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				// A server that cuts a slow consumer closes the socket
				// without a word: it shows here as the role's disconnect.
				logger.Warn("disconnected from NATS", "role", role, "err", err)
				m.disconnects.WithLabelValues(role).Inc()
			}
			m.natsConnected.WithLabelValues(role).Set(0)
			notify()
			if hooks.disconnected != nil {
				hooks.disconnected()
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			m.natsConnected.WithLabelValues(role).Set(0)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("cannot reach NATS yet; retrying", "role", role, "err", err)
		}),
	}
	auth, err := natsauth.Options(cfg)
	if err != nil {
		return nil, &ConfigError{err}
	}
	return append(opts, auth...), nil
}

// natsHooks are what a role's connection tells beyond logs and metrics.
type natsHooks struct {
	slowConsumer func(*nats.Subscription) // a subscription nats.go cut short
	disconnected func()                   // the connection to the server was lost
}

// connect opens a NATS connection and waits until it is really connected,
// retrying for as long as ctx allows. A NATS that is not up yet (refused,
// or a name that does not resolve yet) is retried with backoff.
func connect(ctx context.Context, url string, opts []nats.Option, connected <-chan struct{}) (*nats.Conn, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("NATS connection: %v", err)}
	}
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, ctx.Err()
		case <-connected:
		case <-time.After(time.Second):
			// The handlers above are the wake-up; this only bounds how
			// long a missed one could delay noticing the connection.
		}
	}
	return nc, nil
}
