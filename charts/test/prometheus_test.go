package charttest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// promParser is Prometheus's PromQL parser with its default options, as
// Prometheus parses rules and Grafana's queries.
var promParser = parser.NewParser(parser.Options{})

// voikMetrics are the series voik exports, read from the sidecar's source
// (sidecar/*.go): metric name -> its kind (Counter, Gauge, Histogram).
func voikMetrics(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "sidecar", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sidecar/*.go (%v)", err)
	}
	declared := regexp.MustCompile(`(Counter|Gauge|Histogram)Opts\{\s*Name:\s*"(voik_[a-z0-9_]+)"`)
	metrics := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range declared.FindAllStringSubmatch(string(data), -1) {
			metrics[m[2]] = m[1]
		}
	}
	if len(metrics) < 20 {
		t.Fatalf("found only %d metrics in sidecar/*.go", len(metrics))
	}
	return metrics
}

// checkQuery parses a PromQL query and checks that every voik_ series it
// selects is one voik exports (a histogram's by _bucket, _sum or _count),
// and any other is one of others. It returns the selectors.
func checkQuery(t *testing.T, where, query string, metrics map[string]string, others ...string) []*parser.VectorSelector {
	t.Helper()
	expr, err := promParser.ParseExpr(query)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, query, err)
		return nil
	}
	var selectors []*parser.VectorSelector
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			selectors = append(selectors, vs)
		}
		return nil
	})
	for _, vs := range selectors {
		name := vs.Name
		if !strings.HasPrefix(name, "voik_") {
			if !slices.Contains(others, name) {
				t.Errorf("%s: selects %q", where, name)
			}
			continue
		}
		if metrics[name] != "" {
			continue
		}
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if metrics[base] != "Histogram" {
			t.Errorf("%s: %s is not a series voik exports (sidecar/*.go)", where, name)
		}
	}
	return selectors
}

// alertTemplate checks an annotation as Prometheus expands it: Go
// templating with $labels, $value and $externalLabels defined.
func alertTemplate(t *testing.T, where, text string) string {
	t.Helper()
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	tmpl, err := template.New(where).Option("missingkey=zero").Parse(defs + text)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return ""
	}
	var out strings.Builder
	data := map[string]any{"Labels": map[string]string{"pod": "hist-voik-1", "persistentvolumeclaim": "data-hist-voik-1"},
		"ExternalLabels": map[string]string{}, "ExternalURL": "", "Value": 42.0}
	if err := tmpl.Execute(&out, data); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	return out.String()
}

// rules renders the chart and returns its PrometheusRule's alerts by name
// (nil when there is no PrometheusRule).
func rules(t *testing.T, files []string, flags ...string) (map[string]monitoringv1.Rule, []manifest) {
	t.Helper()
	manifests := render(t, files, append([]string{"--api-versions", "monitoring.coreos.com/v1"}, flags...)...)
	found := all[*monitoringv1.PrometheusRule](manifests)
	if len(found) == 0 {
		return nil, manifests
	}
	if len(found) > 1 || len(found[0].Spec.Groups) != 1 {
		t.Fatalf("%d PrometheusRules, want one with one group", len(found))
	}
	alerts := map[string]monitoringv1.Rule{}
	for _, r := range found[0].Spec.Groups[0].Rules {
		if r.Alert == "" {
			t.Errorf("a rule without an alert name: %+v", r)
		}
		if _, dup := alerts[r.Alert]; dup {
			t.Errorf("alert %s twice", r.Alert)
		}
		alerts[r.Alert] = r
	}
	return alerts, manifests
}

var groupAlerts = []string{"VoikGroupNoLeader", "VoikGroupMajorityDown", "VoikGroupInSyncBelowMajority",
	"VoikReplicationLagRecords", "VoikReplicationLagSeconds", "VoikGroupStateUnreachable"}

// TestPrometheusRule: made only where the Prometheus Operator's API is
// served and the values ask; every alert's query parses and selects series
// voik exports, of this release's pods only (the ServiceMonitor's job and
// the namespace), with the thresholds of the values; its annotations
// expand.
func TestPrometheusRule(t *testing.T) {
	metrics := voikMetrics(t)
	if n := len(all[*monitoringv1.PrometheusRule](render(t, nil, required...))); n != 0 {
		t.Error("a PrometheusRule although the cluster does not serve monitoring.coreos.com/v1")
	}
	if off, _ := rules(t, nil, append(required, "--set", "prometheusRule.enabled=false")...); off != nil {
		t.Error("a PrometheusRule with prometheusRule.enabled=false")
	}

	alerts, manifests := rules(t, nil, required...)
	want := append(slices.Clone(groupAlerts), "VoikDiskNearlyFull", "VoikCaptureDropped")
	if got := slices.Sorted(maps.Keys(alerts)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("alerts %v, want %v", got, want)
	}
	// The job label Prometheus gives the scraped series is the Service's
	// name (the Prometheus Operator's default): the one the ServiceMonitor
	// selects.
	sm := only[*monitoringv1.ServiceMonitor](t, manifests)
	var job string
	for _, svc := range all[*corev1.Service](manifests) {
		if svc.Labels["voik/service"] == sm.Spec.Selector.MatchLabels["voik/service"] {
			job = svc.Name
		}
	}
	s := only[*appsv1.StatefulSet](t, manifests)
	claim := s.Spec.VolumeClaimTemplates[0].Name + "-" + s.Name + "-"
	for name, r := range alerts {
		for _, vs := range checkQuery(t, name, exprOf(r), metrics, "up", "kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes") {
			matchers := map[string]*labels.Matcher{}
			for _, m := range vs.LabelMatchers {
				matchers[m.Name] = m
			}
			if ns := matchers["namespace"]; ns == nil || !ns.Matches(namespace) || ns.Matches("other") {
				t.Errorf("%s: %s is not limited to the release's namespace", name, vs)
			}
			if strings.HasPrefix(vs.Name, "kubelet_") {
				pvc := matchers["persistentvolumeclaim"]
				for i := range 3 {
					if pvc == nil || !pvc.Matches(fmt.Sprintf("%s%d", claim, i)) {
						t.Errorf("%s: %s misses the claim %s%d", name, vs, claim, i)
					}
				}
				if pvc == nil || pvc.Matches("data-other-voik-0") || pvc.Matches(claim+"0-x") {
					t.Errorf("%s: %s takes other claims", name, vs)
				}
				continue
			}
			if j := matchers["job"]; j == nil || !j.Matches(job) || j.Matches("other-voik") {
				t.Errorf("%s: %s is not limited to the job %q", name, vs, job)
			}
		}
		if _, err := model.ParseDuration(string(*r.For)); err != nil {
			t.Errorf("%s: for %q: %v", name, *r.For, err)
		}
		if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
			t.Errorf("%s: severity %q", name, sev)
		}
		for _, key := range []string{"summary", "description"} {
			if text := alertTemplate(t, name+" "+key, r.Annotations[key]); strings.TrimSpace(text) == "" || strings.Contains(text, "<no value>") {
				t.Errorf("%s: %s expands to %q", name, key, text)
			}
		}
	}
	if got := exprOf(alerts["VoikGroupMajorityDown"]); !strings.HasSuffix(got, "< 2") {
		t.Errorf("VoikGroupMajorityDown %q: the majority of 3 is 2", got)
	}

	t.Run("values", func(t *testing.T) {
		alerts, manifests := rules(t, []string{"ci/credentials-tls-values.yaml"})
		pr := only[*monitoringv1.PrometheusRule](t, manifests)
		if pr.Labels["release"] != "kube-prometheus-stack" {
			t.Errorf("rule labels %v", pr.Labels)
		}
		if _, ok := alerts["VoikGroupInSyncBelowMajority"]; ok {
			t.Error("VoikGroupInSyncBelowMajority made although disabled")
		}
		for name, r := range alerts {
			if r.Labels["team"] != "history" {
				t.Errorf("%s: labels %v, want alertLabels' team", name, r.Labels)
			}
			if expr := exprOf(r); name != "VoikDiskNearlyFull" && !strings.Contains(expr, `job="voik-history",cluster="eu-1"`) {
				t.Errorf("%s: %q does not use prometheusRule.selector", name, expr)
			}
		}
		for name, want := range map[string]string{
			"VoikReplicationLagRecords": "> 50000", "VoikReplicationLagSeconds": "> 120",
			"VoikDiskNearlyFull": "< 0.2", "VoikCaptureDropped": "[10m]",
		} {
			if !strings.Contains(exprOf(alerts[name]), want) {
				t.Errorf("%s: %q does not say %q", name, exprOf(alerts[name]), want)
			}
		}
		if f := alerts["VoikReplicationLagRecords"].For; f == nil || *f != "10m" {
			t.Errorf("lag for %v, want 10m", f)
		}
		if f := alerts["VoikGroupNoLeader"].For; f == nil || *f != "30s" {
			t.Errorf("no leader for %v, want 30s", f)
		}
	})

	t.Run("majority of five", func(t *testing.T) {
		alerts, _ := rules(t, []string{"ci/nkey-values.yaml"})
		if got := exprOf(alerts["VoikGroupMajorityDown"]); !strings.HasSuffix(got, "< 3") {
			t.Errorf("VoikGroupMajorityDown %q: the majority of 5 is 3", got)
		}
	})

	// Standalone on an emptyDir: no group and no claim to watch, so only
	// the capture alert; with that off too, no PrometheusRule at all.
	t.Run("standalone", func(t *testing.T) {
		alerts, _ := rules(t, []string{"ci/token-ephemeral-values.yaml"}, "--set", "prometheusRule.enabled=true")
		if got := slices.Sorted(maps.Keys(alerts)); !slices.Equal(got, []string{"VoikCaptureDropped"}) {
			t.Errorf("alerts %v, want VoikCaptureDropped alone", got)
		}
		none, _ := rules(t, []string{"ci/token-ephemeral-values.yaml"}, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.alerts.captureDropped.enabled=false")
		if none != nil {
			t.Errorf("a PrometheusRule with no alert: %v", none)
		}
	})
}

// TestPrometheusRuleAlertsFire evaluates the default alerts' queries with
// Prometheus's own engine over made-up series of a group of three (and of
// another release in the same namespace, which must not count): each
// scenario fires exactly the alerts it should, on the pod it should.
func TestPrometheusRuleAlertsFire(t *testing.T) {
	alerts, _ := rules(t, nil, required...)
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute})
	const gib = 1 << 30
	pods := []string{"hist-voik-0", "hist-voik-1", "hist-voik-2"}
	// healthy is a group of three at rest: pod 0 leads, all in sync.
	healthy := func() *memSeries {
		m := &memSeries{}
		for i, pod := range pods {
			role := "follower"
			if i == 0 {
				role = "leader"
			}
			for _, r := range []string{"leader", "follower", "candidate"} {
				m.gauge(pod, "voik_group_role", map[string]string{"role": r}, b2f(r == role))
			}
			m.gauge(pod, "up", nil, 1)
			m.gauge(pod, "voik_group_in_sync_members", nil, 3)
			m.gauge(pod, "voik_group_replicas", nil, 3)
			m.gauge(pod, "voik_group_replication_lag_records", nil, 0)
			m.gauge(pod, "voik_group_replication_lag_seconds", nil, 0)
			m.gauge(pod, "voik_group_state_reachable", nil, 1)
			m.counter(pod, "voik_capture_dropped_total", map[string]string{"filter": "orders.>"}, 0)
			m.volume("data-"+pod, 8*gib, 10*gib)
		}
		// Another release in the namespace, leaderless and lagging: none
		// of it may show in this release's alerts.
		for _, r := range []string{"leader", "follower", "candidate"} {
			m.series(map[string]string{"__name__": "voik_group_role", "job": "other-voik", "namespace": namespace, "pod": "other-voik-0", "role": r}, constant(b2f(r == "candidate")))
		}
		m.series(map[string]string{"__name__": "voik_group_replication_lag_records", "job": "other-voik", "namespace": namespace, "pod": "other-voik-0"}, constant(1e9))
		m.volume("data-other-voik-0", 0, 10*gib)
		return m
	}
	for _, tc := range []struct {
		name   string
		change func(m *memSeries)
		fire   map[string]string // alert -> the pod it fires on ("" for a group-wide one)
	}{
		{"healthy", func(*memSeries) {}, nil},
		{"no leader", func(m *memSeries) {
			m.gauge(pods[0], "voik_group_role", map[string]string{"role": "leader"}, 0)
			m.gauge(pods[0], "voik_group_role", map[string]string{"role": "candidate"}, 1)
		}, map[string]string{"VoikGroupNoLeader": ""}},
		{"two of three down", func(m *memSeries) {
			m.gauge(pods[1], "up", nil, 0)
			m.gauge(pods[2], "up", nil, 0)
		}, map[string]string{"VoikGroupMajorityDown": ""}},
		{"none scraped", func(m *memSeries) { *m = memSeries{} }, map[string]string{"VoikGroupMajorityDown": ""}},
		{"in-sync set of one", func(m *memSeries) {
			for _, pod := range pods {
				m.gauge(pod, "voik_group_in_sync_members", nil, 1)
			}
		}, map[string]string{"VoikGroupInSyncBelowMajority": pods[0]}},
		{"in-sync set of two", func(m *memSeries) {
			m.gauge(pods[0], "voik_group_in_sync_members", nil, 2)
		}, nil},
		{"a follower behind", func(m *memSeries) {
			m.gauge(pods[2], "voik_group_replication_lag_records", nil, 20000)
			m.gauge(pods[2], "voik_group_replication_lag_seconds", nil, 45)
		}, map[string]string{"VoikReplicationLagRecords": pods[2], "VoikReplicationLagSeconds": pods[2]}},
		{"a follower a little behind", func(m *memSeries) {
			m.gauge(pods[2], "voik_group_replication_lag_records", nil, 9000)
			m.gauge(pods[2], "voik_group_replication_lag_seconds", nil, 20)
		}, nil},
		{"JetStream without quorum", func(m *memSeries) {
			m.gauge(pods[1], "voik_group_state_reachable", nil, 0)
		}, map[string]string{"VoikGroupStateUnreachable": pods[1]}},
		{"a volume nearly full", func(m *memSeries) {
			m.volume("data-"+pods[1], gib/2, 10*gib)
		}, map[string]string{"VoikDiskNearlyFull": ""}},
		{"drops", func(m *memSeries) {
			m.series(m.labels(pods[0], "voik_capture_dropped_total", map[string]string{"filter": "orders.>"}), func(at time.Duration) float64 {
				if at >= 8*time.Minute {
					return 5
				}
				return 0
			})
		}, map[string]string{"VoikCaptureDropped": pods[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := healthy()
			tc.change(m)
			for name, r := range alerts {
				got := evalAt(t, engine, m, exprOf(r), 10*time.Minute)
				pod, want := tc.fire[name]
				if !want {
					if len(got) != 0 {
						t.Errorf("%s fires: %v", name, got)
					}
					continue
				}
				if len(got) != 1 {
					t.Errorf("%s: %v, want it to fire once", name, got)
					continue
				}
				if g := got[0].Metric.Get("pod"); g != pod {
					t.Errorf("%s fires on pod %q, want %q", name, g, pod)
				}
			}
		})
	}
}

// memSeries is an in-memory Prometheus storage: series with a value at
// every 30s over ten minutes.
type memSeries struct {
	all []storage.Series
	// by series labels, so that a later series replaces an earlier one
	index map[string]int
}

func constant(v float64) func(time.Duration) float64 { return func(time.Duration) float64 { return v } }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *memSeries) labels(pod, name string, extra map[string]string) map[string]string {
	l := map[string]string{"__name__": name, "job": release + "-voik", "namespace": namespace, "pod": pod, "instance": pod + ":8333"}
	maps.Copy(l, extra)
	return l
}

func (m *memSeries) gauge(pod, name string, extra map[string]string, v float64) {
	m.series(m.labels(pod, name, extra), constant(v))
}

func (m *memSeries) counter(pod, name string, extra map[string]string, v float64) {
	m.series(m.labels(pod, name, extra), constant(v))
}

// volume is the kubelet's two series of a claim (no pod or job labels:
// the kubelet's own).
func (m *memSeries) volume(claim string, available, capacity float64) {
	for name, v := range map[string]float64{"kubelet_volume_stats_available_bytes": available, "kubelet_volume_stats_capacity_bytes": capacity} {
		m.series(map[string]string{"__name__": name, "job": "kubelet", "namespace": namespace, "persistentvolumeclaim": claim}, constant(v))
	}
}

func (m *memSeries) series(l map[string]string, value func(time.Duration) float64) {
	lset := labels.FromMap(l)
	var samples []chunks.Sample
	for at := time.Duration(0); at <= 10*time.Minute; at += 30 * time.Second {
		samples = append(samples, memSample{t: at.Milliseconds(), f: value(at)})
	}
	if m.index == nil {
		m.index = map[string]int{}
	}
	s := storage.NewListSeries(lset, samples)
	if i, ok := m.index[lset.String()]; ok {
		m.all[i] = s
		return
	}
	m.index[lset.String()] = len(m.all)
	m.all = append(m.all, s)
}

func (m *memSeries) Querier(int64, int64) (storage.Querier, error) { return memQuerier{m}, nil }

type memQuerier struct{ m *memSeries }

func (q memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var found []storage.Series
	for _, s := range q.m.all {
		if slices.IndexFunc(matchers, func(mt *labels.Matcher) bool { return !mt.Matches(s.Labels().Get(mt.Name)) }) < 0 {
			found = append(found, s)
		}
	}
	slices.SortFunc(found, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &memSet{series: found, i: -1}
}

func (memQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memQuerier) Close() error { return nil }

type memSet struct {
	series []storage.Series
	i      int
}

func (s *memSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *memSet) At() storage.Series                { return s.series[s.i] }
func (s *memSet) Err() error                        { return nil }
func (s *memSet) Warnings() annotations.Annotations { return nil }

type memSample struct {
	t int64
	f float64
}

func (s memSample) T() int64                      { return s.t }
func (s memSample) ST() int64                     { return 0 }
func (s memSample) F() float64                    { return s.f }
func (s memSample) H() *histogram.Histogram       { return nil }
func (s memSample) FH() *histogram.FloatHistogram { return nil }
func (s memSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s memSample) Copy() chunks.Sample           { return s }

// evalAt evaluates query at the time at (from the series' start) and
// returns the vector it gives.
func evalAt(t *testing.T, engine *promql.Engine, m *memSeries, query string, at time.Duration) promql.Vector {
	t.Helper()
	ctx := context.Background()
	q, err := engine.NewInstantQuery(ctx, m, nil, query, time.UnixMilli(at.Milliseconds()))
	if err != nil {
		t.Fatalf("%q: %v", query, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		t.Fatalf("%q: %v", query, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		t.Fatalf("%q: %v", query, err)
	}
	return v
}

// TestDashboard: every query of the example Grafana dashboard parses, and
// selects series voik exports (so a metric renamed in the sidecar fails
// here, and in e2e's TestGrafanaDashboardUsesRealMetrics); the replication
// panels are there; panels have unique ids and do not overlap.
func TestDashboard(t *testing.T) {
	metrics := voikMetrics(t)
	raw, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "voik-grafana.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct {
				X, Y, W, H int
			} `json:"gridPos"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatal(err)
	}
	queried := map[string]bool{}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range dashboard.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap", p.Title, other)
					goto next
				}
				taken[cell{x, y}] = p.Title
			}
		}
	next:
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q is wider than the dashboard", p.Title)
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			for _, vs := range checkQuery(t, p.Title, target.Expr, metrics) {
				queried[vs.Name] = true
			}
		}
	}
	for _, name := range []string{
		"voik_group_role", "voik_group_replication_lag_records", "voik_group_replication_lag_seconds",
		"voik_group_elections_total", "voik_group_commit_seconds_bucket", "voik_group_in_sync_members",
		"voik_group_replicas", "voik_group_state_reachable",
	} {
		if !queried[name] {
			t.Errorf("no panel queries %s", name)
		}
	}
}

func exprOf(r monitoringv1.Rule) string { return r.Expr.String() }
