package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/voik/voik/harness"
)

// Where the group part's CPU goes. On one machine the group's members,
// the three NATS servers and the publisher share the same cores, so a
// scenario that keeps them busy is bound by the CPU all of them spend
// on a message, not by any one of them. groupCPU reads each process's
// CPU time before and after a scenario: the members (child processes)
// one by one, and this process, which runs the NATS servers, the
// publisher and its checks. JetStream's scenarios read the same
// processes, the members idle, so that the two totals compare.
type groupCPU struct {
	self    time.Duration
	members []time.Duration // as g.members; 0 where /proc cannot tell
	ok      bool            // this process's /proc was read
	// slowSyncs counts the members' fdatasyncs that took longer than
	// slowSync so far (voik_sync_duration_seconds): an ack waits for its
	// syncs, so a disk that stalls shows in the longest wait for an ack.
	slowSyncs int
	// pulls and pulled are the followers' pulls that brought records, and
	// the records they brought (voik_group_pulled_records): every pull
	// costs a round trip and a sync, so their ratio says how well the
	// copy batches.
	pulls, pulled float64
}

// slowSync is a bucket bound of voik_sync_duration_seconds (10 µs × 4^k).
const slowSync = "0.16384"

func readGroupCPU(g *voikGroup) groupCPU {
	c := groupCPU{members: make([]time.Duration, len(g.members))}
	if u, err := harness.ReadProcUsage(os.Getpid()); err == nil {
		c.self, c.ok = u.CPU, true
	}
	for i, p := range g.members {
		if u, err := p.Usage(); err == nil {
			c.members[i] = u.CPU
		}
		m, err := p.Metrics() // one scrape for the four series
		if err != nil {
			continue
		}
		all, ok1 := m.Find("voik_sync_duration_seconds_count")
		quick, ok2 := m.Find("voik_sync_duration_seconds_bucket", `le="`+slowSync+`"`)
		if ok1 && ok2 {
			c.slowSyncs += int(all - quick)
		}
		n, _ := m.Find("voik_group_pulled_records_count")
		c.pulls += n
		n, _ = m.Find("voik_group_pulled_records_sum")
		c.pulled += n
	}
	return c
}

// split returns the CPU spent from c to after per message done, in
// microseconds, over every process, and a note of how it divides:
// leader first, then the other members, then this process.
func (c groupCPU) split(after groupCPU, leader, done int) (total float64, note string) {
	if !c.ok || !after.ok || done <= 0 {
		return 0, "CPU not read"
	}
	self := perMillion(after.self-c.self, done)
	total = self
	parts := make([]string, 0, len(c.members))
	order := append([]int{leader}, others(len(c.members), leader)...)
	for _, i := range order {
		us := perMillion(after.members[i]-c.members[i], done)
		total += us
		parts = append(parts, fmt.Sprintf("%.1f", us))
	}
	perPull := "none"
	if pulls := after.pulls - c.pulls; pulls > 0 {
		perPull = fmt.Sprintf("%.0f", (after.pulled-c.pulled)/pulls)
	}
	return total, fmt.Sprintf("CPU µs/msg: members %s (leader first), NATS servers + publisher %.1f; records per pull %s; members' syncs over %s s: %d",
		strings.Join(parts, "/"), self, perPull, slowSync, after.slowSyncs-c.slowSyncs)
}

// others is 0..n-1 without skip.
func others(n, skip int) []int {
	out := make([]int, 0, n)
	for i := range n {
		if i != skip {
			out = append(out, i)
		}
	}
	return out
}

// groupProfileFor is how much of a scenario a group profile covers, from
// its start: the shortest profiled scenario (acked appends at window 256)
// lasts longer than that on two cores.
const groupProfileFor = 3 * time.Second

// profileGroup starts CPU profiles of g's members and of this process for
// scenario, when Options.GroupProfileDir asks for them; the returned
// function waits until they are written. A profile that cannot be taken
// is reported on Progress and skipped: it never fails the run.
func (s *sizeRun) profileGroup(g *voikGroup, leader int, scenario string) (wait func()) {
	dir := s.opts.GroupProfileDir
	if dir == "" {
		return func() {}
	}
	name := func(who string) string {
		slug := strings.NewReplacer(":", "", ",", "", " ", "-").Replace(scenario)
		return filepath.Join(dir, fmt.Sprintf("%d-%s-%s.pprof", s.size, slug, who))
	}
	warn := func(err error) { fmt.Fprintf(s.opts.Progress, "    profile: %v\n", err) }
	var wg sync.WaitGroup
	for i, p := range g.members {
		who := fmt.Sprintf("member%d", i)
		if i == leader {
			who += "-leader"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.Config.HTTPAddr, int(groupProfileFor/time.Second))
			if err := fetchTo(url, name(who)); err != nil {
				warn(err)
			}
		}()
	}
	f, err := os.Create(name("bench"))
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		warn(err)
	} else {
		wg.Add(1)
		time.AfterFunc(groupProfileFor, func() { pprof.StopCPUProfile(); f.Close(); wg.Done() })
	}
	return wg.Wait
}

func fetchTo(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
