package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/client"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// subjectsPage asks SUBJECTS through api.
func subjectsPage(t *testing.T, api *client.Client, req messages.SubjectsRequest) (*messages.SubjectsReply, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	return api.Subjects(ctx, req)
}

// groupsOf asks GROUPS through api, waiting the whole second.
func groupsOf(t *testing.T, api *client.Client) []messages.GroupsReply {
	t.Helper()
	replies, err := api.Groups(context.Background(), 0)
	if err != nil {
		t.Fatalf("GROUPS: %v", err)
	}
	return replies
}

// voikGroupsCLI runs voik groups against url and decodes its lines.
func voikGroupsCLI(t *testing.T, bin, url string) []map[string]any {
	t.Helper()
	out, stderr, status := voikCLI(t, bin, url, "groups")
	if status != 0 {
		t.Fatalf("voik groups: exit %d, %s", status, stderr)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("voik groups printed %q: %v", sc.Text(), err)
		}
		lines = append(lines, line)
	}
	return lines
}

// TestVoiksOnOnePrefixSplitItsSubjects: two standalone voiks on one NATS
// server and one API prefix, orders.> in one and payments.> in the other.
// Each request about a subject reaches the voik that captures it and is
// answered once; a subject neither captures gets "no responders"; SUBJECTS
// is answered once with both sets merged and paged; GROUPS gets one reply
// from each. A voik killed with -9 makes SUBJECTS a 503 that names it
// until the others forget it; one stopped cleanly says goodbye.
func TestVoiksOnOnePrefixSplitItsSubjects(t *testing.T) {
	t.Parallel()
	orders := startWith(t, nil, func(c *configT) { c.Subjects = "orders.>" })
	bin := harness.BuildVoik(t)
	paymentsCfg := harness.TestConfig(t, orders.server.ClientURL())
	paymentsCfg.Subjects = "payments.>"
	payments := harness.StartVoikProcess(t, bin, paymentsCfg)

	orders.appendAcked("orders.eu", nil, []byte("order 1"))
	orders.appendAcked("orders.us", nil, []byte("order 2"))
	orders.appendAcked("payments.eu", nil, []byte("payment 1"))
	orders.appendAcked("payments.asia", nil, []byte("payment 2"))

	counter := &replyCounter{nc: orders.nc}
	for _, subject := range []string{"orders.eu", "payments.eu"} {
		counter.send(t, "VOIK.API.INFO."+subject, nil)
		counter.send(t, "VOIK.API.FETCH."+subject, nil)
		counter.send(t, "VOIK.API.REPLAY."+subject, encode(t, map[string]any{"deliver": "_INBOX.routing"}))
	}
	counter.send(t, "VOIK.API.SUBJECTS", nil)
	counter.send(t, "VOIK.API.FETCH", nil) // a 400, from one of them
	counter.expectOnceEach(t)

	if records := orders.fetchAll("payments.eu"); len(records) != 1 || string(records[0].Data) != "payment 1" {
		t.Fatalf("FETCH payments.eu on the shared prefix: %+v", records)
	}
	if _, err := orders.nc.Request("VOIK.API.FETCH.shipments.eu", nil, requestTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("FETCH of a subject no voik captures: %v, want no responders", err)
	}

	all := []string{"orders.eu", "orders.us", "payments.asia", "payments.eu"}
	for _, c := range []struct {
		req  messages.SubjectsRequest
		want []string
	}{
		{messages.SubjectsRequest{Filter: ">", Limit: 1000}, all},
		{messages.SubjectsRequest{Filter: ">", Offset: 1, Limit: 2}, all[1:3]},
		{messages.SubjectsRequest{Filter: "*.eu", Limit: 1000}, []string{"orders.eu", "payments.eu"}},
		{messages.SubjectsRequest{Filter: ">", Offset: 9, Limit: 1000}, []string{}},
	} {
		reply, err := subjectsPage(t, orders.api, c.req)
		if err != nil {
			t.Fatalf("SUBJECTS %+v: %v", c.req, err)
		}
		total := uint64(len(all))
		if c.req.Filter == "*.eu" {
			total = 2
		}
		if !reflect.DeepEqual(reply.Subjects, c.want) || reply.Total != total {
			t.Fatalf("SUBJECTS %+v: %v of %d, want %v of %d", c.req, reply.Subjects, reply.Total, c.want, total)
		}
	}

	replies := groupsOf(t, orders.api)
	if len(replies) != 2 || replies[0].Group != "" || replies[1].Group != "" || replies[0].Leader != "" ||
		!reflect.DeepEqual([][]string{replies[0].Filters, replies[1].Filters}, [][]string{{"orders.>"}, {"payments.>"}}) &&
			!reflect.DeepEqual([][]string{replies[0].Filters, replies[1].Filters}, [][]string{{"payments.>"}, {"orders.>"}}) {
		t.Fatalf("GROUPS: %+v; want one standalone voik with orders.> and one with payments.>", replies)
	}
	if lines := voikGroupsCLI(t, bin, orders.server.ClientURL()); len(lines) != 2 {
		t.Fatalf("voik groups printed %v, want two lines", lines)
	}

	// kill -9: the others hear nothing more of it, and say so.
	// Until NATS has seen the killed voik's connection close, a SUBJECTS
	// may still be given to it (the voiks share a queue group for it):
	// wait for that (a FETCH only it took gets no responders), then ask,
	// with a raw request (the client retries a 503), well within the 3.5 s
	// the others remember the killed one.
	payments.Kill()
	harness.Eventually(t, 5*time.Second, "NATS to drop the killed voik's subscriptions", func() bool {
		_, err := orders.nc.Request("VOIK.API.INFO.payments.eu", nil, 100*time.Millisecond)
		return errors.Is(err, nats.ErrNoResponders)
	})
	reply, err := orders.nc.Request("VOIK.API.SUBJECTS", nil, 3*time.Second)
	if err != nil {
		t.Fatalf("SUBJECTS right after kill -9 of the payments voik: %v", err)
	}
	desc := wantError(t, "SUBJECTS right after kill -9 of the payments voik", decodeReply(t, reply.Data), 503)
	descriptionSays(t, desc, "standalone voik", "payments.>")
	harness.Eventually(t, 15*time.Second, "SUBJECTS without the killed voik", func() bool {
		reply, err := subjectsPage(t, orders.api, messages.SubjectsRequest{Filter: ">", Limit: 1000})
		return err == nil && reflect.DeepEqual(reply.Subjects, all[:2])
	})
	if _, err := orders.nc.Request("VOIK.API.FETCH.payments.eu", nil, requestTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("FETCH payments.eu with its voik gone: %v, want no responders", err)
	}

	// Back, then stopped cleanly: it says goodbye, and SUBJECTS goes on
	// without it well before it would have been forgotten.
	payments.Restart(t)
	harness.Eventually(t, 15*time.Second, "SUBJECTS with the restarted voik", func() bool {
		reply, err := subjectsPage(t, orders.api, messages.SubjectsRequest{Filter: ">", Limit: 1000})
		return err == nil && reflect.DeepEqual(reply.Subjects, all)
	})
	presences, err := orders.nc.SubscribeSync("$VOIK.PEERS.PRESENCE.VOIK.API")
	if err != nil {
		t.Fatal(err)
	}
	orders.nc.Flush()
	payments.Stop(t)
	for {
		msg, err := presences.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no goodbye from the stopped voik: %v", err)
		}
		var p struct {
			Filters []string `msgpack:"filters"`
			Gone    bool     `msgpack:"gone"`
		}
		if msgpack.Unmarshal(msg.Data, &p) == nil && p.Gone && reflect.DeepEqual(p.Filters, []string{"payments.>"}) {
			break
		}
	}
	harness.Eventually(t, 10*time.Second, "SUBJECTS without the stopped voik", func() bool {
		reply, err := subjectsPage(t, orders.api, messages.SubjectsRequest{Filter: ">", Limit: 1000})
		return err == nil && reflect.DeepEqual(reply.Subjects, all[:2])
	})
}

