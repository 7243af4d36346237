package e2e

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// scrape reads /metrics and returns the families by name.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// metricValue is the value of the series of family name whose labels
// include want (name=value pairs); counters, gauges and histogram counts.
func metricValue(t *testing.T, families map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	family := families[name]
	if family == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range family.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series of %s with labels %v", name, want)
	return 0
}

// TestMetricsMoveWithTraffic scrapes /metrics after captures, acked
// appends, fetches and a 404, and checks that every figure an operator
// alerts on moved, with names that follow Prometheus conventions and no
// per-subject labels.
func TestMetricsMoveWithTraffic(t *testing.T) {
	e := startWith(t, nil, func(c *config.Config) { c.Subjects = "metrics.>" })
	v, nc := e.voik, e.nc
	before := scrape(t, v.Sidecar.HTTPAddr())
	if got := metricValue(t, before, "voik_nats_connected", "role", "capture"); got != 1 {
		t.Fatalf("voik_nats_connected{role=capture} %v while connected", got)
	}

	const n = 50
	for i := 0; i < n; i++ {
		if err := nc.Publish("metrics.orders", []byte("order")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := v.Client.Append(ctx, "metrics.acked", nats.Header{"K": {"v"}}, []byte("acked")); err != nil {
		t.Fatal(err)
	}
	e.waitForEnd("metrics.orders", n)
	if _, err := v.Client.Fetch(ctx, "metrics.orders", messages.FetchRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client.Fetch(ctx, "metrics.nothing", messages.FetchRequest{}); err == nil {
		t.Fatal("fetch of an unknown subject succeeded")
	}

	after := scrape(t, v.Sidecar.HTTPAddr())
	atLeast := func(name string, min float64, labels ...string) {
		t.Helper()
		if got := metricValue(t, after, name, labels...); got < min {
			t.Errorf("%s%v = %v, want at least %v", name, labels, got, min)
		}
	}
	atLeast("voik_messages_stored_total", n+1, "filter", "metrics.>")
	atLeast("voik_stored_bytes_total", float64(n*len("order")), "filter", "metrics.>")
	atLeast("voik_append_duration_seconds", n+1)
	atLeast("voik_sync_duration_seconds", 1)
	atLeast("voik_acks_total", 1, "result", "ok")
	atLeast("voik_api_requests_total", 1, "verb", "FETCH", "code", "200")
	atLeast("voik_api_requests_total", 1, "verb", "FETCH", "code", "404")
	atLeast("voik_api_request_duration_seconds", 2, "verb", "FETCH")
	atLeast("voik_log_opens_total", 2, "outcome", "clean")
	atLeast("voik_open_logs", 2)
	atLeast("voik_disk_bytes", 2*4096)
	// Present (at zero) before anything goes wrong, so alerts have a series.
	for _, name := range []string{"voik_durable_lag_records", "voik_sync_errors_total",
		"voik_retention_deleted_segments_total", "voik_nats_reconnects_total"} {
		if after[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	for name, family := range after {
		if !strings.HasPrefix(name, "voik_") {
			continue
		}
		if family.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		for _, m := range family.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "subject" {
					t.Errorf("%s has a per-subject label", name)
				}
			}
		}
	}
}

// TestReadyzFailsWhileNATSIsDown: /readyz is 503 while voik cannot reach
// NATS (so Kubernetes takes it out of service) and ready again after it
// reconnects; voik_nats_connected follows, and the reconnect is counted.
func TestReadyzFailsWhileNATSIsDown(t *testing.T) {
	ns := harness.StartNATS(t)
	addr := ns.Addr().(*net.TCPAddr)
	cfg := harness.TestConfig(t, ns.ClientURL())
	v := harness.StartVoik(t, cfg)
	readyz := func() int { return readyzStatus(t, v.Sidecar.HTTPAddr()) }
	if code := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz %d while connected", code)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	harness.Eventually(t, 10*time.Second, "/readyz 503 while NATS is down", func() bool { return readyz() == http.StatusServiceUnavailable })
	harness.Eventually(t, 10*time.Second, "voik_nats_connected 0 while NATS is down", func() bool {
		return metricValue(t, scrape(t, v.Sidecar.HTTPAddr()), "voik_nats_connected", "role", "capture") == 0
	})

	// The same address again: voik reconnects on its own.
	harness.StartNATS(t, harness.WithOptions(func(o *server.Options) { o.Host, o.Port = addr.IP.String(), addr.Port }))
	harness.Eventually(t, 30*time.Second, "/readyz 200 after NATS is back", func() bool { return readyz() == http.StatusOK })
	// The gauge is set by nats.go's reconnect callback, which runs just
	// after the connection reports itself connected.
	harness.Eventually(t, 10*time.Second, "voik_nats_connected 1 and a reconnect counted", func() bool {
		families := scrape(t, v.Sidecar.HTTPAddr())
		return metricValue(t, families, "voik_nats_connected", "role", "capture") == 1 &&
			metricValue(t, families, "voik_nats_connected", "role", "api") == 1 &&
			metricValue(t, families, "voik_nats_reconnects_total") >= 2
	})
}

// TestGrafanaDashboardUsesRealMetrics: every series the example dashboard
// (charts/voik/dashboards/voik-grafana.json) queries is one voik exports,
// so renaming a metric without the dashboard fails here.
func TestGrafanaDashboardUsesRealMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "charts", "voik", "dashboards", "voik-grafana.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	ns := harness.StartNATS(t)
	v := harness.StartVoik(t, harness.TestConfig(t, ns.ClientURL()))
	// Series with labels appear once used: one API request and one ack.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := v.Client.Append(ctx, "dashboard.orders", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client.Info(ctx, "dashboard.orders"); err != nil {
		t.Fatal(err)
	}
	families := scrape(t, v.Sidecar.HTTPAddr())
	// The replication panels query a group member's series: a group of one.
	js := harness.StartNATS(t, harness.WithJetStream(t.TempDir()))
	cfg := harness.TestConfig(t, js.ClientURL())
	cfg.Group, cfg.Instance, cfg.Replicas = "dashboard", "m0", 1
	member := harness.StartVoik(t, cfg)
	harness.Eventually(t, 30*time.Second, "an ack from the group's leader", func() bool {
		actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := member.Client.Append(actx, "dashboard.orders", nil, []byte("x"))
		return err == nil
	})
	for metric, family := range scrape(t, member.Sidecar.HTTPAddr()) {
		if families[metric] == nil {
			families[metric] = family
		}
	}
	name := regexp.MustCompile(`voik_[a-z_]+`)
	queried := 0
	for _, panel := range dashboard.Panels {
		for _, target := range panel.Targets {
			for _, metric := range name.FindAllString(target.Expr, -1) {
				queried++
				if families[metric] != nil {
					continue
				}
				// A histogram's series: name_bucket, name_sum, name_count.
				base := metric
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					base = strings.TrimSuffix(base, suffix)
				}
				if families[base] == nil || families[base].GetType() != dto.MetricType_HISTOGRAM {
					t.Errorf("panel %q queries %s, which voik does not export", panel.Title, metric)
				}
			}
		}
	}
	if queried < 10 {
		t.Fatalf("the dashboard queries only %d series", queried)
	}
}

