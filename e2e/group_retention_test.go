package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
)

// TestGroupRetentionIsTheLeadersAndEveryMemberStartsWhereItsLogStarts:
// in a group, retention is the leader's: followers delete only what it
// deleted (a start marker in the journal), so INFO's first_offset is the
// same whichever member answers. Every member trims its journal below
// the committed offset (VOIK_JOURNAL_KEEP records kept). A member whose
// disk was wiped after that is further behind than the leader's journal
// goes: it takes a snapshot, starts each log where the leader's starts
// (bootstrap after retention), copies the journal on from there, and
// then holds the same records as the others.
func TestGroupRetentionIsTheLeadersAndEveryMemberStartsWhereItsLogStarts(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := make([]*harness.VoikProcess, 3)
	for i := range members {
		cfg := groupConfig(t, cluster.ClientURL(i), i)
		cfg.SegmentSize = config.ByteSize(4 << 10) // about 15 of these records a segment
		cfg.RetentionMaxMessages = 40
		cfg.JournalKeep = 100
		members[i] = harness.StartVoikProcess(t, bin, cfg)
	}
	nc := harness.Connect(t, cluster.URL(), nats.MaxReconnects(-1))
	api := client.New(nc, "VOIK.API")
	subjects := []string{"orders.kept.a", "orders.kept.b"}
	appendAcked := func(n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := range n {
			for _, subject := range subjects {
				if _, err := api.Append(ctx, subject, nil, fmt.Appendf(nil, "%s record %d %0200d", subject, i, i)); err != nil {
					t.Fatalf("acked append %d to %s: %v", i, subject, err)
				}
			}
		}
	}
	appendAcked(300)
	// Every member may answer: twenty INFOs each reach any of them.
	for _, subject := range subjects {
		firsts := map[uint64]int{}
		for range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			info, err := api.Info(ctx, subject)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			firsts[info.FirstOffset]++
			if info.FirstOffset == 0 || info.Messages < 40 || info.EndOffset != 300 {
				t.Errorf("INFO %s: %+v; want records deleted from the front, at least 40 kept, end 300", subject, info)
			}
		}
		if len(firsts) != 1 {
			t.Errorf("INFO %s: first_offset differs between the members that answered: %v", subject, firsts)
		}
	}

	// Wipe a follower now that no log starts at 0 and the journals do
	// not either, and let it catch up.
	for _, p := range members {
		harness.Eventually(t, 30*time.Second, "the journal trimmed", func() bool {
			_, err := os.Stat(filepath.Join(p.Config.DataDir, ".group", "base"))
			return err == nil
		})
	}
	victim := (leaderOf(members) + 1) % 3
	p := members[victim]
	p.Kill()
	if err := os.RemoveAll(p.Config.DataDir); err != nil {
		t.Fatal(err)
	}
	p.Restart(t) // ready once in sync
	appendAcked(20)
	harness.Eventually(t, 30*time.Second, "every member in sync and caught up", func() bool { return allCaught(api, members) })
	if out := p.Output(); !strings.Contains(out, "snapshot done") {
		t.Errorf("the wiped member did not take a snapshot; its log:\n%s", out)
	}
	stopAndCompare(t, members)
	for _, subject := range subjects {
		records := readDataDir(t, p.Config.DataDir)[subject]
		if len(records) == 0 || records[0].Offset == 0 || records[len(records)-1].Offset != 319 {
			t.Errorf("the wiped member's %s: %d records from %v; want it to start past 0 and end at 319", subject, len(records), func() any {
				if len(records) == 0 {
					return "nothing"
				}
				return records[0].Offset
			}())
		}
	}
}
