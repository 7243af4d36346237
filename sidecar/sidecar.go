// Package sidecar is the voik service: it connects to NATS (or starts an
// embedded server), captures the configured subjects into a
// logstore.Store, answers the request/reply API of docs/protocol.md,
// serves /healthz, /readyz and /metrics, and shuts down without losing
// what it accepted.
//
// Start-up order is what makes "the API answers only once capture is
// active" true: capture subscriptions are made and flushed (the server has
// them) before the API subscribes. Shutdown runs the other way: capture
// drains, waiting fetches and replays are told to finish, requests and
// acks in flight complete, the store syncs and closes, connections close.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/voik/voik/config"
	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// Sidecar is one running voik.
type Sidecar struct {
	cfg      *config.Config
	logger   *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics

	filters  []string
	store    *logstore.Store
	embedded *server.Server
	capture  atomic.Pointer[capture] // nil while a group member does not lead
	api      *api
	member   *member // nil standalone
	captureNC,
	apiNC,
	replayNC *nats.Conn // REPLAY's records only: a slow subscriber stalls it, not the API
	peersNC *nats.Conn // what voiks on one API prefix tell each other (peers.go)
	leaseNC,
	replNC *nats.Conn // a group member's: its lease, and the copy between members
	httpListener net.Listener
	httpServer   *http.Server

	ready    atomic.Bool
	apiRef   atomic.Pointer[api]            // set once the API is made, for the gauges
	storeRef atomic.Pointer[logstore.Store] // set once the store is open, likewise

	governMemory  bool          // GovernMemoryLimit was called
	memoryCeiling int64         // its ceiling
	started       chan struct{} // closed once the API answers
	natsURL       atomic.Value  // string: the URL connected to
	shutdown      context.CancelFunc
}

// New checks what can be checked before anything runs: the filters, the
// embedded server's port and the HTTP port (config.Load has checked the
// data dir). A *ConfigError is the user's to fix.
func New(cfg *config.Config, logger *slog.Logger) (*Sidecar, error) {
	filters, err := messages.ParseFilters(cfg.Subjects)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("VOIK_SUBJECTS: %w", err)}
	}
	s := &Sidecar{
		cfg:      cfg,
		logger:   logger,
		registry: prometheus.NewRegistry(),
		filters:  filters,
		started:  make(chan struct{}),
	}
	if err := checkEmbeddedPort(cfg); err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		if s.httpListener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, &ConfigError{fmt.Errorf("VOIK_HTTP_ADDR %s: %v", cfg.HTTPAddr, errors.Unwrap(err))}
		}
	}
	return s, nil
}

// Started is closed once capture is active and the API answers.
func (s *Sidecar) Started() <-chan struct{} { return s.started }

// NatsURL is the URL of the NATS server voik connected to (the embedded
// one's when VOIK_NATS_URL is empty); empty before Started.
func (s *Sidecar) NatsURL() string {
	u, _ := s.natsURL.Load().(string)
	return u
}

// HTTPAddr is where /metrics, /healthz and /readyz are served, or "".
func (s *Sidecar) HTTPAddr() string {
	if s.httpListener == nil {
		return ""
	}
	return s.httpListener.Addr().String()
}

// Run runs voik until ctx is cancelled, then shuts down cleanly. It
// returns nil after a clean shutdown.
func (s *Sidecar) Run(ctx context.Context) (err error) {
	s.metrics, err = newMetrics(s.registry, s.gauges())
	if err != nil {
		return err
	}
	s.startHTTP()
	defer s.stopHTTP()
	closeStore, err := s.openStore(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeStore()) }()

	url := s.cfg.NatsURL
	var login []nats.Option
	if url == "" {
		if s.embedded, login, err = startEmbeddedServer(s.cfg, s.logger); err != nil {
			return err
		}
		defer s.embedded.Shutdown()
		url = s.embedded.ClientURL()
	}
	s.natsURL.Store(url)
	if err := s.connect(ctx, url, login); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before NATS was ever reached
		}
		return err
	}
	defer s.replayNC.Close()
	defer s.peersNC.Close()
	defer s.apiNC.Close()
	defer s.captureNC.Close()
	if s.member != nil {
		defer s.leaseNC.Close()
		defer s.replNC.Close()
	}
	return s.serve(ctx, url)
}

