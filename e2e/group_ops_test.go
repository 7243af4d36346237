package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// memberMetric reads one series of a member's /metrics, or -1.
func memberMetric(p *harness.VoikProcess, name string) float64 {
	v, ok, err := p.Metric(name)
	if !ok || err != nil {
		return -1
	}
	return v
}

// firstAckOf appends one record to subject with the client's
// AppendUntilAcked, each try given try to be acked, and returns how long
// after since the ack came; it fails after 30 s.
func firstAckOf(t *testing.T, api *client.Client, subject string, since time.Time, try time.Duration) time.Duration {
	t.Helper()
	probe := *api
	probe.AppendAttemptTimeout = try
	ctx, cancel := context.WithDeadline(context.Background(), since.Add(30*time.Second))
	defer cancel()
	if _, err := probe.AppendUntilAcked(ctx, subject, subject+"-probe", nil, []byte("probe")); err != nil {
		t.Fatalf("no ack to %s within 30s: %v", subject, err)
	}
	return time.Since(since)
}

// serveExits2 runs voik serve with cfg as its environment and returns
// its exit status and standard error, failing after 30 s.
func serveExits(t *testing.T, bin string, cfg *config.Config) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "VOIK_NATS_URL="+cfg.NatsURL, "VOIK_GROUP="+cfg.Group, "VOIK_INSTANCE="+cfg.Instance,
		"VOIK_SUBJECTS="+cfg.Subjects, "VOIK_REPLICAS="+strconv.Itoa(cfg.Replicas), "VOIK_DATA_DIR="+t.TempDir(),
		"VOIK_HTTP_ADDR=", "VOIK_LOG_LEVEL=error", "VOIK_API_PREFIX="+cfg.APIPrefix)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("voik serve did not exit: %s", stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// TestGroupOperations runs one group through what operators do to it:
// a member that would clash is refused, the leader hands over on
// SIGTERM, a member whose disk was wiped rejoins out of sync and catches
// up, a member's data dir serves standalone, and the group stops
// capturing while JetStream has no quorum and goes on once it has.
func TestGroupOperations(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := startGroup(t, bin, cluster, 3)
	nc := harness.Connect(t, cluster.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	api := client.New(nc, "VOIK.API")

	t.Run("a member that clashes exits 2 naming the difference", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			change func(*config.Config)
			says   string
		}{
			{"same instance as a live member", func(c *config.Config) { c.Instance = "m1" }, "VOIK_INSTANCE m1"},
			{"other subjects", func(c *config.Config) { c.Instance = "m9"; c.Subjects = "orders.>,more.>" }, "VOIK_SUBJECTS"},
			{"other replicas", func(c *config.Config) { c.Instance = "m9"; c.Replicas = 5 }, "VOIK_REPLICAS"},
		} {
			cfg := groupConfig(t, cluster.ClientURL(0), 0)
			c.change(cfg)
			code, stderr := serveExits(t, bin, cfg)
			if line := strings.TrimSpace(stderr); code != 2 || strings.Contains(line, "\n") || !strings.Contains(line, c.says) {
				t.Errorf("%s: exit %d, stderr %q; want 2 and one line naming %s", c.name, code, stderr, c.says)
			}
		}
	})

	load := newAckedLoad(api, "orders.ops", "")
	publishers := load.start(t, 2, 5000)
	harness.Eventually(t, 30*time.Second, "acks", func() bool { return load.count() >= 50 })
	// The followers count what each pull brought (voik_group_pulled_records).
	harness.Eventually(t, 10*time.Second, "the followers' pulls counted", func() bool {
		leader, pulls, records := leaderOf(members), 0.0, 0.0
		for i, p := range members {
			if i != leader {
				pulls += max(memberMetric(p, "voik_group_pulled_records_count"), 0)
				records += max(memberMetric(p, "voik_group_pulled_records_sum"), 0)
			}
		}
		return pulls > 0 && records >= pulls
	})

	t.Run("SIGTERM of the leader hands over within a lease", func(t *testing.T) {
		leader := leaderOf(members)
		before, _ := members[leader].GroupStatus()
		members[leader].Stop(t)
		stopped := time.Now()
		// Timed by a probe of its own whose tries are short: a try of
		// the load in flight at the stop may be lost on its way (core
		// NATS: a request routed to a server just as the old leader's
		// interest leaves it is dropped), and its publisher then waits
		// out its 2 s timeout, which says nothing of the handover.
		next := firstAckOf(t, api, "orders.handover", stopped, 250*time.Millisecond)
		t.Logf("SIGTERM of the leader (exited) to the next ack: %v", next.Round(time.Millisecond))
		if next >= groupLease {
			t.Errorf("the next ack came %v after the leader stopped: a handover should take less than the lease (%v)", next, groupLease)
		}
		harness.Eventually(t, 10*time.Second, "the load acked after the leader stopped", func() bool {
			_, ok := load.firstAckAfter(stopped)
			return ok
		})
		now := leaderOf(members)
		if st, err := members[now].GroupStatus(); err != nil || st.Epoch <= before.Epoch {
			t.Errorf("the new leader's epoch %d (err %v), want above %d", st.Epoch, err, before.Epoch)
		}
		members[leader].Restart(t)
	})

	t.Run("a member whose disk was wiped rejoins out of sync and catches up", func(t *testing.T) {
		victim := (leaderOf(members) + 1) % 3
		p := members[victim]
		idPath := filepath.Join(p.Config.DataDir, ".group", "id")
		oldID, err := os.ReadFile(idPath)
		if err != nil {
			t.Fatal(err)
		}
		p.Kill()
		if err := os.RemoveAll(p.Config.DataDir); err != nil {
			t.Fatal(err)
		}
		p.Restart(t) // ready: in sync again, so holding everything committed
		newID, err := os.ReadFile(idPath)
		if err != nil || string(newID) == string(oldID) {
			t.Fatalf("data dir identity %q after the wipe (err %v), was %q: want a new one", newID, err, oldID)
		}
		gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := api.Group(gctx, "g")
		gcancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range reply.Members {
			if m.Instance == p.Config.Instance && !m.InSync {
				t.Errorf("%s not in sync after it was ready: %+v", m.Instance, reply)
			}
		}
		harness.Eventually(t, 30*time.Second, "the wiped member to hold what was committed", func() bool {
			st, err := p.GroupStatus()
			return err == nil && st.CommittedLag == 0 && st.Role == "follower"
		})
	})

	t.Run("no JetStream quorum: nobody leads; capture resumes with it", func(t *testing.T) {
		leader := leaderOf(members)
		down := []int{(leader + 1) % 3, (leader + 2) % 3}
		for _, i := range down {
			cluster.Stop(i)
		}
		harness.Eventually(t, 6*groupLease+20*time.Second, "no member leads, and the state is seen unreachable", func() bool {
			if leaderOf(members) >= 0 {
				return false
			}
			for _, p := range members {
				if memberMetric(p, "voik_group_state_reachable") == 0 {
					return true
				}
			}
			return false
		})
		stopped := time.Now()
		for _, i := range down {
			cluster.Restart(i)
		}
		harness.Eventually(t, 6*groupLease+30*time.Second, "acks again once JetStream has its quorum", func() bool {
			_, ok := load.firstAckAfter(stopped)
			return ok && leaderOf(members) >= 0
		})
	})

	publishers.stop()
	checkLog(t, api, load.subject, load, &seenRecords{seen: map[uint64]messages.Record{}}, false)

	t.Run("a member's data dir serves standalone", func(t *testing.T) {
		harness.Eventually(t, 30*time.Second, "every member caught up", func() bool { return allCaught(api, members) })
		info, err := api.Info(context.Background(), load.subject)
		if err != nil {
			t.Fatal(err)
		}
		p := members[0]
		p.Stop(t)
		cfg := harness.TestConfig(t, "")
		cfg.DataDir = p.Config.DataDir
		solo := harness.StartVoik(t, cfg)
		got, err := solo.Client.Info(context.Background(), load.subject)
		if err != nil {
			t.Fatal(err)
		}
		if got.EndOffset < info.EndOffset {
			t.Errorf("standalone on member 0's data dir: end_offset %d, the group's was %d", got.EndOffset, info.EndOffset)
		}
	})
}

