package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
)

// runCLIRaw runs voik with args and returns its exit status, stdout as
// bytes and stderr.
func runCLIRaw(t *testing.T, args ...string) (int, []byte, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.Bytes(), stderr.String()
}

// unsetenv removes k from the environment for the rest of the test.
func unsetenv(t *testing.T, k string) {
	t.Helper()
	t.Setenv(k, "") // restores the value at the end of the test
	os.Unsetenv(k)
}

// closedURL is a NATS URL where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

// startFakeAPI starts a NATS server with no voik but a responder under
// the prefix FAKE.API, which answers as the test's handler says: for
// what voik cannot be made to do on demand (cut a replay short, lose a
// record, send a reply that does not decode). The CLI is pointed at it.
func startFakeAPI(t *testing.T, handle func(nc *nats.Conn, m *nats.Msg)) *nats.Conn {
	t.Helper()
	ns := harness.StartNATS(t)
	t.Setenv("VOIK_NATS_URL", ns.ClientURL())
	t.Setenv("VOIK_API_PREFIX", "FAKE.API")
	nc := harness.Connect(t, ns.ClientURL())
	if _, err := nc.Subscribe("FAKE.API.>", func(m *nats.Msg) { handle(nc, m) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return nc
}

func replayedMsg(deliver, subject string, offset uint64, data string) *nats.Msg {
	m := nats.NewMsg(deliver)
	m.Header.Set(messages.HeaderSubject, subject)
	m.Header.Set(messages.HeaderOffset, strconv.FormatUint(offset, 10))
	m.Header.Set(messages.HeaderTimestamp, strconv.FormatUint(1795657050000000000+offset, 10))
	m.Data = []byte(data)
	return m
}

func statusMsg(deliver, status string, offset uint64) *nats.Msg {
	m := nats.NewMsg(deliver)
	m.Header.Set(messages.HeaderStatus, status)
	m.Header.Set(messages.HeaderOffset, strconv.FormatUint(offset, 10))
	return m
}

// Point 1: an error reply reads "416 out of range: …" after the CLI's
// own "voik fetch: ", and no CLI error line says "voik" twice.
func TestCLIErrorLinesSayVoikOnce(t *testing.T) {
	for code, want := range map[int]string{
		400: "400 bad request: x", 404: "404 not found: x", 413: "413 too large: x",
		416: "416 out of range: x", 500: "500 internal error: x", 503: "503 unavailable: x", 418: "418: x",
	} {
		if got := (&messages.Error{Code: code, Description: "x"}).Error(); got != want {
			t.Errorf("code %d: %q, want %q", code, got, want)
		}
	}

	w := startCLIWorld(t)
	w.append(t, "cli.err", nil, []byte("x"))
	onceLine := func(args []string, prefix string) {
		t.Helper()
		code, lines, stderr := runCLI(t, args...)
		if code != 1 || len(lines) != 0 {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, lines, stderr)
		}
		if !strings.HasPrefix(stderr, prefix) || strings.Count(stderr, "voik") != 1 || strings.Count(stderr, "\n") != 1 {
			t.Fatalf("%q: stderr %q: want one line starting %q, saying voik once", args, stderr, prefix)
		}
	}
	onceLine([]string{"fetch", "cli.err", "--offset", "9"}, "voik fetch: 416 out of range: ")
	onceLine([]string{"info", "cli.none"}, "voik info: 404 not found: ")
	onceLine([]string{"replay", "cli.none", "--deliver", "cli.x"}, "voik replay: 404 not found: ")
	onceLine([]string{"replay", "cli.err", "--deliver", "VOIK.API.x"}, "voik replay: 400 bad request: ")
	t.Setenv("VOIK_API_PREFIX", "NOBODY.HERE")
	onceLine([]string{"info", "cli.err"}, "voik info: request NOBODY.HERE.INFO.cli.err: ")

	// The client's own errors: a reply that does not decode, a replay
	// cut short or missing a record.
	startFakeAPI(t, func(nc *nats.Conn, m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "FAKE.API.INFO.") {
			m.Respond([]byte{0xc1})
			return
		}
		var req messages.ReplayRequest
		msgpack.Unmarshal(m.Data, &req)
		subject := strings.TrimPrefix(m.Subject, "FAKE.API.REPLAY.")
		m.Respond(messages.Encode(messages.ReplayReply{Subject: subject, FirstOffset: 0, EndOffset: 3, Deliver: req.Deliver}))
		nc.PublishMsg(replayedMsg(req.Deliver, subject, 0, "a"))
		switch subject {
		case "cut":
			nc.PublishMsg(statusMsg(req.Deliver, "503", 1))
		case "gap":
			nc.PublishMsg(replayedMsg(req.Deliver, subject, 2, "c"))
		}
		nc.Flush()
	})
	onceLine([]string{"info", "bad.reply"}, "voik info: reply is not a valid MessagePack map")
	onceLine([]string{"replay", "cut", "--wait"}, "voik replay: replay interrupted at offset 1 by a shutdown (Voik-Status 503)")
	onceLine([]string{"replay", "gap", "--wait"}, "voik replay: replay lost a record: got offset 2, expected 1")
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "voik.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Point 2: each command's argument errors say in words what it takes.
func TestCLIArgumentErrorsSayWhatEachCommandTakes(t *testing.T) {
	t.Setenv("VOIK_NATS_URL", closedURL(t))
	for _, c := range []struct {
		args []string
		line string
	}{
		{[]string{"subjects", "a", "b"}, "voik subjects: takes at most one FILTER, got 2 arguments (a b); see voik subjects -h"},
		{[]string{"fetch"}, "voik fetch: needs a SUBJECT; see voik fetch -h"},
		{[]string{"fetch", "a", "b", "--count", "1", "c"}, "voik fetch: takes one SUBJECT, got 3 arguments (a b c); see voik fetch -h"},
		{[]string{"info"}, "voik info: needs a SUBJECT; see voik info -h"},
		{[]string{"info", "a", "b c"}, `voik info: takes one SUBJECT, got 2 arguments (a "b c"); see voik info -h`},
		{[]string{"replay", "--deliver", "x"}, "voik replay: needs a SUBJECT; see voik replay -h"},
		{[]string{"serve", "extra"}, "voik serve: takes no arguments, got 1 argument (extra); see voik serve -h"},
		{[]string{"version", "1", "2"}, "voik version: takes no arguments, got 2 arguments (1 2); see voik version -h"},
		{[]string{"help", "fetch", "info"}, "voik help: takes at most one COMMAND, got 2 arguments (fetch info); see voik help -h"},
		{[]string{"help", "nonsense"}, `voik help: unknown command "nonsense"; see voik help -h`},
	} {
		code, stdout, stderr := runCLI(t, c.args...)
		if code != 2 || len(stdout) != 0 || stderr != c.line+"\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q\nwant exit 2 and %q", c.args, code, stdout, stderr, c.line)
		}
	}
}

