package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// chaosRounds is VOIK_CHAOS_ROUNDS, or five (make test); make chaos runs 50.
func chaosRounds(t *testing.T) int {
	if v := os.Getenv("VOIK_CHAOS_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VOIK_CHAOS_ROUNDS %q: want a number of rounds", v)
		}
		return n
	}
	return 5
}

// TestGroupChaos: rounds of a random fault (kill -9 of a member, SIGSTOP
// of a member past its lease, a NATS server stopped) under mixed plain,
// acked and read load. After every round the group is whole again and
// every check holds: no acked record lost, none stored twice, no record
// a reader was given ever changed. At the end the copies are identical.
func TestGroupChaos(t *testing.T) {
	rounds := chaosRounds(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("VOIK_CHAOS_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("%d rounds, VOIK_CHAOS_SEED=%d", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := startGroup(t, bin, cluster, 3)
	nc := harness.Connect(t, cluster.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	api := client.New(nc, "VOIK.API")
	load := newAckedLoad(api, "orders.chaos", "")
	seen := &seenRecords{seen: map[uint64]messages.Record{}}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	publishers := load.start(t, 2, 100_000)
	wg.Add(2)
	go func() { // plain publishes: some are lost in a failover, none may be stored twice
		defer wg.Done()
		for k := 0; k < 1_000_000 && ctx.Err() == nil; k++ {
			nc.Publish(load.subject, []byte(fmt.Sprintf("plain-%d", k)))
			waitOrDone(ctx, 2*time.Millisecond)
		}
	}()
	go func() { defer wg.Done(); seen.read(ctx, api, load.subject) }()

	for round := range rounds {
		harness.Eventually(t, 30*time.Second, "acks before the fault", func() bool { return load.count() > 0 })
		before := load.count()
		victim := rng.IntN(3)
		switch fault := rng.IntN(3); fault {
		case 0:
			t.Logf("round %d: kill -9 of member %d", round, victim)
			members[victim].Kill()
			members[victim].Restart(t)
		case 1:
			t.Logf("round %d: SIGSTOP of member %d for %v", round, victim, 2*groupLease)
			members[victim].Pause()
			waitOrDone(ctx, 2*groupLease)
			members[victim].Resume()
		case 2:
			t.Logf("round %d: NATS server %d stopped", round, victim)
			cluster.Stop(victim)
			waitOrDone(ctx, groupLease)
			cluster.Restart(victim)
		}
		harness.Eventually(t, 60*time.Second, fmt.Sprintf("round %d: a leader, every member caught up, acks flowing", round), func() bool {
			return load.count() >= before+10 && leaderOf(members) >= 0 && allCaught(api, members)
		})
		checkLog(t, api, load.subject, load, seen, true)
		if t.Failed() {
			t.Fatalf("round %d broke a check (VOIK_CHAOS_SEED=%d)", round, seed)
		}
	}
	cancel()
	publishers.stop()
	wg.Wait()
	checkLog(t, api, load.subject, load, seen, false)
	harness.Eventually(t, 30*time.Second, "every member caught up", func() bool { return allCaught(api, members) })
	stopAndCompare(t, members)
	t.Logf("%d acked appends, %d records read, over %d rounds", load.count(), len(seen.seen), rounds)
}