// TestGroupForceLeadAfterLosingAMajority: two of three members lost for
// good; nothing commits. voik force-lead on the survivor makes it lead
// alone; with a new member caught up beside it, a majority holds the log
// again and acks resume. What was committed before is still there.
func TestGroupForceLeadAfterLosingAMajority(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := startGroup(t, bin, cluster, 3)
	nc := harness.Connect(t, cluster.URL())
	api := client.New(nc, "VOIK.API")
	for k := range 20 {
		if _, err := api.Append(context.Background(), "orders.kept", nil, []byte(strconv.Itoa(k))); err != nil {
			t.Fatal(err)
		}
	}
	survivor := members[0]
	members[1].Kill()
	members[2].Kill()
	actx, acancel := context.WithTimeout(context.Background(), 3*groupLease)
	_, err := api.Append(actx, "orders.kept", nil, []byte("while a majority is gone"))
	acancel()
	if err == nil {
		t.Fatal("an append was acked with two of three members gone")
	}

	cmd := exec.Command(bin, "force-lead")
	cmd.Env = append(os.Environ(), "VOIK_NATS_URL="+cluster.ClientURL(0), "VOIK_GROUP=g", "VOIK_INSTANCE=m0", "VOIK_DATA_DIR="+survivor.Config.DataDir)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "--yes") {
		t.Fatalf("force-lead without --yes: %v, %s; want a refusal that asks for --yes", err, out)
	}
	cmd = exec.Command(bin, "force-lead", "--yes")
	cmd.Env = append(os.Environ(), "VOIK_NATS_URL="+cluster.ClientURL(0), "VOIK_GROUP=g", "VOIK_INSTANCE=m0", "VOIK_DATA_DIR="+survivor.Config.DataDir)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "WARNING") {
		t.Fatalf("force-lead --yes: %v, %s", err, out)
	}
	harness.Eventually(t, 10*groupLease, "the survivor to lead", func() bool {
		st, err := survivor.GroupStatus()
		return err == nil && st.Role == "leader"
	})
	harness.StartVoikProcess(t, bin, groupConfig(t, cluster.ClientURL(1), 3)) // a new member, m3
	ack, err := api.Append(context.Background(), "orders.kept", nil, []byte("after"))
	if err != nil {
		t.Fatalf("append with the survivor and a caught-up replacement: %v", err)
	}
	if ack.Offset < 20 {
		t.Errorf("acked at offset %d: the 20 records committed before are not all there", ack.Offset)
	}
	reply, err := api.Fetch(context.Background(), "orders.kept", messages.FetchRequest{MaxMessages: 100})
	if err != nil {
		t.Fatal(err)
	}
	for k := range 20 {
		if k >= len(reply.Records) || string(reply.Records[k].Data) != strconv.Itoa(k) {
			t.Fatalf("record %d after force-lead: %+v", k, reply.Records)
		}
	}
}
