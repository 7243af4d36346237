package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
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

// cliWorld is a NATS server with voik capturing it, and the environment
// that points the CLI at both.
type cliWorld struct {
	url  string
	voik *harness.Voik
	nc   *nats.Conn
	api  *client.Client
}

func startCLIWorld(t *testing.T) *cliWorld {
	t.Helper()
	ns := harness.StartNATS(t)
	v := harness.StartVoik(t, harness.TestConfig(t, ns.ClientURL()))
	t.Setenv("VOIK_NATS_URL", ns.ClientURL())
	t.Setenv("VOIK_API_PREFIX", "VOIK.API")
	nc := harness.Connect(t, ns.ClientURL())
	return &cliWorld{url: ns.ClientURL(), voik: v, nc: nc, api: client.New(nc, "")}
}

// runCLI runs voik with args and returns its exit status, stdout lines and
// stderr.
func runCLI(t *testing.T, args ...string) (int, []string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	var lines []string
	for _, line := range strings.Split(stdout.String(), "\n") {
		if line != "" {
			lines = append(lines, line)
		}
	}
	return code, lines, stderr.String()
}

// jsonLines decodes each line as one JSON object.
func jsonLines(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	out := make([]map[string]any, len(lines))
	for i, line := range lines {
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&out[i]); err != nil {
			t.Fatalf("line %d is not a JSON object: %v: %s", i, err, line)
		}
	}
	return out
}

func jsonUint(t *testing.T, v any) uint64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%#v is not a number", v)
	}
	u, err := strconv.ParseUint(n.String(), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", n, err)
	}
	return u
}

