package e2e

// Replication groups (PROTOCOL.md section 8): members as child processes
// beside a three-server NATS cluster with JetStream.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// groupLease is the members' VOIK_LEASE in these tests.
const groupLease = time.Second

// groupConfig is member i's configuration, on NATS at url.
func groupConfig(t *testing.T, url string, i int) *config.Config {
	cfg := harness.TestConfig(t, url)
	cfg.Subjects = "orders.>"
	cfg.Group = "g"
	cfg.Replicas = 3
	cfg.Instance = fmt.Sprintf("m%d", i)
	cfg.Lease = groupLease
	cfg.LogLevel = "info"
	return cfg
}

// startGroup starts n members, member i beside NATS server i, one after
// another: each returns once it answers /readyz (leader or in sync).
func startGroup(t *testing.T, bin string, cluster *harness.Cluster, n int) []*harness.VoikProcess {
	t.Helper()
	members := make([]*harness.VoikProcess, n)
	for i := range n {
		members[i] = harness.StartVoikProcess(t, bin, groupConfig(t, cluster.ClientURL(i), i))
	}
	return members
}

// httpClient gives up on a member that does not answer (a paused one).
var httpClient = &http.Client{Timeout: 2 * time.Second}

// oneReplyEach sends a mix of requests about subject and fails for any
// that gets other than exactly one reply within a second.
func oneReplyEach(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	counter := &replyCounter{nc: nc}
	for i := range 10 {
		counter.send(t, "VOIK.API.INFO."+subject, nil)
		counter.send(t, "VOIK.API.FETCH."+subject, messages.Encode(map[string]any{"offset": uint64(i), "max_messages": uint64(3)}))
	}
	counter.send(t, "VOIK.API.SUBJECTS", nil)
	counter.send(t, "VOIK.API.GROUP.g", nil)
	counter.expectOnceEach(t)
}

// allCaught says whether the leader counts every member of members in
// sync and holding everything it holds (its GROUP reply): a member's own
// committed_lag cannot tell when it cannot reach the leader.
func allCaught(api *client.Client, members []*harness.VoikProcess) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	reply, err := api.Group(ctx, "g")
	if err != nil {
		return false
	}
	caught := map[string]bool{}
	for _, m := range reply.Members {
		if m.InSync && m.Lag == 0 {
			caught[m.Instance] = true
		}
	}
	for _, p := range members {
		if !caught[p.Config.Instance] {
			return false
		}
	}
	return true
}

// leaderOf is the index of the member that says it leads, or -1.
func leaderOf(members []*harness.VoikProcess) int {
	for i, p := range members {
		if st, err := p.GroupStatus(); err == nil && st.Role == "leader" {
			return i
		}
	}
	return -1
}

// replyCounter sends requests, each on an inbox of its own, and counts
// the replies every one gets within a second of the last.
type replyCounter struct {
	nc   *nats.Conn
	subs []*nats.Subscription
	what []string
}

func (r *replyCounter) send(t *testing.T, subject string, body []byte) {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := r.nc.PublishRequest(subject, inbox, body); err != nil {
		t.Fatal(err)
	}
	r.subs = append(r.subs, sub)
	r.what = append(r.what, subject)
}

// expectOnceEach waits a second, then fails for every request that got
// other than exactly one reply.
func (r *replyCounter) expectOnceEach(t *testing.T) {
	t.Helper()
	r.nc.Flush()
	time.Sleep(time.Second) // the window is the check: replies that come later count against it
	for i, sub := range r.subs {
		n, _, err := sub.Pending()
		if err != nil || n != 1 {
			t.Errorf("request %d (%s): %d replies within a second (err %v), want exactly 1", i, r.what[i], n, err)
		}
		sub.Unsubscribe()
	}
	r.subs, r.what = nil, nil
}

