package bench

import (
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
)

// The groups part: how far splitting subjects across groups goes on this
// machine. The same burst, half on each of two subjects, is captured by
// one group of three that takes both, then by two groups of three (six
// members on the same three NATS servers) that take one each, on one API
// prefix. Each run reports the machine's CPU saturation beside its rate:
// on a machine with few cores, the second run shows contention, not
// scale.
const (
	ScenarioGroupsOne = "groups: one group, 2 subjects"
	ScenarioGroupsTwo = "groups: two groups, 1 each"
)

// groupsSubjects are the two subjects of the split.
var groupsSubjects = [2]string{"bench.split.a", "bench.split.b"}

// groupsSplit runs the burst against one group, then two, each on a
// cluster of its own.
func (s *sizeRun) groupsSplit(e *Env) {
	if !s.groupRuns(e) {
		return
	}
	s.splitRun(e, false)
	s.splitRun(e, true)
}

// splitRun starts the group or groups, then times the burst: both halves
// published at once, each from a publisher beside its group's leader,
// until both subjects' committed ends hold their halves.
func (s *sizeRun) splitRun(e *Env, two bool) {
	cluster := harness.StartNATSCluster(e, 3)
	scenario, note := ScenarioGroupsOne, "one group of 3 takes both subjects"
	filters := []string{groupsSubjects[0] + "," + groupsSubjects[1]}
	if two {
		scenario, note = ScenarioGroupsTwo, "two groups of 3 (6 members on the 3 servers), one subject each"
		filters = []string{groupsSubjects[0], groupsSubjects[1]}
	}
	var groups []*voikGroup
	for i, f := range filters {
		groups = append(groups, s.startNamedGroup(e, cluster, fmt.Sprintf("split%d", i), f, "batch", 0))
	}
	pubs := [2]*nats.Conn{}
	for i := range pubs {
		g := groups[min(i, len(groups)-1)]
		pubs[i] = harness.Connect(e, cluster.ClientURL(g.waitLeader(e)))
	}
	half := s.messages / 2
	counts := [2]func() int{}
	for i, subject := range groupsSubjects {
		counts[i] = voikUnderTest{api: groups[min(i, len(groups)-1)].api}.stored(s.ctx, subject)
	}
	both := func() int { return counts[0]() + counts[1]() }
	stop := watch(s.opts.Progress, scenario, 2*half, both)
	defer stop()
	before, errCPU := harness.ReadMachineCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i, subject := range groupsSubjects {
		wg.Add(1)
		go func() { defer wg.Done(); publishBurst(e, pubs[i], subject, s.payload, half) }()
	}
	wg.Wait()
	got, at := waitCount(both, 2*half, s.opts.Stall, 2*time.Millisecond)
	after, errCPU2 := harness.ReadMachineCPU()
	f := Figure{Size: s.size, Scenario: scenario, Messages: 2 * half, Done: got}
	f.throughput(at.Sub(start))
	if errCPU == nil && errCPU2 == nil {
		f.Note = fmt.Sprintf("%s; machine CPU %.0f%% busy (%d CPUs)", note, 100*before.Saturation(after), after.CPUs)
	} else {
		f.Note = note + "; machine CPU not read"
	}
	if !two {
		// What a member's disk holds for the burst: its data dir, the
		// journal and preallocated segments included.
		var most int64
		for _, p := range groups[0].members {
			if n, err := harness.DiskBytes(p.Config.DataDir); err == nil {
				most = max(most, n)
			}
		}
		f.Note += fmt.Sprintf("; disk per member %.0f MB for %.0f MB of data", float64(most)/1e6, float64(2*half*len(s.payload))/1e6)
	}
	if got > 2*half {
		f.Err = fmt.Sprintf("%d records committed for %d published", got, 2*half)
	}
	s.add(f)
}

// startNamedGroup starts a group named name, one member beside each
// server of cluster, capturing subjects under sync: each returns once it
// answers /readyz (it leads or is in sync). A lease of 0 keeps voik's
// default.
func (s *sizeRun) startNamedGroup(e *Env, cluster *harness.Cluster, name, subjects, sync string, lease time.Duration) *voikGroup {
	g := &voikGroup{cluster: cluster}
	for i := range cluster.Size() {
		cfg := harness.TestConfig(e, cluster.ClientURL(i))
		cfg.Subjects, cfg.Sync = subjects, sync
		cfg.Group, cfg.Replicas, cfg.Instance = name, cluster.Size(), fmt.Sprintf("m%d", i)
		cfg.Pprof = s.opts.GroupProfileDir != ""
		if lease > 0 {
			cfg.Lease = lease
		}
		g.members = append(g.members, harness.StartVoikProcess(e, s.opts.VoikBin, cfg))
	}
	g.api = client.New(harness.Connect(e, cluster.URL()), "")
	return g
}