func (w *cliWorld) append(t *testing.T, subject string, headers nats.Header, data []byte) *messages.AckReply {
	t.Helper()
	ack, err := w.api.Append(context.Background(), subject, headers, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

func TestCLIFetchPrintsEveryRecordAsAJSONLineWithTextOrBase64Data(t *testing.T) {
	w := startCLIWorld(t)
	binary := []byte{0xff, 0xfe, 0x00, 'x'}
	w.append(t, "cli.orders", nil, []byte("first order"))
	w.append(t, "cli.orders", nats.Header{"Source": {"web", "app"}}, binary)
	w.append(t, "cli.orders", nil, []byte{})
	for i := 3; i < 250; i++ { // more than a page of 100
		w.nc.Publish("cli.orders", []byte(fmt.Sprint(i)))
	}
	w.append(t, "cli.orders", nil, []byte("250"))

	code, lines, stderr := runCLI(t, "fetch", "cli.orders")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	records := jsonLines(t, lines)
	if len(records) != 251 {
		t.Fatalf("%d lines, want 251", len(records))
	}
	for i, r := range records {
		if jsonUint(t, r["offset"]) != uint64(i) || r["subject"] != "cli.orders" {
			t.Fatalf("line %d: %v", i, r)
		}
		ts := jsonUint(t, r["ts"])
		if r["time"] != time.Unix(0, int64(ts)).UTC().Format(time.RFC3339Nano) {
			t.Fatalf("line %d: time %v for ts %d", i, r["time"], ts)
		}
	}
	want0 := map[string]any{"subject": "cli.orders", "offset": records[0]["offset"], "ts": records[0]["ts"], "time": records[0]["time"],
		"headers": map[string]any{"Voik-Ack": []any{"1"}}, "data": "first order"}
	if !reflect.DeepEqual(records[0], want0) {
		t.Fatalf("text record: %v", records[0])
	}
	// Not UTF-8: data_base64 instead of data; headers as published.
	if _, hasData := records[1]["data"]; hasData || records[1]["data_base64"] != base64.StdEncoding.EncodeToString(binary) {
		t.Fatalf("binary record: %v", records[1])
	}
	if got := fmt.Sprint(records[1]["headers"]); !strings.Contains(got, "Source:[web app]") || !strings.Contains(got, "Voik-Ack:[1]") {
		t.Fatalf("headers: %v", records[1]["headers"])
	}
	if records[2]["data"] != "" {
		t.Fatalf("empty record: %v", records[2])
	}
	if records[250]["data"] != "250" {
		t.Fatalf("last record: %v", records[250])
	}

	// --offset and --count, before or after the subject.
	for _, args := range [][]string{{"fetch", "cli.orders", "--offset", "5", "--count", "3"}, {"fetch", "--count", "3", "--offset", "5", "cli.orders"}} {
		code, lines, _ = runCLI(t, args...)
		got := jsonLines(t, lines)
		if code != 0 || len(got) != 3 || jsonUint(t, got[0]["offset"]) != 5 || jsonUint(t, got[2]["offset"]) != 7 {
			t.Fatalf("%v: exit %d, %v", args, code, lines)
		}
	}
	// --since an RFC 3339 time: from the first record at or after it.
	since := time.Unix(0, int64(jsonUint(t, records[200]["ts"]))).UTC().Format(time.RFC3339Nano)
	code, lines, _ = runCLI(t, "fetch", "cli.orders", "--since", since)
	got := jsonLines(t, lines)
	if code != 0 || len(got) == 0 || jsonUint(t, got[len(got)-1]["offset"]) != 250 || jsonUint(t, got[0]["offset"]) > 200 {
		t.Fatalf("--since %s: exit %d, %d lines", since, code, len(got))
	}
	// --since a duration ago that covers everything.
	code, lines, _ = runCLI(t, "fetch", "cli.orders", "--since", "1h")
	if code != 0 || len(lines) != 251 {
		t.Fatalf("--since 1h: exit %d, %d lines", code, len(lines))
	}
}

func TestCLIInfoPrintsOneJSONLineWithTheContractNames(t *testing.T) {
	w := startCLIWorld(t)
	first := w.append(t, "cli.info", nil, []byte("abc"))
	last := w.append(t, "cli.info", nil, []byte("defg"))
	code, lines, stderr := runCLI(t, "info", "cli.info")
	if code != 0 || len(lines) != 1 {
		t.Fatalf("exit %d, %q, stderr %q", code, lines, stderr)
	}
	got := jsonLines(t, lines)[0]
	want := map[string]any{
		"subject": "cli.info", "first_offset": json.Number("0"), "end_offset": json.Number("2"), "messages": json.Number("2"),
		"bytes": json.Number("25"), "first_ts": json.Number(fmt.Sprint(first.Timestamp)), "last_ts": json.Number(fmt.Sprint(last.Timestamp)),
		"segments": json.Number("1"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("info\n got %v\nwant %v", got, want)
	}
}

func TestCLISubjectsPrintsEachMatchingSubjectAsAJSONString(t *testing.T) {
	w := startCLIWorld(t)
	for _, s := range []string{"cli.b", "cli.a", "other.x", "cli.c.d"} {
		w.append(t, s, nil, nil)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"subjects"}, []string{`"cli.a"`, `"cli.b"`, `"cli.c.d"`, `"other.x"`}},
		{[]string{"subjects", "cli.*"}, []string{`"cli.a"`, `"cli.b"`}},
		{[]string{"subjects", "nothing.>"}, nil},
	} {
		code, lines, stderr := runCLI(t, c.args...)
		if code != 0 || !reflect.DeepEqual(lines, c.want) {
			t.Fatalf("%v: exit %d, %q (stderr %q), want %q", c.args, code, lines, stderr, c.want)
		}
	}
}

func TestCLIReplayPrintsTheReplyAndVoikDeliversTheRecords(t *testing.T) {
	w := startCLIWorld(t)
	for i := 0; i < 5; i++ {
		w.append(t, "cli.replay", nil, []byte(fmt.Sprint(i)))
	}
	sub, err := w.nc.SubscribeSync("cli.replayed")
	if err != nil {
		t.Fatal(err)
	}
	w.nc.Flush()
	code, lines, stderr := runCLI(t, "replay", "cli.replay", "--deliver", "cli.replayed", "--offset", "1", "--count", "3")
	if code != 0 || len(lines) != 1 {
		t.Fatalf("exit %d, %q, stderr %q", code, lines, stderr)
	}
	want := map[string]any{"subject": "cli.replay", "first_offset": json.Number("1"), "end_offset": json.Number("4"), "deliver": "cli.replayed"}
	if got := jsonLines(t, lines)[0]; !reflect.DeepEqual(got, want) {
		t.Fatalf("replay reply %v, want %v", got, want)
	}
	for offset := 1; offset <= 4; offset++ {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if offset == 4 {
			if msg.Header.Get(messages.HeaderStatus) != messages.StatusEnd {
				t.Fatalf("end marker: %v", msg.Header)
			}
			break
		}
		if string(msg.Data) != fmt.Sprint(offset) {
			t.Fatalf("replayed %q, want %d", msg.Data, offset)
		}
	}
}

func TestCLIExitStatusIs0ForSuccess1ForARuntimeFailureAnd2ForAUsageError(t *testing.T) {
	w := startCLIWorld(t)
	w.append(t, "cli.exit", nil, []byte("x"))
	cases := []struct {
		args []string
		code int
	}{
		{[]string{"version"}, 0},
		{[]string{"-h"}, 0},
		{[]string{"help"}, 0},
		{[]string{"fetch", "cli.exit"}, 0},
		{[]string{"fetch", "-h"}, 0},

		{[]string{"fetch", "cli.none"}, 1},                             // 404
		{[]string{"info", "cli.none"}, 1},                              // 404
		{[]string{"replay", "cli.none", "--deliver", "x"}, 1},          // 404
		{[]string{"fetch", "cli.exit", "--offset", "9"}, 1},            // 416
		{[]string{"replay", "cli.exit", "--deliver", "VOIK.API.x"}, 1}, // 400: under the API prefix

		{[]string{"nonsense"}, 2},
		{[]string{"fetch"}, 2},
		{[]string{"fetch", "a", "b"}, 2},
		{[]string{"info"}, 2},
		{[]string{"subjects", "a", "b"}, 2},
		{[]string{"fetch", "cli.exit", "--bogus"}, 2},
		{[]string{"fetch", "cli.exit", "--count", "many"}, 2},
		{[]string{"fetch", "cli.exit", "--offset", "abc"}, 2},
		{[]string{"fetch", "cli.exit", "--offset", "-1"}, 2},
		{[]string{"fetch", "cli.exit", "--since", "yesterday"}, 2},
		{[]string{"fetch", "cli.exit", "--offset", "1", "--since", "1m"}, 2},
		{[]string{"replay", "cli.exit"}, 2}, // --deliver is required
		{[]string{"replay", "cli.exit", "--deliver", "x", "--offset", "x"}, 2},
		{[]string{"serve", "extra"}, 2},
		{[]string{"subjects", "a..b"}, 2},                       // not a filter: found before asking
		{[]string{"replay", "cli.exit", "--deliver", "a.*"}, 2}, // not a subject: found before asking
		{[]string{"fetch", "a.*"}, 2},
		{[]string{"-nosuchflag"}, 2},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, lines, stderr := runCLI(t, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", code, c.code, lines, stderr)
			}
			if c.code != 0 && (stderr == "" || len(lines) != 0) {
				t.Fatalf("a failure prints on stderr only: stdout %q, stderr %q", lines, stderr)
			}
			if c.code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("a runtime failure is one line: %q", stderr)
			}
		})
	}
	// NATS that cannot be reached is a runtime failure.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	t.Setenv("VOIK_NATS_URL", "nats://"+closed)
	if code, _, stderr := runCLI(t, "info", "cli.exit"); code != 1 || !strings.Contains(stderr, "cannot connect") {
		t.Fatalf("unreachable NATS: exit %d, %q", code, stderr)
	}
	// Bad configuration is a usage error.
	t.Setenv("VOIK_NATS_URL", w.url)
	t.Setenv("VOIK_API_PREFIX", "bad..prefix")
	if code, _, stderr := runCLI(t, "info", "cli.exit"); code != 2 || !strings.Contains(stderr, "VOIK_API_PREFIX") {
		t.Fatalf("bad VOIK_API_PREFIX: exit %d, %q", code, stderr)
	}
}

