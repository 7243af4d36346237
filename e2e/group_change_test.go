package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// voikCLI runs bin with args against url as a member of group g would
// (VOIK_GROUP=g), and returns its standard output, standard error and exit
// status.
func voikCLI(t *testing.T, bin, url string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "VOIK_NATS_URL="+url, "VOIK_GROUP=g", "VOIK_LEASE="+groupLease.String())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	status := 0
	if err != nil {
		status = cmd.ProcessState.ExitCode()
	}
	return stdout.String(), stderr.String(), status
}

// groupMembers is the leader's GROUP reply: each member's instance, in
// sync or not.
func groupMembers(api *client.Client) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	reply, err := api.Group(ctx, "g")
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range reply.Members {
		out[m.Instance] = m.InSync
	}
	return out, nil
}

// TestGroupGrowsToFiveAndShrinksBackByRollingRestarts: under acked load, a
// group of three is resized to five (voik resize), two members join and
// the three roll with VOIK_REPLICAS=5; then it is resized to three, the two
// stop and the three roll back. Members with the old size are refused in
// between; nothing acked is lost.
func TestGroupGrowsToFiveAndShrinksBackByRollingRestarts(t *testing.T) {
	g := startGroupUnderLoad(t, "orders.resize", 3000)
	url := g.cluster.URL()
	resize := func(n int) {
		t.Helper()
		out, stderr, status := voikCLI(t, g.bin, url, "resize", fmt.Sprint(n))
		var reply struct {
			Replicas int `json:"replicas"`
		}
		if status != 0 || json.Unmarshal([]byte(out), &reply) != nil || reply.Replicas != n {
			t.Fatalf("voik resize %d: exit %d, %q %q", n, status, out, stderr)
		}
	}
	roll := func(replicas int) {
		t.Helper()
		for i := 2; i >= 0; i-- {
			p := g.members[i]
			p.Stop(t)
			p.Config.Replicas = replicas
			p.Restart(t)
		}
	}
	allInSync := func(names ...string) func() bool {
		return func() bool {
			members, err := groupMembers(g.api)
			if err != nil || len(members) != len(names) {
				return false
			}
			for _, name := range names {
				if !members[name] {
					return false
				}
			}
			return true
		}
	}

	resize(5)
	var added []*harness.VoikProcess
	for i := 3; i < 5; i++ {
		cfg := groupConfig(t, g.cluster.ClientURL(i%3), i)
		cfg.Replicas = 5
		added = append(added, harness.StartVoikProcess(t, g.bin, cfg))
	}
	roll(5)
	harness.Eventually(t, 60*time.Second, "five members in sync", allInSync("m0", "m1", "m2", "m3", "m4"))
	old := groupConfig(t, g.cluster.ClientURL(0), 9)
	if status, stderr := serveExits(t, g.bin, old); status != 2 || !strings.Contains(stderr, "VOIK_REPLICAS 3 differs from the group's 5") {
		t.Fatalf("a member with VOIK_REPLICAS=3 in a group of five: exit %d, %q", status, stderr)
	}
	acksAtFive := g.load.count()

	resize(3)
	for _, p := range added {
		p.Stop(t) // each tells the leader it leaves
	}
	roll(3)
	harness.Eventually(t, 60*time.Second, "three members in sync", allInSync("m0", "m1", "m2"))
	harness.Eventually(t, 30*time.Second, "acks at three again", func() bool { return g.load.count() > acksAtFive+100 })
	g.finish(t)
	stopAndCompare(t, g.members)
}

