package charttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsUnquote is the NATS chart's rule for its config values: a string
// "<< x >>" is written as x, unquoted (a variable, or a size with units).
var natsUnquote = regexp.MustCompile(`"<< (.*?) >>"`)

// natsConf is the example's config.merge over a server of this test
// (loopback, a random port, JetStream in storeDir), written the way the
// NATS chart writes nats.conf: JSON, which the NATS config parser reads,
// with the << >> strings unquoted.
func natsConf(t *testing.T, v sidecarValues, storeDir string) []byte {
	t.Helper()
	conf := map[string]any{
		"host": "127.0.0.1", "port": -1,
		"jetstream": map[string]any{"store_dir": storeDir, "max_file_store": 64 << 20, "max_memory_store": 0},
	}
	merge, err := json.Marshal(v.Config.Merge)
	if err != nil {
		t.Fatal(err)
	}
	var copied map[string]any
	if err := json.Unmarshal(merge, &copied); err != nil {
		t.Fatal(err)
	}
	mergeInto(conf, copied)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // > stays >
	enc.SetIndent("", "  ")
	if err := enc.Encode(conf); err != nil {
		t.Fatal(err)
	}
	return natsUnquote.ReplaceAll(buf.Bytes(), []byte("$1"))
}

// TestSidecarNATSPermissions runs a NATS server with the example's config
// (its users and permissions, JetStream on) and checks that they do what
// the example says: voik's user can keep the group's state in JetStream and
// replicate on $VOIK.>; another user can use NATS and JetStream otherwise,
// but cannot publish or subscribe on $VOIK.>, nor touch the VOIK_GROUPS
// bucket.
func TestSidecarNATSPermissions(t *testing.T) {
	v := readSidecarValues(t)
	dir := t.TempDir()
	// The passwords: the NATS container's env (from the Secret), here set
	// in this process, which the config's $VARIABLES read.
	passwords := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(v.Container.Env)) {
		b := make([]byte, 12)
		rand.Read(b)
		passwords[name] = hex.EncodeToString(b)
		t.Setenv(name, passwords[name])
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, natsConf(t, v, filepath.Join(dir, "js")), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		conf, _ := os.ReadFile(confPath)
		t.Fatalf("the NATS server refuses the example's config: %v\n%s", err, conf)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("the NATS server did not start")
	}

	s := patchedNATSStatefulSet(t)
	voikEnv := envMap(container(t, s.Spec.Template.Spec, "voik"))
	group := voikEnv["VOIK_GROUP"].Value
	password := func(user string) string {
		for _, u := range natsUsers(t, v) {
			if u.User == user {
				return passwords[strings.TrimSuffix(strings.TrimPrefix(u.Password, "<< $"), " >>")]
			}
		}
		t.Fatalf("no user %s", user)
		return ""
	}
	type conn struct {
		nc   *nats.Conn
		errs chan error
	}
	connect := func(user string, opts ...nats.Option) conn {
		t.Helper()
		errs := make(chan error, 16)
		opts = append(opts, nats.UserInfo(user, password(user)), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
		nc, err := nats.Connect(ns.ClientURL(), opts...)
		if err != nil {
			t.Fatalf("user %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return conn{nc, errs}
	}
	// deniedNext waits for the server's permissions violation of subject.
	deniedNext := func(c conn, what, subject string) {
		t.Helper()
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-c.errs:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") || !strings.Contains(err.Error(), subject) {
				t.Errorf("%s %s: error %v, want a permissions violation for it", what, subject, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s %s: allowed, want a permissions violation", what, subject)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// voik's user, as voik connects (its inboxes under $VOIK.INBOX).
	voikUser := voikEnv["VOIK_NATS_USER"].Value
	voik := connect(voikUser, nats.CustomInboxPrefix("$VOIK.INBOX"))
	peer := connect(voikUser, nats.CustomInboxPrefix("$VOIK.INBOX"))
	js, err := jetstream.New(voik.nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "VOIK_GROUPS", History: 1})
	if err != nil {
		t.Fatalf("voik's user cannot create the group's bucket: %v", err)
	}
	if _, err := kv.Put(ctx, group, []byte(`{"leader":"nats-0"}`)); err != nil {
		t.Fatalf("voik's user cannot write the group's state: %v", err)
	}
	if e, err := kv.Get(ctx, group); err != nil || string(e.Value()) != `{"leader":"nats-0"}` {
		t.Fatalf("voik's user reads back %v, %v", e, err)
	}
	repl, err := voik.nc.SubscribeSync("$VOIK.REPL." + group + ".>")
	if err != nil {
		t.Fatal(err)
	}
	pull := "$VOIK.REPL." + group + ".PULL.nats-0"
	if _, err := voik.nc.Subscribe(pull, func(m *nats.Msg) { m.Respond([]byte("batch")) }); err != nil {
		t.Fatal(err)
	}
	if err := voik.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if reply, err := peer.nc.Request(pull, []byte("pull"), 5*time.Second); err != nil || string(reply.Data) != "batch" {
		t.Fatalf("one voik pulling from another: %v, %v", reply, err)
	}
	if m, err := repl.NextMsg(5 * time.Second); err != nil || string(m.Data) != "pull" {
		t.Fatalf("voik's replication subscription got %v, %v", m, err)
	}
	if _, err := voik.nc.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	deniedNext(voik, "voik's user subscribing to", "_INBOX.>")

	// Another user: NATS and JetStream as usual...
	app := connect("app")
	orders, err := app.nc.SubscribeSync("orders.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := app.nc.Publish("orders.eu", []byte("order")); err != nil {
		t.Fatal(err)
	}
	if m, err := orders.NextMsg(5 * time.Second); err != nil || string(m.Data) != "order" {
		t.Fatalf("the app user's own subjects: %v, %v", m, err)
	}
	appJS, err := jetstream.New(app.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := appJS.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatalf("the app user cannot use JetStream for its own streams: %v", err)
	}

	// ...but nothing of voik's group.
	if _, err := app.nc.SubscribeSync("$VOIK.REPL." + group + ".>"); err != nil {
		t.Fatal(err)
	}
	deniedNext(app, "the app user subscribing to", "$VOIK.REPL."+group+".>")
	if _, err := app.nc.SubscribeSync("$VOIK.INBOX.>"); err != nil {
		t.Fatal(err)
	}
	deniedNext(app, "the app user subscribing to", "$VOIK.INBOX.>")
	forged := "$VOIK.REPL." + group + ".LEADER"
	if err := app.nc.Publish(forged, []byte("app")); err != nil {
		t.Fatal(err)
	}
	deniedNext(app, "the app user publishing to", forged)
	// Had the forged message passed, voik's subscription would have it
	// before this one: the server handled the app's publish (its Flush
	// above) before the peer's.
	if err := peer.nc.Publish("$VOIK.REPL."+group+".LEADER", []byte("nats-1")); err != nil {
		t.Fatal(err)
	}
	if m, err := repl.NextMsg(5 * time.Second); err != nil || string(m.Data) != "nats-1" {
		t.Errorf("voik's replication subscription got %v, %v; want the peer's message, not the app's", m, err)
	}
	if err := app.nc.Publish("$KV.VOIK_GROUPS."+group, []byte(`{"leader":"app"}`)); err != nil {
		t.Fatal(err)
	}
	deniedNext(app, "the app user publishing to", "$KV.VOIK_GROUPS."+group)
	for _, api := range []string{
		"$JS.API.STREAM.INFO.KV_VOIK_GROUPS",
		"$JS.API.STREAM.PURGE.KV_VOIK_GROUPS",
		"$JS.API.DIRECT.GET.KV_VOIK_GROUPS.$KV.VOIK_GROUPS." + group,
		"$JS.API.STREAM.MSG.GET.KV_VOIK_GROUPS",
		"$JS.API.CONSUMER.CREATE.KV_VOIK_GROUPS.watch",
	} {
		if err := app.nc.Publish(api, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		deniedNext(app, "the app user publishing to", api)
	}
	kctx, kcancel := context.WithTimeout(ctx, 2*time.Second)
	defer kcancel()
	if _, err := appJS.KeyValue(kctx, "VOIK_GROUPS"); err == nil {
		t.Error("the app user can bind the VOIK_GROUPS bucket")
	} else if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(strings.ToLower(err.Error()), "permission") {
		t.Logf("binding VOIK_GROUPS as the app user: %v", err)
	}
	if e, err := kv.Get(ctx, group); err != nil || string(e.Value()) != `{"leader":"nats-0"}` {
		t.Errorf("the group's state after the app user's attempts: %v, %v", e, err)
	}
}