// TestAGroupAndAStandaloneVoikShareAPrefix: a group of three (orders.>)
// and a standalone voik (payments.>) on a cluster of three NATS servers.
// GROUPS gets two replies: the group's from its leader, and the voik's.
// Requests about either's subjects are answered once, SUBJECTS merges
// both, and another group whose filters overlap the first's is refused.
func TestAGroupAndAStandaloneVoikShareAPrefix(t *testing.T) {
	cluster := harness.StartNATSCluster(t, 3)
	bin := harness.BuildVoik(t)
	members := startGroup(t, bin, cluster, 3)
	paymentsCfg := harness.TestConfig(t, cluster.ClientURL(1))
	paymentsCfg.Subjects = "payments.>"
	harness.StartVoik(t, paymentsCfg)
	nc := harness.Connect(t, cluster.ClientURL(2))
	api := client.New(nc, "VOIK.API")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, subject := range []string{"orders.eu", "payments.eu"} {
		if _, err := api.Append(ctx, subject, nil, []byte(subject)); err != nil {
			t.Fatalf("acked append to %s: %v", subject, err)
		}
	}
	harness.Eventually(t, 30*time.Second, "every member caught up", func() bool { return allCaught(api, members) })

	replies := groupsOf(t, api)
	leader := leaderOf(members)
	if len(replies) != 2 || replies[0].Group != "" || replies[1].Group != "g" || leader < 0 ||
		replies[1].Leader != members[leader].Config.Instance || replies[1].Instance != replies[1].Leader ||
		!reflect.DeepEqual(replies[1].Filters, []string{"orders.>"}) || !reflect.DeepEqual(replies[0].Filters, []string{"payments.>"}) {
		t.Fatalf("GROUPS: %+v; want the standalone voik, and group g answered by its leader (member %d)", replies, leader)
	}
	counter := &replyCounter{nc: nc}
	for range 5 { // the group's queue group spreads them over its members
		for _, subject := range []string{"orders.eu", "payments.eu"} {
			counter.send(t, "VOIK.API.INFO."+subject, nil)
			counter.send(t, "VOIK.API.FETCH."+subject, nil)
		}
		counter.send(t, "VOIK.API.SUBJECTS", nil)
		counter.send(t, "VOIK.API.GROUP.g", nil)
	}
	counter.expectOnceEach(t)
	reply, err := api.Subjects(ctx, messages.SubjectsRequest{Filter: ">", Limit: 1000})
	if err != nil || !reflect.DeepEqual(reply.Subjects, []string{"orders.eu", "payments.eu"}) {
		t.Fatalf("SUBJECTS: %+v, %v", reply, err)
	}
	lines := voikGroupsCLI(t, bin, cluster.ClientURL(0))
	if len(lines) != 2 || lines[1]["group"] != "g" {
		t.Fatalf("voik groups printed %v", lines)
	}
	if ms, _ := lines[1]["members"].([]any); len(ms) != 3 {
		t.Fatalf("voik groups: group g with members %v, want three", lines[1]["members"])
	}

	other := groupConfig(t, cluster.ClientURL(0), 0)
	other.Group, other.Subjects = "h", "orders.eu,refunds.>"
	status, stderr := serveExits(t, bin, other)
	if status != 2 || !strings.Contains(stderr, `group "g"`) || !strings.Contains(stderr, "orders.eu with orders.>") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("a group whose filters overlap group g's: exit %d, %q; want 2 and one line naming g and the filters", status, stderr)
	}
}