// TestGroupRetiresDeadMembersAndAReplacementRestoresTheMajority: both
// followers of a group of three are killed for good, one after the other.
// The second is still in the in-sync set (dropping it would leave fewer
// than a majority), so nothing commits. voik retire takes it out; a new
// member, on a new disk, catches up and joins the in-sync set, and acks
// resume. Retiring a live member is refused; nothing acked is lost.
func TestGroupRetiresDeadMembersAndAReplacementRestoresTheMajority(t *testing.T) {
	g := startGroupUnderLoad(t, "orders.retire", 4000)
	url := g.cluster.URL()
	leader := leaderOf(g.members)
	if leader < 0 {
		t.Fatal("no leader")
	}
	leaderName := g.members[leader].Config.Instance
	var followers []*harness.VoikProcess
	for i, p := range g.members {
		if i != leader {
			followers = append(followers, p)
		}
	}
	if _, stderr, status := voikCLI(t, g.bin, url, "retire", leaderName); status != 1 || !strings.Contains(stderr, "it leads") {
		t.Fatalf("voik retire of the leader: exit %d, %q; want 1 and a refusal", status, stderr)
	}
	if _, stderr, status := voikCLI(t, g.bin, url, "retire", followers[0].Config.Instance); status != 1 || !strings.Contains(stderr, "alive") {
		t.Fatalf("voik retire of a live follower: exit %d, %q; want 1 and a refusal", status, stderr)
	}

	first, second := followers[0], followers[1]
	first.Kill()
	harness.Eventually(t, 30*time.Second, "the first dead member out of sync", func() bool {
		members, err := groupMembers(g.api)
		return err == nil && !members[first.Config.Instance] && members[second.Config.Instance]
	})
	second.Kill()
	// In sync with the leader alone would be below a majority: the second
	// stays in, and acks stop.
	stalled := g.load.count()
	// Refused while its last pull is within a lease: it might be alive.
	var out, stderr string
	harness.Eventually(t, 10*time.Second, "voik retire of the second dead member", func() bool {
		var status int
		out, stderr, status = voikCLI(t, g.bin, url, "retire", second.Config.Instance)
		return status == 0
	})
	var reply struct {
		Retired   []string `json:"retired"`
		WasInSync bool     `json:"was_in_sync"`
		InSync    []string `json:"in_sync"`
	}
	if json.Unmarshal([]byte(out), &reply) != nil || !reply.WasInSync || len(reply.InSync) != 1 {
		t.Fatalf("voik retire %s: %q %q; want it retired from the in-sync set, which holds the leader alone after", second.Config.Instance, out, stderr)
	}
	if got := g.load.count(); got > stalled+50 {
		t.Fatalf("%d acks with the in-sync set at the leader alone", got-stalled)
	}

	replacement := harness.StartVoikProcess(t, g.bin, groupConfig(t, g.cluster.ClientURL(2), 7))
	harness.Eventually(t, 60*time.Second, "acks again once the replacement is in sync", func() bool { return g.load.count() > stalled+200 })
	if _, stderr, status := voikCLI(t, g.bin, url, "retire", first.Config.Instance); status != 0 {
		t.Fatalf("voik retire %s: exit %d, %q", first.Config.Instance, status, stderr)
	}
	members, err := groupMembers(g.api)
	if err != nil || len(members) != 2 || !members[leaderName] || !members["m7"] {
		t.Fatalf("GROUP lists %v (%v); want the leader and the replacement, both in sync", members, err)
	}
	g.finish(t)
	stopAndCompare(t, []*harness.VoikProcess{g.members[leader], replacement})
}

// TestAStandaloneDataDirBecomesAGroupsFirstMember: a standalone voik's
// data dir, restarted with VOIK_GROUP, is the group's first member: its
// records keep their offsets, the new members copy them exactly, and the
// group goes on from there.
func TestAStandaloneDataDirBecomesAGroupsFirstMember(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	standalone := harness.TestConfig(t, cluster.ClientURL(0))
	standalone.Subjects = "orders.>"
	p := harness.StartVoikProcess(t, bin, standalone)
	nc := harness.Connect(t, cluster.URL())
	api := client.New(nc, "VOIK.API")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var before []*messages.AckReply
	for i := range 30 {
		ack, err := api.Append(ctx, fmt.Sprintf("orders.%d", i%3), nil, []byte(fmt.Sprintf("standalone %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, ack)
	}
	p.Stop(t)

	first := groupConfig(t, cluster.ClientURL(0), 0)
	first.DataDir = standalone.DataDir
	members := []*harness.VoikProcess{harness.StartVoikProcess(t, bin, first)}
	for i := 1; i < 3; i++ {
		members = append(members, harness.StartVoikProcess(t, bin, groupConfig(t, cluster.ClientURL(i), i)))
	}
	harness.Eventually(t, 60*time.Second, "an ack from the group", func() bool {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := api.Append(actx, "orders.0", nil, []byte("group 0"))
		return err == nil
	})
	harness.Eventually(t, 60*time.Second, "every member caught up", func() bool { return allCaught(api, members) })
	for i, ack := range before {
		reply, err := api.Fetch(ctx, ack.Subject, messages.FetchRequest{Offset: &ack.Offset, MaxMessages: 1})
		if err != nil || len(reply.Records) != 1 || string(reply.Records[0].Data) != fmt.Sprintf("standalone %d", i) || reply.Records[0].Timestamp != ack.Timestamp {
			t.Fatalf("record %d (%s at %d) from the group: %+v, %v", i, ack.Subject, ack.Offset, reply, err)
		}
	}
	stopAndCompare(t, members)
}