// openStore opens the store, and a group member's state beside it, and
// returns what closes them.
func (s *Sidecar) openStore(ctx context.Context) (closeStore func() error, err error) {
	storeOpts, err := storeOptions(s.cfg, s.logger)
	if err != nil {
		return nil, err
	}
	storeOpts.Observer = storeObserver{m: s.metrics}
	if s.cfg.Group != "" {
		// Retention is the group's: the leader journals where its
		// limits would start each log, and every member deletes by it
		// once committed (docs/groups.md, Retention).
		storeOpts.HoldRetention = true
		storeOpts.OnRetention = func(subject string, first uint64) {
			if l := s.member.lead.Load(); l != nil {
				l.markStart(subject, first)
			}
		}
	}
	s.store, err = logstore.OpenStore(s.cfg.DataDir, storeOpts)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("VOIK_DATA_DIR %s: %v", s.cfg.DataDir, err)}
	}
	s.storeRef.Store(s.store)
	stopMeasuring := s.measureDisk(ctx)
	closeStore = func() error {
		if s.member != nil {
			s.member.close()
		}
		stopMeasuring()
		if err := s.store.Close(); err != nil {
			s.logger.Error("closing the store", "err", err)
			return err
		}
		return nil
	}
	s.logger.Info("store open", "data_dir", s.cfg.DataPath(), "subjects", len(s.store.Subjects()), "sync", storeOpts.Sync.String())
	if s.cfg.Group == "" {
		return closeStore, nil
	}
	if s.member, err = openMember(s, storeOpts); err == nil {
		s.member.gm, err = newGroupMetrics(s.registry)
		if err != nil {
			s.member.close()
		}
	}
	if err != nil {
		s.member = nil
		closeStore()
		return nil, &ConfigError{fmt.Errorf("VOIK_DATA_DIR %s: %v", s.cfg.DataDir, err)}
	}
	return closeStore, nil
}