// TestDiskBytesAfterRestartMatchTheFiles: voik_disk_bytes starts from a
// walk of the data dir (in the background, so a big store does not delay
// readiness) and then follows the store: after a restart it equals the
// segment files on disk.
func TestDiskBytesAfterRestartMatchTheFiles(t *testing.T) {
	ns := harness.StartNATS(t)
	cfg := harness.TestConfig(t, ns.ClientURL())
	v := harness.StartVoik(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, subject := range []string{"disk.a", "disk.b", "disk.c"} {
		if _, err := v.Client.Append(ctx, subject, nil, make([]byte, 5000)); err != nil {
			t.Fatal(err)
		}
	}
	v.Stop(t)
	var onDisk int64
	if err := filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".log") || strings.HasSuffix(path, ".idx")) {
			info, err := d.Info()
			if err != nil {
				return err
			}
			onDisk += info.Size()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if onDisk == 0 {
		t.Fatal("no segment files")
	}
	v = harness.StartVoik(t, cfg)
	harness.Eventually(t, 10*time.Second, "voik_disk_bytes equal to the files on disk", func() bool {
		return metricValue(t, scrape(t, v.Sidecar.HTTPAddr()), "voik_disk_bytes") == float64(onDisk)
	})
}

// metric reads one series of voik's /metrics now (labels as name=value).
func (e *e2e) metric(name string, labels ...string) float64 {
	e.t.Helper()
	return metricValue(e.t, scrape(e.t, e.voik.Sidecar.HTTPAddr()), name, labels...)
}

// TestAFrozenNATSServerIsNoticedByPings: a server that keeps its sockets
// open and answers nothing (SIGSTOP, a black-holing link) is noticed only
// by voik's pings, since TCP sees nothing wrong. With
// VOIK_NATS_PING_INTERVAL 1s and 3 pings outstanding the connection
// counts as lost after at most four intervals (4 s); /readyz says so.
// Without the pings wired in (nats.go's own default is two minutes) the
// freeze would go unnoticed past the 30 s wait. The time it took is
// logged, not asserted: this machine is shared and a scheduling stall is
// not a failure of voik. Once the server answers again voik reconnects,
// is ready, and captures.
func TestAFrozenNATSServerIsNoticedByPings(t *testing.T) {
	t.Parallel()
	ns := harness.StartNATS(t)
	proxy := harness.StartFreezeProxy(t, ns.Addr().String())
	cfg := harness.TestConfig(t, proxy.URL())
	cfg.Subjects = "frozen.>"
	cfg.NatsPingInterval = time.Second
	cfg.NatsMaxPingsOut = 3
	v := harness.StartVoik(t, cfg, harness.WithoutClient())
	readyz := func() int { return readyzStatus(t, v.Sidecar.HTTPAddr()) }
	if code := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz %d before the freeze", code)
	}
	proxy.Freeze()
	frozen := time.Now()
	harness.Eventually(t, 30*time.Second, "/readyz 503 with NATS frozen", func() bool { return readyz() == http.StatusServiceUnavailable })
	t.Logf("a frozen NATS server noticed after %v (bound from the settings: 4 s)", time.Since(frozen).Round(100*time.Millisecond))
	proxy.Thaw()
	harness.Eventually(t, 30*time.Second, "/readyz 200 once NATS answers again", func() bool { return readyz() == http.StatusOK })
	nc := harness.Connect(t, ns.ClientURL())
	api := client.New(nc, cfg.APIPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := api.Append(ctx, "frozen.after", nil, []byte("x")); err != nil {
		t.Fatalf("acked append after the thaw: %v", err)
	}
}

// readyzStatus is the status code of voik's /readyz at addr.
func readyzStatus(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
