package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/voik/voik/logstore"
)

// metrics are voik's Prometheus series. Labels are per capture filter or
// per API verb, never per subject: subjects are unbounded.
type metrics struct {
	messagesStored *prometheus.CounterVec // filter
	bytesStored    *prometheus.CounterVec // filter
	appendErrors   *prometheus.CounterVec // filter
	dropped        *prometheus.CounterVec // filter: slow-consumer drops
	duplicates     prometheus.Counter     // messages not stored: a repeat of a Nats-Msg-Id
	acks           *prometheus.CounterVec // result: ok, error
	requests       *prometheus.CounterVec // verb, code
	requestSeconds *prometheus.HistogramVec
	replayed       prometheus.Counter
	natsConnected  *prometheus.GaugeVec // role: capture, api, replay
	reconnects     prometheus.Counter
	disconnects    *prometheus.CounterVec // role
	slowConsumers  *prometheus.CounterVec // role
	overloaded     *prometheus.CounterVec // reason: budget, requester_share, long_polls, in_flight

	// Storage, fed by the store's Observer and by capture.
	appendSeconds    prometheus.Histogram
	batchRecords     prometheus.Histogram
	syncSeconds      prometheus.Histogram
	syncErrors       prometheus.Counter
	diskBytes        prometheus.Gauge
	retentionDeleted prometheus.Counter
	logOpens         *prometheus.CounterVec // outcome
}

// gaugeFuncs read figures the store and the API keep themselves.
type gaugeFuncs struct {
	openLogs   func() float64
	durableLag func() float64
	replyBytes func() float64
	longPolls  func() float64
}

func newMetrics(reg prometheus.Registerer, gauges gaugeFuncs) (*metrics, error) {
	latency := prometheus.ExponentialBuckets(0.00001, 4, 10) // 10µs .. 2.6s
	m := &metrics{
		messagesStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_messages_stored_total", Help: "Messages appended to subject logs.",
		}, []string{"filter"}),
		bytesStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_stored_bytes_total", Help: "Data plus header bytes appended to subject logs.",
		}, []string{"filter"}),
		appendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_append_errors_total", Help: "Captured messages that could not be appended.",
		}, []string{"filter"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_capture_dropped_total", Help: "Messages NATS dropped because capture fell behind (slow consumer).",
		}, []string{"filter"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_acks_total", Help: "Acknowledged appends answered, by result.",
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_api_requests_total", Help: "API requests answered, by verb and code (200 for success).",
		}, []string{"verb", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "voik_api_request_duration_seconds", Help: "Time to answer an API request, long-poll waits included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"verb"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_replayed_messages_total", Help: "Records published by REPLAY.",
		}),
		natsConnected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voik_nats_connected", Help: "1 while the NATS connection of the role (capture, api, replay) is up, 0 while it is down.",
		}, []string{"role"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_duplicates_total", Help: "Captured messages not stored because their Nats-Msg-Id was stored on their subject within VOIK_DEDUPE_WINDOW.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_nats_reconnects_total", Help: "NATS reconnections.",
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_nats_disconnects_total", Help: "NATS connections lost, by role (capture, api, replay); a server that cuts a slow consumer shows here.",
		}, []string{"role"}),
		slowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_nats_slow_consumer_total", Help: "Times nats.go dropped messages a connection's subscriptions could not take in time, by role; for capture, voik_capture_dropped_total counts the messages.",
		}, []string{"role"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_api_overloaded_total", Help: "API requests answered 503 for load, by reason: budget (VOIK_REPLY_BUDGET full), requester_share (one requester holds its share), long_polls (VOIK_MAX_LONG_POLLS waiting), in_flight.",
		}, []string{"reason"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voik_append_duration_seconds", Help: "Time to append a captured message to its log, opening or creating the log included.",
			Buckets: latency,
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voik_capture_batch_records", Help: "Records capture stored with one write: 1 for a message that came alone, more when NATS had several queued.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 to 512 (batchRecords)
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voik_sync_duration_seconds", Help: "Time of each fdatasync of a segment file.",
			Buckets: latency,
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_sync_errors_total", Help: "Failed fdatasyncs; the log refuses appends and acks until voik restarts.",
		}),
		diskBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_disk_bytes", Help: "Bytes the segment files take on disk (preallocated space included).",
		}),
		retentionDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_retention_deleted_segments_total", Help: "Segments deleted by retention.",
		}),
		logOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voik_log_opens_total", Help: "Subject logs opened, by what recovery found: clean, torn_tail, index_rebuilt or corrupt; failed when the log could not be opened at all (its reads answer 500).",
		}, []string{"outcome"}),
	}
	for _, outcome := range []string{"clean", "torn_tail", "index_rebuilt", "corrupt", "failed"} {
		m.logOpens.WithLabelValues(outcome) // present from the start, at 0
	}
	for _, role := range []string{"capture", "api", "replay", "peers"} {
		m.disconnects.WithLabelValues(role)
		m.slowConsumers.WithLabelValues(role)
	}
	for _, reason := range []string{"budget", "requester_share", "long_polls", "in_flight"} {
		m.overloaded.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{m.messagesStored, m.bytesStored, m.appendErrors, m.dropped, m.duplicates, m.acks,
		m.requests, m.requestSeconds, m.replayed, m.natsConnected, m.reconnects, m.disconnects, m.slowConsumers, m.overloaded,
		m.appendSeconds, m.batchRecords, m.syncSeconds, m.syncErrors, m.diskBytes, m.retentionDeleted, m.logOpens,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "voik_open_logs", Help: "Subject logs open now."}, gauges.openLogs),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "voik_durable_lag_records", Help: "Records appended to open logs and not yet durable.",
		}, gauges.durableLag),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "voik_api_reply_bytes", Help: "Bytes of the reply budget (VOIK_REPLY_BUDGET) held by API replies being built or sent.",
		}, gauges.replyBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "voik_api_long_polls", Help: "FETCH long polls waiting now (at most VOIK_MAX_LONG_POLLS).",
		}, gauges.longPolls),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// storeObserver turns the store's events into metrics. (The store logs
// what recovery repaired itself.)
type storeObserver struct{ m *metrics }

func (o storeObserver) Synced(elapsed time.Duration, err error) {
	o.m.syncSeconds.Observe(elapsed.Seconds())
	if err != nil {
		o.m.syncErrors.Inc()
	}
}

func (o storeObserver) DiskBytes(delta int64) { o.m.diskBytes.Add(float64(delta)) }

func (o storeObserver) RetentionDeleted(segments int) { o.m.retentionDeleted.Add(float64(segments)) }

func (o storeObserver) Recovered(_ string, r logstore.Recovery) {
	o.m.logOpens.WithLabelValues(r.Outcome()).Inc()
}

// segmentFileBytes sums the sizes of the segment files under dir: the
// starting point of voik_disk_bytes, which the store's events move after.
// A file that grows while the walk runs may be counted once too often, by
// at most what it grew meanwhile.
func segmentFileBytes(ctx context.Context, dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if name := d.Name(); !d.IsDir() && (strings.HasSuffix(name, ".log") || strings.HasSuffix(name, ".idx")) {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}
