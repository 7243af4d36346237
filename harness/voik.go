package harness

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/sidecar"
)

// Voik is a voik running in the test process.
type Voik struct {
	Config  *config.Config
	Sidecar *sidecar.Sidecar
	Client  *client.Client
	done    chan error
	cancel  context.CancelFunc
}

// TestConfig is a configuration for tests: data in a temporary directory,
// the given NATS URL, HTTP on a random port, quiet logs.
func TestConfig(tb TB, natsURL string) *config.Config {
	tb.Helper()
	// voik's defaults (config.Defaults, from the one place they are
	// written), but for what a test needs of its own.
	cfg := config.Defaults()
	cfg.NatsURL = natsURL
	cfg.Subjects = ">" // a test's NATS server is its own: capture everything on it
	cfg.DataDir = filepath.Join(tb.TempDir(), "data")
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NatsName = "voik-test"
	cfg.EmbeddedPort = -1
	cfg.LogLevel = "error"
	if err := cfg.Validate(sidecar.CheckSettings); err != nil {
		tb.Fatalf("test config: %v", err)
	}
	return cfg
}

// VoikOption adjusts StartVoik.
type VoikOption func(*voikOptions)

type voikOptions struct {
	logger   *slog.Logger
	noClient bool
}

// WithLogger gives voik this logger instead of the test log (warnings,
// under -v only).
func WithLogger(l *slog.Logger) VoikOption { return func(o *voikOptions) { o.logger = l } }

// WithoutClient leaves Voik.Client nil: for a server whose users a plain
// connection cannot be.
func WithoutClient() VoikOption { return func(o *voikOptions) { o.noClient = true } }

// StartVoik runs voik with cfg until the test ends (or Stop), and returns
// once its API answers.
func StartVoik(tb TB, cfg *config.Config, opts ...VoikOption) *Voik {
	tb.Helper()
	if err := cfg.Validate(sidecar.CheckSettings); err != nil {
		tb.Fatalf("config: %v", err)
	}
	var o voikOptions
	for _, opt := range opts {
		opt(&o)
	}
	logger := o.logger
	switch {
	case logger != nil:
	case verbose():
		logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	default:
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := sidecar.New(cfg, logger)
	if err != nil {
		tb.Fatalf("voik: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &Voik{Config: cfg, Sidecar: s, done: make(chan error, 1), cancel: cancel}
	go func() { v.done <- s.Run(ctx) }()
	select {
	case <-s.Started():
	case err := <-v.done:
		tb.Fatalf("voik stopped while starting: %v", err)
	case <-time.After(30 * time.Second):
		tb.Fatal("voik did not start within 30s")
	}
	tb.Cleanup(func() { v.Stop(tb) })
	if !o.noClient {
		v.Client = client.New(Connect(tb, s.NatsURL()), cfg.APIPrefix)
	}
	return v
}

// Stop shuts voik down as SIGTERM would and checks it exits cleanly.
func (v *Voik) Stop(tb TB) {
	if v.cancel == nil {
		return
	}
	v.cancel()
	v.cancel = nil
	if err := <-v.done; err != nil {
		tb.Errorf("voik shutdown: %v", err)
	}
}

type testWriter struct{ tb TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", p)
	return len(p), nil
}

// verbose reports whether this is a test binary run with -v (-test.v set
// to true or test2json). It reads the flag rather than call
// testing.Verbose so that harness does not import testing; a program has
// no such flag and is never verbose here.
func verbose() bool {
	f := flag.Lookup("test.v")
	return f != nil && f.Value.String() != "false"
}