// serve runs voik, connected, until ctx ends: a member joins its group
// first; capture and the API start (in a group, as the member's role
// says); then the orderly shutdown.
func (s *Sidecar) serve(ctx context.Context, url string) error {
	memberCtx, stopMember := context.WithCancel(context.Background())
	defer stopMember()
	if err := s.checkOverlap(); err != nil {
		return err
	}
	if s.member != nil {
		s.member.leaseNC, s.member.replNC = s.leaseNC, s.replNC
		if err := s.member.join(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	shutdownCtx, shutdown := context.WithCancel(context.Background())
	s.shutdown = shutdown
	defer shutdown()
	if err := s.start(shutdownCtx); err != nil {
		return err
	}
	if s.member != nil {
		if err := s.member.start(memberCtx); err != nil {
			return err
		}
	}
	if s.governMemory {
		governed := make(chan struct{})
		go func() { defer close(governed); s.governMemoryUntil(shutdownCtx.Done()) }()
		defer func() { <-governed }()
	}
	s.ready.Store(true)
	close(s.started)
	s.logger.Info("voik is capturing", "filters", strings.Join(s.filters, ","), "api", s.cfg.APIPrefix, "nats", url, "http", s.HTTPAddr())

	<-ctx.Done()
	s.logger.Info("shutting down")
	s.ready.Store(false)
	if s.member != nil {
		s.member.stop()
		stopMember()
	}
	s.stop(shutdown)
	s.logger.Info("shut down cleanly")
	return nil
}

// gauges reads what the store and the API keep themselves, once each is
// there (the metrics exist before either).
func (s *Sidecar) gauges() gaugeFuncs {
	fromAPI := func(read func(*api) float64) func() float64 {
		return func() float64 {
			if a := s.apiRef.Load(); a != nil {
				return read(a)
			}
			return 0
		}
	}
	fromStore := func(read func(*logstore.Store) float64) func() float64 {
		return func() float64 {
			if store := s.storeRef.Load(); store != nil {
				return read(store)
			}
			return 0
		}
	}
	return gaugeFuncs{
		replyBytes: fromAPI(func(a *api) float64 { return float64(a.budget.inUse()) }),
		longPolls:  fromAPI(func(a *api) float64 { return float64(len(a.polls)) }),
		openLogs:   fromStore(func(st *logstore.Store) float64 { return float64(st.OpenLogs()) }),
		durableLag: fromStore(func(st *logstore.Store) float64 { return float64(st.DurableLag()) }),
	}
}

// measureDisk measures in the background what the segment files took at
// start (a walk of 100,000 subjects takes seconds) and adds it to the
// changes the store reports from its opening on. The function it returns
// stops the walk and waits for it.
func (s *Sidecar) measureDisk(ctx context.Context) (stop func()) {
	measured := make(chan struct{})
	walkCtx, stopWalk := context.WithCancel(ctx)
	go func() {
		defer close(measured)
		if total, err := segmentFileBytes(walkCtx, s.cfg.DataDir); err != nil {
			s.logger.Warn("cannot measure the data dir for voik_disk_bytes", "err", err)
		} else {
			s.metrics.diskBytes.Add(float64(total))
		}
	}()
	return func() { stopWalk(); <-measured }
}

// connect opens a connection per role, each carrying only its own
// traffic, so that no role's load reaches another's:
//   - capture receives the captured messages and sends the acks capture
//     owes (replyConns), with echo off so that NATS does not deliver an
//     ack back to a capture filter it matches;
//   - api receives the requests and sends their replies: a reader that
//     cannot keep up gets its connection stalled or cut by the server,
//     never capture's;
//   - replay publishes REPLAY's records: a NATS server slows a publisher
//     whose messages pile up for a slow subscriber (it stalls the
//     connection's reads), and on its own connection that slows only
//     replays;
//   - peers carries what the voiks on one API prefix tell each other
//     (their presence, and the subjects a SUBJECTS gathers), so that
//     neither replays nor a flood of requests delays it.
func (s *Sidecar) connect(ctx context.Context, url string, extra []nats.Option) error {
	roles := []string{"capture", "api", "replay", "peers"}
	if s.cfg.Group != "" {
		roles = append(roles, "lease", "repl")
	}
	for _, role := range roles {
		connected := make(chan struct{}, 1)
		var hooks natsHooks
		if role == "capture" {
			hooks.slowConsumer = s.captureSlowConsumer
		}
		if role == "capture" || role == "lease" {
			// A leader that loses its server steps down at once: what
			// was published meanwhile never reached it.
			hooks.disconnected = func() {
				if s.member != nil {
					s.member.lostNATS(role)
				}
			}
		}
		opts, err := natsOptions(s.cfg, role, s.logger, s.metrics, connected, hooks)
		if err != nil {
			return err
		}
		opts = append(opts, extra...)
		if role == "capture" {
			opts = append(opts, nats.NoEcho())
		}
		nc, err := connect(ctx, url, opts, connected)
		if err != nil {
			return err
		}
		switch role {
		case "capture":
			s.captureNC = nc
		case "api":
			s.apiNC = nc
		case "lease":
			s.leaseNC = nc
		case "repl":
			s.replNC = nc
		case "peers":
			s.peersNC = nc
		default:
			s.replayNC = nc
		}
		s.metrics.natsConnected.WithLabelValues(role).Set(1)
	}
	return nil
}

// replyConns is where acks leave: capture's connection, whose echo is
// off, or the API's while capture's is not connected (an ack may then come
// back to capture, which drops it, rather than wait in the reconnect
// buffer until requesters have given up).
type replyConns struct{ capture, api *nats.Conn }

func (r replyConns) conn() *nats.Conn {
	if r.capture.IsConnected() {
		return r.capture
	}
	return r.api
}

// captureSlowConsumer hears of a capture subscription that nats.go cut
// short: capture fell behind and messages were dropped.
func (s *Sidecar) captureSlowConsumer(sub *nats.Subscription) {
	if c := s.capture.Load(); c != nil {
		c.noteSlowConsumer(sub)
	}
}

// start subscribes capture, makes sure the server has those subscriptions,
// then subscribes the API.
func (s *Sidecar) start(shutdownCtx context.Context) error {
	if s.member == nil {
		c := s.newCapture()
		c.startAckWorkers()
		if err := c.subscribe(s.captureNC, s.filters, s.cfg.PendingMsgs, int(s.cfg.PendingBytes)); err != nil {
			c.stopAckWorkers()
			return fmt.Errorf("capture: %w", err)
		}
		s.capture.Store(c)
		if err := s.captureNC.Flush(); err != nil {
			return fmt.Errorf("capture: %w", err)
		}
	}
	s.api = &api{
		nc:       s.apiNC,
		replayNC: s.replayNC,
		peersNC:  s.peersNC,
		store:    s.store,
		vis:      wholeLogs{s.store},
		prefix:   s.cfg.APIPrefix,
		metrics:  s.metrics,
		logger:   s.logger,
		warn:     newThrottledLogger(s.logger),
		shutdown: shutdownCtx,
		working:  make(chan struct{}, maxWorking),
		polls:    make(chan struct{}, s.cfg.MaxLongPolls),
		budget:   newReplyBudget(int64(s.cfg.ReplyBudget)),
		pages:    &pagePool{limit: int64(s.cfg.ReplyBudget) / 4},
		self:     selfPresence(s.cfg.Group, s.cfg.Instance, s.filters),
		peers:    &peerBook{},
	}
	s.api.queue = "voik-" + strings.ReplaceAll(s.api.self.Peer, " ", "-")
	go s.api.pages.releaseAfterLoad(shutdownCtx.Done(), s.logger)
	s.apiRef.Store(s.api)
	if s.member != nil {
		// A member answers in its group's queue group, once in sync
		// (member.serveAPI), and only what is committed.
		s.api.vis, s.api.queue, s.api.answers = s.member.view, "voik-group-"+s.cfg.Group, s.member.answers
		s.api.groupsVia = s.member.groupsVia
		return nil
	}
	if err := s.api.subscribe(); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if err := s.apiNC.Flush(); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// newCapture is capture as configured, not subscribed.
func (s *Sidecar) newCapture() *capture {
	return &capture{
		store:        s.store,
		replies:      replyConns{capture: s.captureNC, api: s.apiNC},
		prefix:       s.cfg.APIPrefix,
		dedupeWindow: s.cfg.DedupeWindow,
		metrics:      s.metrics,
		logger:       newThrottledLogger(s.logger),
		droppedSeen:  map[*nats.Subscription]int{},
	}
}

// setCapture makes c the capture that slow consumers and the memory
// governor look at (nil: none).
func (s *Sidecar) setCapture(c *capture) { s.capture.Store(c) }

// stop is the orderly shutdown; the deferred closes in Run finish it.
func (s *Sidecar) stop(shutdown context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 1. No new messages; everything NATS delivered is appended.
	c := s.capture.Load()
	if c != nil {
		c.drain(ctx, s.captureNC)
	}
	// 2. Waiting fetches answer now, replays end with 503; no new
	// requests, and those NATS already delivered are answered 503, not
	// dropped.
	shutdown()
	s.api.unsubscribe(ctx)
	// 3. Requests and acks in flight complete (acks once durable).
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { s.api.inFlight.Wait(); wg.Done() }()
	go func() {
		if c != nil {
			c.acks.Wait()
		}
		wg.Done()
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		if c != nil {
			c.stopAckWorkers()
		}
	case <-ctx.Done():
		s.logger.Error("shutdown: requests still in flight after 30s; closing anyway")
	}
	if !s.captureNC.IsConnected() && !s.apiNC.IsConnected() {
		s.logger.Warn("shutdown: NATS is away; replies and acks not yet sent are lost with the connection")
	}
	for _, nc := range []*nats.Conn{s.captureNC, s.apiNC} { // acks may have left on either
		if !nc.IsConnected() {
			continue
		}
		if err := nc.FlushTimeout(5 * time.Second); err != nil {
			s.logger.Warn("shutdown: last replies may not have been sent", "connection", nc.Opts.Name, "err", err)
		}
	}
	for _, role := range []string{"capture", "api", "replay", "peers", "lease", "repl"} {
		s.metrics.natsConnected.WithLabelValues(role).Set(0)
	}
}

// startHTTP serves /healthz, /readyz and /metrics when an address is set.
func (s *Sidecar) startHTTP() {
	if s.httpListener == nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := s.notReady(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/group", s.groupStatus)
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.httpServer = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.httpServer.Serve(s.httpListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("HTTP server stopped", "err", err)
		}
	}()
}

func (s *Sidecar) stopHTTP() {
	if s.httpServer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.httpServer.Shutdown(ctx)
}

// notReady says why voik is not ready, or "" when it is: NATS connected,
// store open, capture active.
func (s *Sidecar) notReady() string {
	switch {
	case !s.ready.Load():
		return "not capturing (starting or shutting down)"
	case !s.captureNC.IsConnected() || !s.apiNC.IsConnected() || !s.replayNC.IsConnected() || !s.peersNC.IsConnected():
		return "NATS disconnected"
	case s.member != nil && !s.member.ready():
		return "not the group's leader nor an in-sync follower"
	}
	return ""
}