// Point 3: a subject or filter that cannot be one is a usage error, exit
// 2, found before anything connects (here nothing could be connected to).
func TestCLIBadSubjectOrFilterIsAUsageErrorBeforeConnecting(t *testing.T) {
	t.Setenv("VOIK_NATS_URL", closedURL(t))
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"fetch", "a.*"}, `voik fetch: "a.*" is not a valid subject`},
		{[]string{"fetch", ""}, `voik fetch: "" is not a valid subject`},
		{[]string{"fetch", "a..b", "--count", "1"}, `voik fetch: "a..b" is not a valid subject`},
		{[]string{"fetch", "orders eu"}, `voik fetch: "orders eu" is not a valid subject`},
		{[]string{"info", "orders.>"}, `voik info: "orders.>" is not a valid subject`},
		{[]string{"replay", "a.*", "--deliver", "x"}, `voik replay: "a.*" is not a valid subject`},
		{[]string{"replay", "a", "--deliver", "x.>"}, `voik replay: --deliver "x.>" is not a valid subject`},
		{[]string{"subjects", "a..b"}, `voik subjects: "a..b" is not a valid filter`},
		{[]string{"subjects", ">.a"}, `voik subjects: ">.a" is not a valid filter`},
		{[]string{"subjects", ""}, `voik subjects: "" is not a valid filter`},
	} {
		code, stdout, stderr := runCLI(t, c.args...)
		if code != 2 || len(stdout) != 0 || !strings.HasPrefix(stderr, c.says) || strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "connect") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line starting %q", c.args, code, stdout, stderr, c.says)
		}
	}
	// Good subjects get as far as connecting: that is exit 1 here.
	for _, args := range [][]string{{"fetch", "a.b"}, {"subjects", "a.*.>"}, {"subjects"}} {
		if code, _, stderr := runCLI(t, args...); code != 1 || !strings.Contains(stderr, "cannot connect") {
			t.Errorf("%q: exit %d, %q; want 1, cannot connect", args, code, stderr)
		}
	}
}