// readDataDir reads every record of every subject in a stopped member's
// data dir.
func readDataDir(t *testing.T, dir string) map[string][]logstore.Record {
	t.Helper()
	store, err := logstore.OpenStore(dir, logstore.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer store.Close()
	out := map[string][]logstore.Record{}
	for _, subject := range store.Subjects() {
		err := store.View(subject, func(l *logstore.Log) error {
			records, err := l.Read(l.FirstOffset(), int(l.EndOffset()-l.FirstOffset()))
			for i := range records {
				records[i].Data = append([]byte(nil), records[i].Data...)
			}
			out[subject] = records
			return err
		})
		if err != nil {
			t.Fatalf("read %s in %s: %v", subject, dir, err)
		}
	}
	return out
}

// checkGroupReply asks the leader for the group with voik group (the CLI)
// and checks that it names three members, all in sync.
func checkGroupReply(t *testing.T, bin, url string) {
	t.Helper()
	cmd := exec.Command(bin, "group", "g")
	cmd.Env = append(os.Environ(), "VOIK_NATS_URL="+url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("voik group g: %v", err)
	}
	var reply messages.GroupReply
	if err := json.Unmarshal(out, &reply); err != nil {
		t.Fatalf("voik group g printed %q: %v", out, err)
	}
	if reply.Group != "g" || reply.Leader == "" || reply.Epoch == 0 || reply.Replicas != 3 || len(reply.Members) != 3 {
		t.Fatalf("voik group g: %+v; want group g, a leader, an epoch and three members", reply)
	}
	for _, m := range reply.Members {
		if !m.InSync || m.Lag != 0 {
			t.Errorf("member %+v: want in sync with no lag once everything is committed", m)
		}
	}
}

// committedCount is the records INFO counts over subjects.
func committedCount(api *client.Client, subjects []string) uint64 {
	var total uint64
	for _, s := range subjects {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := api.Info(ctx, s)
		cancel()
		if err == nil {
			total += info.EndOffset - info.FirstOffset
		}
	}
	return total
}

// TestGroupOfThreeKeepsIdenticalCopiesAndAnswersEveryRequestOnce: with
// publishers on all three NATS servers, plain and acked, every member's
// data dir ends up with the same records at the same offsets, byte for
// byte, and every API request gets exactly one reply.
func TestGroupOfThreeKeepsIdenticalCopiesAndAnswersEveryRequestOnce(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := startGroup(t, bin, cluster, 3)
	subjects := []string{"orders.eu", "orders.us", "orders.asia"}

	const plainEach, ackedEach = 400, 40
	var wg sync.WaitGroup
	errs := make(chan error, 3*ackedEach)
	for i := range 3 {
		nc := harness.Connect(t, cluster.ClientURL(i))
		api := client.New(nc, "VOIK.API")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range plainEach {
				msg := nats.NewMsg(subjects[k%len(subjects)])
				msg.Header.Set("From", strconv.Itoa(i))
				msg.Data = []byte(fmt.Sprintf("plain %d from server %d", k, i))
				nc.PublishMsg(msg)
				if k%10 == 0 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					h := nats.Header{}
					h.Set(messages.HeaderMsgID, fmt.Sprintf("s%d-%d", i, k))
					if _, err := api.Append(ctx, subjects[k%len(subjects)], h, []byte(fmt.Sprintf("acked %d from server %d", k, i))); err != nil {
						errs <- err
					}
					cancel()
				}
			}
			nc.Flush()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("acked append: %v", err)
	}
	reader := client.New(members[0].Conn, "VOIK.API")
	want := uint64(3 * (plainEach + ackedEach))
	harness.Eventually(t, 30*time.Second, "every record committed", func() bool {
		return committedCount(reader, subjects) == want
	})

	counter := &replyCounter{nc: members[0].Conn}
	for i := range 30 {
		counter.send(t, "VOIK.API.INFO."+subjects[i%3], nil)
		counter.send(t, "VOIK.API.FETCH."+subjects[i%3], messages.Encode(map[string]any{"offset": uint64(i), "max_messages": uint64(5)}))
	}
	counter.send(t, "VOIK.API.SUBJECTS", nil)
	counter.send(t, "VOIK.API.GROUP.g", nil)
	counter.expectOnceEach(t)
	checkGroupReply(t, bin, cluster.ClientURL(1))

	harness.Eventually(t, 10*time.Second, "every member holds every committed record", func() bool {
		return allCaught(reader, members)
	})
	// Followers first: the leader's stop hands over, which the others
	// would have to follow.
	leader := leaderOf(members)
	for i, p := range members {
		if i != leader {
			p.Stop(t)
		}
	}
	members[leader].Stop(t)
	copies := make([]map[string][]logstore.Record, 3)
	for i, p := range members {
		copies[i] = readDataDir(t, p.Config.DataDir)
	}
	var total int
	for _, records := range copies[0] {
		total += len(records)
	}
	if uint64(total) != want {
		t.Errorf("member 0 holds %d records, want %d", total, want)
	}
	for i := 1; i < 3; i++ {
		diffCopies(t, copies[0], copies[i], i)
	}
}

// stopAndCompare stops every member, followers first (the leader's stop
// hands over, which they would have to follow), then fails unless every
// data dir holds member 0's records.
func stopAndCompare(t *testing.T, members []*harness.VoikProcess) {
	t.Helper()
	leader := leaderOf(members)
	for i, p := range members {
		if i != leader {
			p.Stop(t)
		}
	}
	if leader >= 0 {
		members[leader].Stop(t)
	}
	first := readDataDir(t, members[0].Config.DataDir)
	for i := 1; i < len(members); i++ {
		diffCopies(t, first, readDataDir(t, members[i].Config.DataDir), i)
	}
}

// diffCopies fails, saying where, unless member i's records are member
// 0's.
func diffCopies(t *testing.T, first, other map[string][]logstore.Record, i int) {
	t.Helper()
	if reflect.DeepEqual(first, other) {
		return
	}
	for subject := range other {
		if _, ok := first[subject]; !ok {
			t.Errorf("%s: member %d holds it, member 0 does not", subject, i)
		}
	}
	for subject, a := range first {
		b := other[subject]
		for k := 0; k < max(len(a), len(b)); k++ {
			switch {
			case k >= len(a) || k >= len(b):
				t.Errorf("%s: member 0 holds %d records, member %d holds %d", subject, len(a), i, len(b))
			case !reflect.DeepEqual(a[k], b[k]):
				t.Errorf("%s offset %d: member 0 %+v, member %d %+v", subject, a[k].Offset, a[k], i, b[k])
			default:
				continue
			}
			break
		}
	}
}