func TestServeWithBadConfigurationExits2WithOneClearLine(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	file := t.TempDir() + "/a-file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noJetStream := harness.StartNATS(t)
	cases := []struct {
		name string
		env  map[string]string
		says string
	}{
		{"invalid subject filter", map[string]string{"VOIK_SUBJECTS": "a..b"}, "VOIK_SUBJECTS"},
		{"invalid API prefix", map[string]string{"VOIK_API_PREFIX": "VOIK.*"}, "VOIK_API_PREFIX"},
		{"unparsable duration", map[string]string{"VOIK_SYNC_INTERVAL": "soon"}, "configuration"},
		{"data dir that cannot be created", map[string]string{"VOIK_DATA_DIR": file + "/data"}, "VOIK_DATA_DIR"},
		{"HTTP port taken", map[string]string{"VOIK_HTTP_ADDR": "127.0.0.1:" + takenPort}, "VOIK_HTTP_ADDR"},
		{"embedded NATS port taken", map[string]string{"VOIK_NATS_URL": "", "VOIK_EMBEDDED_PORT": takenPort}, takenPort},
		{"group name with a dot", map[string]string{"VOIK_GROUP": "a.b"}, "VOIK_GROUP"},
		{"group of nine", map[string]string{"VOIK_GROUP": "g", "VOIK_REPLICAS": "9"}, "VOIK_REPLICAS"},
		{"group without JetStream", map[string]string{"VOIK_GROUP": "g", "VOIK_NATS_URL": noJetStream.ClientURL(), "VOIK_LOG_LEVEL": "warn"}, "JetStream is not enabled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("VOIK_DATA_DIR", t.TempDir())
			t.Setenv("VOIK_HTTP_ADDR", "")
			t.Setenv("VOIK_NATS_URL", "nats://127.0.0.1:1")
			t.Setenv("VOIK_SUBJECTS", "orders.>") // named, as a voik on a NATS of its own may have to
			t.Setenv("VOIK_EMBEDDED_HOST", "127.0.0.1")
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			type result struct {
				code   int
				stderr string
			}
			done := make(chan result, 1)
			go func() {
				var stdout, stderr bytes.Buffer
				code := run([]string{"serve"}, &stdout, &stderr)
				done <- result{code, stderr.String()}
			}()
			select {
			case r := <-done:
				line := strings.TrimSuffix(r.stderr, "\n")
				if r.code != 2 || line == "" || strings.Contains(line, "\n") || strings.Contains(line, "goroutine") || !strings.Contains(line, c.says) {
					t.Fatalf("exit %d, stderr %q; want 2 and one line saying %q", r.code, r.stderr, c.says)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("voik serve did not stop on a bad configuration")
			}
		})
	}
}

