package sidecar

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voik/voik/sidecar/lease"
)

// groupMetrics are a member's series (registered in a group only).
type groupMetrics struct {
	role          *prometheus.GaugeVec // role: 1 for this member's
	epoch         prometheus.Gauge
	elections     prometheus.Counter
	lagRecords    prometheus.Gauge
	lagSeconds    prometheus.Gauge
	commitSeconds prometheus.Histogram
	truncated     prometheus.Counter
	pulled        prometheus.Histogram
	reachable     prometheus.Gauge
	inSync        prometheus.Gauge
	replicas      prometheus.Gauge
}

func newGroupMetrics(reg prometheus.Registerer) (*groupMetrics, error) {
	g := &groupMetrics{
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voik_group_role", Help: "1 for this member's role in its group (leader, follower, candidate), 0 for the others.",
		}, []string{"role"}),
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_group_epoch", Help: "The group's leader epoch as this member last saw it.",
		}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_group_elections_total", Help: "Times this member took the lead.",
		}),
		lagRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_group_replication_lag_records", Help: "Committed records this member does not hold yet.",
		}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_group_replication_lag_seconds", Help: "On a follower, how long since it last had copied everything the leader had.",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voik_group_commit_seconds", Help: "On the leader, from an acked run's durability here to its commit by the in-sync set.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voik_group_truncated_records_total", Help: "Records dropped on rejoining because they were never committed.",
		}),
		pulled: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voik_group_pulled_records", Help: "On a follower, records copied by each pull that brought any: small batches cost more per record (a round trip, a sync each).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 .. 16,384
		}),
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_group_state_reachable", Help: "1 while the group's state in JetStream answers; 0 while it does not (no quorum): no member can lead, and nothing is captured.",
		}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_group_in_sync_members", Help: "Members in the group's stored in-sync set, as this member last read it; while fewer than a majority of voik_group_replicas, nothing commits.",
		}),
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voik_group_replicas", Help: "The group's size, VOIK_REPLICAS; a majority is half of it plus one.",
		}),
	}
	for _, c := range []prometheus.Collector{g.role, g.epoch, g.elections, g.lagRecords, g.lagSeconds, g.commitSeconds, g.truncated, g.pulled, g.reachable, g.inSync, g.replicas} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// observe sets the gauges from the member's state.
func (g *groupMetrics) observe(m *member) {
	role := m.role()
	for _, r := range []lease.Role{lease.Leader, lease.Follower, lease.Candidate} {
		v := 0.0
		if r == role {
			v = 1
		}
		g.role.WithLabelValues(r.String()).Set(v)
	}
	obs := m.elector.Observed()
	g.epoch.Set(float64(obs.Epoch))
	g.inSync.Set(float64(len(obs.State.InSync)))
	g.replicas.Set(float64(m.s.cfg.Replicas))
	if m.unreachable {
		g.reachable.Set(0)
	} else {
		g.reachable.Set(1)
	}
	g.lagRecords.Set(float64(m.committedLag()))
}

// committedLag is how many committed records this member does not hold.
func (m *member) committedLag() uint64 {
	if m.lead.Load() != nil {
		return 0
	}
	told, held := m.leaderCommitted.Load(), m.journal.End()
	return told - min(told, held)
}

// groupStatus is the member's state as JSON (GET /group); 404 standalone.
type groupStatus struct {
	Group        string `json:"group"`
	Instance     string `json:"instance"`
	Role         string `json:"role"`
	Leader       string `json:"leader"`
	Epoch        uint64 `json:"epoch"`
	CommittedLag uint64 `json:"committed_lag"`
}

func (s *Sidecar) groupStatus(w http.ResponseWriter, _ *http.Request) {
	m := s.member
	if m == nil {
		http.Error(w, "standalone: not in a group", http.StatusNotFound)
		return
	}
	select {
	case <-s.started:
	default:
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	obs := m.elector.Observed()
	status := groupStatus{Group: m.name, Instance: m.self.Instance, Role: m.role().String(),
		Leader: obs.State.Leader, Epoch: obs.Epoch, CommittedLag: m.committedLag()}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(status)
}