// Points 4 and 5: every command has -h and --help: its usage, what it
// does, its arguments, every flag and examples, on stdout, exit 0.
func TestEveryCommandHasHelpWithArgumentsFlagsAndExamples(t *testing.T) {
	for _, c := range []struct {
		name  string
		args  string
		flags []string
	}{
		{"serve", "Arguments: none.", []string{"config"}},
		{"fetch", "Arguments:\n  SUBJECT ", []string{"config", "offset", "since", "last", "count", "follow", "wait", "data"}},
		{"info", "Arguments:\n  SUBJECT ", []string{"config"}},
		{"subjects", "Arguments:\n  FILTER ", []string{"config"}},
		{"replay", "Arguments:\n  SUBJECT ", []string{"config", "offset", "since", "count", "deliver", "wait", "print", "timeout"}},
		{"version", "Arguments: none.", []string{"config"}},
		{"help", "Arguments:\n  COMMAND ", []string{"config"}},
	} {
		var first string
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {c.name, "x", "-help"}, {"help", c.name}, {"-config", "f", c.name, "-h"}} {
			code, stdout, stderr := runCLIRaw(t, args...)
			help := string(stdout)
			if code != 0 || stderr != "" {
				t.Fatalf("%q: exit %d, stderr %q; want 0 and help on stdout", args, code, stderr)
			}
			if first == "" {
				first = help
			} else if help != first {
				t.Errorf("%q shows other help than %s -h", args, c.name)
			}
		}
		usageLine := "Usage: voik " + c.name
		if c.name == "serve" {
			usageLine = "Usage: voik [serve]"
		}
		for _, want := range []string{usageLine, c.args, "Examples:\n  voik", "\n  voik " + c.name} {
			if !strings.Contains(first, want) {
				t.Errorf("voik %s -h does not say %q:\n%s", c.name, want, first)
			}
		}
		for _, flag := range c.flags {
			if !strings.Contains(first, "\n  -"+flag+" ") && !strings.Contains(first, "\n  -"+flag+"\n") {
				t.Errorf("voik %s -h does not list -%s", c.name, flag)
			}
		}
		if n := strings.Count(first, "\n  -"); n != len(c.flags) {
			t.Errorf("voik %s -h lists %d flags, want %d", c.name, n, len(c.flags))
		}
	}
	// serve -h also lists every setting; serve with an argument is still
	// a usage error.
	_, stdout, _ := runCLIRaw(t, "serve", "-h")
	for _, want := range []string{"Runs voik in the foreground", "VOIK_NATS_URL", "VOIK_DATA_DIR", "VOIK_SUBJECTS", "VOIK_API_PREFIX"} {
		if !bytes.Contains(stdout, []byte(want)) {
			t.Errorf("voik serve -h does not say %q", want)
		}
	}
	if code, _, stderr := runCLI(t, "serve", "extra"); code != 2 || !strings.Contains(stderr, "takes no arguments") {
		t.Errorf("voik serve extra: exit %d, %q", code, stderr)
	}
}

// Point 9 and the top-level usage: data and data_base64 are explained,
// -config is said to be accepted anywhere.
func TestHelpExplainsDataBase64AndWhereConfigGoes(t *testing.T) {
	_, top, _ := runCLIRaw(t, "-h")
	_, fetch, _ := runCLIRaw(t, "fetch", "-h")
	for _, help := range []string{string(top), string(fetch)} {
		for _, want := range []string{`"data"`, "data_base64", "valid UTF-8", "standard base64", "--data"} {
			if !strings.Contains(help, want) {
				t.Errorf("help does not say %q:\n%s", want, help)
			}
		}
	}
	for _, want := range []string{"accepted anywhere", "voik fetch orders.eu -config voik.yaml", "voik serve -config voik.yaml", "voik COMMAND -h"} {
		if !strings.Contains(string(top), want) {
			t.Errorf("voik -h does not say %q", want)
		}
	}
}