func TestHelpListsEverySettingWithItsVariableDefaultAndMeaning(t *testing.T) {
	code, lines, errOut := runCLI(t, "-h")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q: want help on stdout alone", code, errOut)
	}
	stderr := strings.Join(lines, "\n") // the help, on stdout
	for _, want := range []string{
		"VOIK_NATS_URL", "VOIK_DATA_DIR", "./data", "VOIK_SUBJECTS", "VOIK_API_PREFIX", "VOIK.API", "VOIK_HTTP_ADDR", ":8333",
		"fetch", "info", "subjects", "replay",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("voik -h does not mention %q", want)
		}
	}
	typ := reflect.TypeOf(config.Config{})
	for i := 0; i < typ.NumField(); i++ {
		if env := typ.Field(i).Tag.Get("env"); !strings.Contains(stderr, env) {
			t.Errorf("voik -h does not list %s", env)
		}
	}
}

// TestUnknownFlagIsOneLine: a flag voik does not know is a usage error:
// exit 2 and one line on stderr that says which, not the whole help.
func TestUnknownFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{{"-bogus"}, {"fetch", "orders.eu", "--bogus"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 2 || len(stdout) != 0 {
			t.Fatalf("voik %q: exit %d, stdout %q", args, code, stdout)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "-bogus") {
			t.Fatalf("voik %q: stderr %q: want one line naming the flag", args, stderr)
		}
	}
	// Help asked for goes to stdout, for a pager or grep.
	if code, stdout, stderr := runCLI(t, "fetch", "-h"); code != 0 || stderr != "" || !strings.Contains(strings.Join(stdout, "\n"), "-follow") {
		t.Fatalf("voik fetch -h: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestHelpNeverShowsSecrets: with secrets in the environment, voik -h
// lists the settings but never their values. -h describes the settings
// from an empty Config today; this keeps it so should it ever show the
// values in effect (as a "current" column would).
func TestHelpNeverShowsSecrets(t *testing.T) {
	const token, password = "token-that-must-not-show", "password-that-must-not-show"
	t.Setenv("VOIK_NATS_TOKEN", token)
	t.Setenv("VOIK_NATS_USER", "voik")
	t.Setenv("VOIK_NATS_PASSWORD", password)
	code, stdout, stderr := runCLI(t, "-h")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	all := strings.Join(stdout, "\n") + stderr
	if !strings.Contains(all, "VOIK_NATS_TOKEN") || !strings.Contains(all, "VOIK_NATS_PASSWORD") {
		t.Fatal("voik -h does not list the secret settings")
	}
	for _, secret := range []string{token, password} {
		if strings.Contains(all, secret) {
			t.Fatalf("voik -h shows a secret value %q", secret)
		}
	}
}
