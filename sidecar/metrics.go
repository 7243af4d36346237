package sidecar

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are voik's Prometheus series. Labels are per capture filter or
// per API verb, never per subject: subjects are unbounded.
type metrics struct {
	messagesStored *prometheus.CounterVec // filter
	bytesStored    *prometheus.CounterVec // filter
	appendErrors   *prometheus.CounterVec // filter
	dropped        *prometheus.CounterVec // filter: slow-consumer drops
	acks           *prometheus.CounterVec // result: ok, error
	requests       *prometheus.CounterVec // verb, code
	requestSeconds *prometheus.HistogramVec
	replayed       prometheus.Counter
	natsConnected  prometheus.Gauge
	reconnects     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, openLogs func() float64) (*metrics, error) {
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
		natsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_nats_connected", Help: "1 while the NATS connections are up.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_nats_reconnects_total", Help: "NATS reconnections.",
		}),
	}
	for _, c := range []prometheus.Collector{m.messagesStored, m.bytesStored, m.appendErrors, m.dropped, m.acks,
		m.requests, m.requestSeconds, m.replayed, m.natsConnected, m.reconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "voik_open_logs", Help: "Subject logs open now."}, openLogs),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