// Point 6: -config FILE before the command, after it, among its
// arguments; the last one given wins.
func TestCLIConfigIsAcceptedBeforeOrAfterTheCommand(t *testing.T) {
	ns := harness.StartNATS(t)
	cfg := harness.TestConfig(t, ns.ClientURL())
	cfg.APIPrefix = "CLI.CFG" // only the file says so
	v := harness.StartVoik(t, cfg)
	if _, err := v.Client.Append(context.Background(), "cfg.orders", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"VOIK_NATS_URL", "VOIK_API_PREFIX", "VOIK_SUBJECTS", "VOIK_NATS_NAME"} {
		unsetenv(t, k)
	}
	good := writeFile(t, fmt.Sprintf("nats_url: %s\napi_prefix: CLI.CFG\n", ns.ClientURL()))
	bad := writeFile(t, "nats_url: "+closedURL(t)+"\n")
	for _, args := range [][]string{
		{"-config", good, "fetch", "cfg.orders"},
		{"fetch", "cfg.orders", "-config", good},
		{"fetch", "--config", good, "cfg.orders"},
		{"fetch", "cfg.orders", "--count", "1", "-config=" + good},
		{"-config", bad, "fetch", "cfg.orders", "-config", good},
		{"info", "cfg.orders", "-config", good},
		{"subjects", "-config", good},
		{"replay", "cfg.orders", "--wait", "-config", good},
	} {
		code, lines, stderr := runCLI(t, args...)
		if code != 0 || len(lines) != 1 || stderr != "" {
			t.Errorf("%q: exit %d, %q, stderr %q", args, code, lines, stderr)
		}
	}
	if code, _, stderr := runCLI(t, "fetch", "cfg.orders", "-config", bad); code != 1 || !strings.Contains(stderr, "cannot connect") {
		t.Errorf("the file's URL is not used: exit %d, %q", code, stderr)
	}

	// serve reads it too, before or after the command: a bad setting in
	// it stops serve with exit 2, naming it.
	t.Setenv("VOIK_DATA_DIR", t.TempDir())
	t.Setenv("VOIK_HTTP_ADDR", "")
	badSubjects := writeFile(t, "subjects: a..b\nnats_url: nats://127.0.0.1:1\n")
	for _, args := range [][]string{{"serve", "-config", badSubjects}, {"serve", "--config=" + badSubjects}, {"-config", badSubjects, "serve"}, {"-config", badSubjects}} {
		done := make(chan string, 1)
		go func() {
			code, _, stderr := runCLI(t, args...)
			done <- fmt.Sprint(code, " ", stderr)
		}()
		select {
		case got := <-done:
			if !strings.HasPrefix(got, "2 ") || !strings.Contains(got, `"a..b"`) {
				t.Errorf("%q: %q; want exit 2 naming the file's bad filter", args, got)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%q: serve did not read the file's bad setting", args)
		}
	}
}

// Point 7: replay --wait subscribes first, counts the records, and
// returns at the end marker with a summary; --print also prints each
// record, as fetch does.
func TestCLIReplayWaitReturnsAtTheEndMarkerWithASummary(t *testing.T) {
	w := startCLIWorld(t)
	w.append(t, "cli.rw", nats.Header{"Source": {"web"}}, []byte("zero"))
	w.append(t, "cli.rw", nil, []byte{0xff, 0x00})
	for i := 2; i < 5; i++ {
		w.append(t, "cli.rw", nil, []byte(fmt.Sprint(i)))
	}
	code, lines, stderr := runCLI(t, "replay", "cli.rw", "--wait")
	if code != 0 || len(lines) != 1 {
		t.Fatalf("--wait: exit %d, %q, stderr %q", code, lines, stderr)
	}
	sum := jsonLines(t, lines)[0]
	deliver, _ := sum["deliver"].(string)
	want := map[string]any{"subject": "cli.rw", "deliver": deliver, "first_offset": json.Number("0"), "end_offset": json.Number("5"), "delivered": json.Number("5")}
	if !reflect.DeepEqual(sum, want) || !strings.HasPrefix(deliver, "_INBOX.") {
		t.Fatalf("summary %v, want %v to a fresh inbox", sum, want)
	}

	// --print: the records as fetch prints them, then the summary; to a
	// --deliver of our choosing, which others may watch.
	watcher, err := w.nc.SubscribeSync("cli.rw.copy")
	if err != nil {
		t.Fatal(err)
	}
	w.nc.Flush()
	code, lines, stderr = runCLI(t, "replay", "cli.rw", "--print", "--offset", "1", "--deliver", "cli.rw.copy")
	_, fetched, _ := runCLI(t, "fetch", "cli.rw", "--offset", "1")
	if code != 0 || len(lines) != 5 || !reflect.DeepEqual(lines[:4], fetched) {
		t.Fatalf("--print: exit %d, stderr %q\n%q\nwant the lines of fetch:\n%q", code, stderr, lines, fetched)
	}
	want = map[string]any{"subject": "cli.rw", "deliver": "cli.rw.copy", "first_offset": json.Number("1"), "end_offset": json.Number("5"), "delivered": json.Number("4")}
	if sum := jsonLines(t, lines[4:])[0]; !reflect.DeepEqual(sum, want) {
		t.Fatalf("summary %v, want %v", sum, want)
	}
	if msg, err := watcher.NextMsg(10 * time.Second); err != nil || msg.Header.Get(messages.HeaderOffset) != "1" {
		t.Fatalf("on the deliver subject: %v, %v", msg, err)
	}
	// --count bounds it.
	code, lines, _ = runCLI(t, "replay", "cli.rw", "--wait", "--count", "2", "--timeout", "20s")
	if code != 0 || len(lines) != 1 || jsonUint(t, jsonLines(t, lines)[0]["delivered"]) != 2 {
		t.Fatalf("--count 2: exit %d, %q", code, lines)
	}
	// Without --wait: voik's reply, at once, and --deliver is needed.
	if code, _, stderr := runCLI(t, "replay", "cli.rw"); code != 2 || !strings.Contains(stderr, "--deliver is required without --wait") {
		t.Fatalf("no --deliver, no --wait: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "replay", "cli.rw", "--deliver", "x", "--timeout", "1s"); code != 2 || !strings.Contains(stderr, "--timeout is for --wait") {
		t.Fatalf("--timeout without --wait: exit %d, %q", code, stderr)
	}
}

// Point 7: a replay cut short (503), one that loses a record, or one that
// goes silent fails with exit 1, one line saying where; what was printed
// stays printed, and no summary follows.
func TestCLIReplayWaitFailsWhenCutShortOnAGapOrAfterTimeout(t *testing.T) {
	startFakeAPI(t, func(nc *nats.Conn, m *nats.Msg) {
		var req messages.ReplayRequest
		msgpack.Unmarshal(m.Data, &req)
		subject := strings.TrimPrefix(m.Subject, "FAKE.API.REPLAY.")
		m.Respond(messages.Encode(messages.ReplayReply{Subject: subject, FirstOffset: 10, EndOffset: 14, Deliver: req.Deliver}))
		nc.PublishMsg(nats.NewMsg(req.Deliver)) // not a replayed record: skipped on a --deliver of the caller's
		nc.PublishMsg(replayedMsg(req.Deliver, subject, 10, "a"))
		nc.PublishMsg(replayedMsg(req.Deliver, subject, 11, "b"))
		switch subject {
		case "cut":
			nc.PublishMsg(statusMsg(req.Deliver, "503", 12))
		case "deleted":
			nc.PublishMsg(statusMsg(req.Deliver, "416", 12))
		case "gap":
			nc.PublishMsg(replayedMsg(req.Deliver, subject, 13, "d"))
		case "whole":
			nc.PublishMsg(replayedMsg(req.Deliver, subject, 12, "c"))
			nc.PublishMsg(statusMsg(req.Deliver, "413", 13))
			nc.PublishMsg(statusMsg(req.Deliver, messages.StatusEnd, 14))
		}
		nc.Flush()
	})
	for _, c := range []struct {
		subject string
		code    int
		stderr  string
		lines   int
	}{
		{"cut", 1, "voik replay: replay interrupted at offset 12 by a shutdown (Voik-Status 503); 2 of the 4 records of [10, 14) delivered\n", 2},
		{"deleted", 1, "voik replay: replay interrupted at offset 12: retention deleted the record before it was sent (Voik-Status 416); 2 of the 4 records of [10, 14) delivered\n", 2},
		{"gap", 1, "voik replay: replay lost a record: got offset 13, expected 12; 2 of the 4 records of [10, 14) delivered\n", 2},
		{"silent", 1, "voik replay: nothing arrived on fake.deliver for 300ms (--timeout) while waiting for offset 12; 2 of the 4 records of [10, 14) delivered\n", 2},
		{"whole", 0, "", 4}, // three records, one too large to replay, the summary
	} {
		code, lines, stderr := runCLI(t, "replay", c.subject, "--print", "--deliver", "fake.deliver", "--timeout", "300ms")
		if code != c.code || stderr != c.stderr || len(lines) != c.lines {
			t.Errorf("%s: exit %d, stderr %q, %d lines %q\nwant exit %d, stderr %q, %d lines", c.subject, code, stderr, len(lines), lines, c.code, c.stderr, c.lines)
		}
		if c.subject == "whole" && len(lines) == 4 {
			want := map[string]any{"subject": "whole", "deliver": "fake.deliver", "first_offset": json.Number("10"), "end_offset": json.Number("14"), "delivered": json.Number("3"), "too_large": json.Number("1")}
			if got := jsonLines(t, lines[3:])[0]; !reflect.DeepEqual(got, want) {
				t.Errorf("summary %v, want %v", got, want)
			}
		}
	}
}

// Point 8: --last N starts at max(first_offset, end_offset-N).
func TestCLIFetchLast(t *testing.T) {
	w := startCLIWorld(t)
	for i := 0; i < 10; i++ {
		w.append(t, "cli.last", nil, []byte(fmt.Sprint(i)))
	}
	offsets := func(args ...string) []uint64 {
		t.Helper()
		code, lines, stderr := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d, %q", args, code, stderr)
		}
		var got []uint64
		for _, r := range jsonLines(t, lines) {
			got = append(got, jsonUint(t, r["offset"]))
		}
		return got
	}
	for _, c := range []struct {
		args []string
		want []uint64
	}{
		{[]string{"fetch", "cli.last", "--last", "3"}, []uint64{7, 8, 9}},
		{[]string{"fetch", "--last", "1", "cli.last"}, []uint64{9}},
		{[]string{"fetch", "cli.last", "--last", "3", "--count", "2"}, []uint64{7, 8}},
		{[]string{"fetch", "cli.last", "--last", "0"}, nil},
		{[]string{"fetch", "cli.last", "--last", "50"}, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
	} {
		if got := offsets(c.args...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: offsets %v, want %v", c.args, got, c.want)
		}
	}
	for _, args := range [][]string{
		{"fetch", "cli.last", "--last", "2", "--offset", "1"},
		{"fetch", "cli.last", "--since", "1m", "--last", "2"},
		{"fetch", "cli.last", "--last", "-1"},
		{"fetch", "cli.last", "--last", "x"},
	} {
		if code, lines, stderr := runCLI(t, args...); code != 2 || len(lines) != 0 || !strings.Contains(stderr, "last") {
			t.Errorf("%q: exit %d, %q, want 2", args, code, stderr)
		}
	}
	// After the last N, --follow waits for the next: appended once the
	// last one is printed.
	r, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		var stderr bytes.Buffer
		code := run([]string{"fetch", "cli.last", "--last", "1", "--follow", "--count", "2"}, pw, &stderr)
		pw.Close()
		done <- code
	}()
	lines := bufio.NewScanner(r)
	var got []string
	for lines.Scan() {
		got = append(got, lines.Text())
		if len(got) == 1 {
			w.append(t, "cli.last", nil, []byte("10"))
		}
	}
	if code := <-done; code != 0 || len(got) != 2 || jsonUint(t, jsonLines(t, got)[0]["offset"]) != 9 || jsonUint(t, jsonLines(t, got)[1]["offset"]) != 10 {
		t.Fatalf("--last 1 --follow: exit %d, %q", code, got)
	}
}

// Point 8: --wait is the long poll (wait_ms); alone it waits once for a
// record at the start offset, with --follow it is each poll's wait.
func TestCLIFetchWaitIsALongPoll(t *testing.T) {
	w := startCLIWorld(t)
	w.append(t, "cli.wait", nil, []byte("0"))
	type result struct {
		code  int
		lines []string
	}
	background := func(args ...string) chan result {
		done := make(chan result, 1)
		go func() {
			code, lines, _ := runCLI(t, args...)
			done <- result{code, lines}
		}()
		return done
	}
	await := func(done chan result, wantOffsets ...uint64) {
		t.Helper()
		select {
		case r := <-done:
			var got []uint64
			for _, rec := range jsonLines(t, r.lines) {
				got = append(got, jsonUint(t, rec["offset"]))
			}
			if r.code != 0 || !reflect.DeepEqual(got, wantOffsets) {
				t.Fatalf("exit %d, offsets %v, want 0 and %v", r.code, got, wantOffsets)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the long poll did not return the record")
		}
	}
	// Whether the record comes before or during the long poll, it is
	// the one printed, and the fetch ends.
	done := background("fetch", "cli.wait", "--offset", "1", "--wait", "30s")
	w.append(t, "cli.wait", nil, []byte("1"))
	await(done, 1)
	// A subject with no log yet: the long poll waits for its first record.
	done = background("fetch", "cli.wait.later", "--wait", "30s")
	w.append(t, "cli.wait.later", nil, []byte("first"))
	await(done, 0)
	// Nothing comes: an empty answer after the wait, exit 0.
	start := time.Now()
	if code, lines, stderr := runCLI(t, "fetch", "cli.wait", "--offset", "2", "--wait", "300ms"); code != 0 || len(lines) != 0 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("exit %d, %q, %q after %v", code, lines, stderr, time.Since(start))
	}
	for _, args := range [][]string{{"fetch", "cli.wait", "--wait", "61s"}, {"fetch", "cli.wait", "--wait", "-1s"}, {"fetch", "cli.wait", "--wait", "soon"}} {
		if code, _, stderr := runCLI(t, args...); code != 2 || !strings.Contains(stderr, "wait") {
			t.Errorf("%q: exit %d, %q; want 2", args, code, stderr)
		}
	}
}

// Point 8: what --wait asks of voik, as wait_ms.
func TestCLIFetchWaitAsksForWaitMs(t *testing.T) {
	asked := make(chan messages.FetchRequest, 1)
	startFakeAPI(t, func(nc *nats.Conn, m *nats.Msg) {
		var req messages.FetchRequest
		msgpack.Unmarshal(m.Data, &req)
		asked <- req
		m.Respond(messages.Encode(messages.FetchReply{Subject: "x", Records: []messages.Record{{Offset: 0, Data: []byte("r")}}, NextOffset: 1, EndOffset: 1}))
	})
	for _, c := range []struct {
		args []string
		want uint64
	}{
		{[]string{"fetch", "x"}, 0},
		{[]string{"fetch", "x", "--wait", "1500ms"}, 1500},
		{[]string{"fetch", "x", "--wait", "100us"}, 1},
		{[]string{"fetch", "x", "--wait", "60s"}, 60000},
		{[]string{"fetch", "x", "--follow", "--count", "1"}, 30000},
		{[]string{"fetch", "x", "--follow", "--count", "1", "--wait", "5s"}, 5000},
	} {
		code, lines, stderr := runCLI(t, c.args...)
		if code != 0 || len(lines) != 1 {
			t.Fatalf("%q: exit %d, %q, %q", c.args, code, lines, stderr)
		}
		if req := <-asked; req.WaitMs != c.want {
			t.Errorf("%q: wait_ms %d, want %d", c.args, req.WaitMs, c.want)
		}
	}
}

// Point 8: --data prints each record's data, raw, and a newline.
func TestCLIFetchDataPrintsTheRawData(t *testing.T) {
	w := startCLIWorld(t)
	for _, d := range [][]byte{[]byte(`{"k":1}`), {0xff, 0x00, 'x'}, {}, []byte("héllo")} {
		w.append(t, "cli.data", nats.Header{"Source": {"web"}}, d)
	}
	code, stdout, stderr := runCLIRaw(t, "fetch", "cli.data", "--data")
	want := "{\"k\":1}\n\xff\x00x\n\nhéllo\n"
	if code != 0 || string(stdout) != want || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
	}
	if code, stdout, _ := runCLIRaw(t, "fetch", "--data", "cli.data", "--last", "1"); code != 0 || string(stdout) != "héllo\n" {
		t.Fatalf("--data --last 1: exit %d, %q", code, stdout)
	}
}
