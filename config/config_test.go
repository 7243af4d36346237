package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the settings table in docs/settings.md")

// setEnv sets VOIK_* variables for one test; everything else is unset.
func setEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "VOIK_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestDefaultsMatchTheContract(t *testing.T) {
	dir := t.TempDir()
	setEnv(t, map[string]string{"VOIK_DATA_DIR": filepath.Join(dir, "data")})
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.NatsURL != "" || c.Subjects != ">" || c.APIPrefix != "VOIK.API" || c.HTTPAddr != ":8333" {
		t.Fatalf("contract defaults: %+v", c)
	}
	if c.Sync != "batch" || c.SegmentSize != 64<<20 || c.MaxOpenLogs != 1000 || c.SyncInterval != 100*time.Millisecond {
		t.Fatalf("defaults: %+v", c)
	}
	if fi, err := os.Stat(filepath.Join(dir, "data")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir not created 0700: %v %v", fi, err)
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "voik.yaml")
	yaml := "data_dir: " + filepath.Join(dir, "from-file") + "\nsubjects: a.>\napi_prefix: FROM.FILE\nsegment_size: 1MiB\nretention_max_age: 1h\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	setEnv(t, map[string]string{"VOIK_API_PREFIX": "FROM.ENV"})
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIPrefix != "FROM.ENV" || c.Subjects != "a.>" || c.SegmentSize != 1<<20 || c.RetentionMaxAge != time.Hour {
		t.Fatalf("got %+v", c)
	}
}

func TestBadSettingsAreOneClearLine(t *testing.T) {
	dir := t.TempDir()
	readOnly := filepath.Join(dir, "ro")
	os.Mkdir(readOnly, 0o500)
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"unparsable duration", map[string]string{"VOIK_SYNC_INTERVAL": "soon"}, "VOIK_SYNC_INTERVAL"},
		{"unparsable size", map[string]string{"VOIK_SEGMENT_SIZE": "big"}, "VOIK_SEGMENT_SIZE"},
		{"bad http addr", map[string]string{"VOIK_HTTP_ADDR": "8333"}, "VOIK_HTTP_ADDR"},
		{"bad log level", map[string]string{"VOIK_LOG_LEVEL": "loud"}, "VOIK_LOG_LEVEL"},
		{"cert without key", map[string]string{"VOIK_NATS_TLS_CERT": "/etc/hostname"}, "go together"},
		{"NATS URL without subjects", map[string]string{"VOIK_NATS_URL": "nats://127.0.0.1:4222"}, "VOIK_SUBJECTS is required with VOIK_NATS_URL"},
		{"missing creds file", map[string]string{"VOIK_NATS_CREDS": filepath.Join(dir, "nope.creds")}, "VOIK_NATS_CREDS"},
		{"bad port", map[string]string{"VOIK_EMBEDDED_PORT": "70000"}, "VOIK_EMBEDDED_PORT"},
		{"NATS URL with an unknown scheme", map[string]string{"VOIK_NATS_URL": "foo://127.0.0.1:4222"}, `scheme "foo"`},
		{"NATS URL with a port out of range", map[string]string{"VOIK_NATS_URL": "nats://127.0.0.1:1499999"}, "port 1499999"},
		{"NATS URL with a port not a number", map[string]string{"VOIK_NATS_URL": "nats://127.0.0.1:notaport"}, "invalid port"},
		{"NATS URL of colons", map[string]string{"VOIK_NATS_URL": "::::"}, "neither a host name nor an IP address"},
		{"NATS URL with a password and a bad port", map[string]string{"VOIK_NATS_URL": "nats://admin:s3cret@nats:99999"}, `"nats://xxxxx@nats:99999": port 99999`},
		{"NATS URLs mixing websocket and not", map[string]string{"VOIK_NATS_URL": "ws://a:8080,nats://b:4222"}, "mixes websocket"},
		{"unwritable data dir", map[string]string{"VOIK_DATA_DIR": filepath.Join(readOnly, "data")}, "VOIK_DATA_DIR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"VOIK_DATA_DIR": filepath.Join(dir, "data")}
			for k, v := range c.env {
				env[k] = v
			}
			setEnv(t, env)
			_, err := Load("")
			if err == nil {
				if c.name == "unwritable data dir" && os.Geteuid() == 0 {
					t.Skip("root writes anywhere")
				}
				t.Fatal("accepted")
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line mentioning %q", msg, c.want)
			}
		})
	}
}

// The problems a Check finds (settings whose rules live in other
// packages) are reported with config's own, on the same line, first.
func TestEveryBadSettingIsReportedOnOneLine(t *testing.T) {
	dir := t.TempDir()
	setEnv(t, map[string]string{
		"VOIK_DATA_DIR":   filepath.Join(dir, "data"),
		"VOIK_LOG_LEVEL":  "loud",
		"VOIK_NATS_CREDS": filepath.Join(dir, "nope.creds"),
		"VOIK_NATS_NKEY":  filepath.Join(dir, "nope.nk"),
	})
	checkOther := func(c *Config) []error {
		return []error{fmt.Errorf("VOIK_API_PREFIX %q judged elsewhere", c.APIPrefix), fmt.Errorf("VOIK_SYNC %q judged elsewhere", c.Sync)}
	}
	_, err := Load("", checkOther)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || strings.Count(msg, "configuration:") != 1 {
		t.Fatalf("want one line with one prefix: %q", msg)
	}
	// In the order Validate checks them, the same on every run.
	last := -1
	for _, want := range []string{"VOIK_API_PREFIX", "VOIK_SYNC ", "VOIK_NATS_CREDS", "VOIK_NATS_NKEY", "VOIK_LOG_LEVEL"} {
		at := strings.Index(msg, want)
		if at < 0 {
			t.Fatalf("%q does not mention %s", msg, want)
		}
		if at < last {
			t.Fatalf("%q: %s out of order", msg, want)
		}
		last = at
	}
}

func TestGoodNATSURLsAreAccepted(t *testing.T) {
	for _, urls := range []string{
		"nats://127.0.0.1:4222", "127.0.0.1:4222", "nats", "tls://nats.example.com", "nats://user:pass@[::1]:4222",
		"nats://a:4222, nats://b:4222", "ws://a:8080,wss://b", "nats://[fe80::1%25eth0]:4222", ":4222", "nats://:4222",
	} {
		setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir(), "VOIK_NATS_URL": urls, "VOIK_SUBJECTS": "a.>"})
		if _, err := Load(""); err != nil {
			t.Errorf("VOIK_NATS_URL %q refused: %v", urls, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"512": 512, "64KiB": 64 << 10, "64MiB": 64 << 20, "2GiB": 2 << 30, "1GB": 1e9, "10 MB": 10e6} {
		var b ByteSize
		if err := b.SetValue(in); err != nil || b != want {
			t.Errorf("%q: got %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "lots", "99999999999999TiB"} {
		var b ByteSize
		if err := b.SetValue(in); err == nil {
			t.Errorf("%q accepted as %d", in, b)
		}
	}
	if s := ByteSize(64 << 20).String(); s != "64MiB" {
		t.Errorf("String() = %q", s)
	}
}

// TestSettingsTableInDocs keeps the settings table of docs/settings.md
// identical to the settings in the code (make docs rewrites it).
func TestSettingsTableInDocs(t *testing.T) {
	const begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
	path := filepath.Join("..", "docs", "settings.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q section", path, begin, end)
	}
	want := MarkdownTable()
	if got := text[i+len(begin) : j]; got != want {
		if *update {
			text = text[:i+len(begin)] + want + text[j:]
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("the settings table of %s is out of date; run make docs", path)
	}
}

// Defaults reads the same tags that Load applies: with nothing set, Load
// and Defaults agree on every setting.
func TestDefaultsAreWhatLoadApplies(t *testing.T) {
	dir := t.TempDir()
	setEnv(t, map[string]string{"VOIK_DATA_DIR": filepath.Join(dir, "data")})
	loaded, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	defaults := Defaults()
	defaults.DataDir = loaded.DataDir
	defaults.origin = loaded.origin
	if !reflect.DeepEqual(loaded, defaults) {
		t.Fatalf("Load with nothing set:\n%+v\nDefaults:\n%+v", loaded, defaults)
	}
}

// Every value that does not parse is reported, not just the first, each
// with its name, its value and what is expected, and none in Go's words.
func TestEveryUnparsableValueIsReportedInPlainWords(t *testing.T) {
	setEnv(t, map[string]string{
		"VOIK_DATA_DIR":          t.TempDir(),
		"VOIK_EMBEDDED_PORT":     "abc",
		"VOIK_RETENTION_MAX_AGE": "7x",
		"VOIK_SEGMENT_SIZE":      "big",
		"VOIK_PENDING_MSGS":      "1e6",
		"VOIK_LOG_LEVEL":         "loud",
		"VOIK_PPROF":             "maybe",
	})
	_, err := Load("")
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`VOIK_EMBEDDED_PORT "abc": want a whole number`,
		`VOIK_RETENTION_MAX_AGE "7x": want a duration such as 500ms, 30s, 5m, 12h or 7d`,
		`VOIK_SEGMENT_SIZE "big": want a size such as`,
		`VOIK_PENDING_MSGS "1e6": want a whole number`,
		`VOIK_LOG_LEVEL "loud": want debug, info, warn or error`,
		`VOIK_PPROF "maybe": want true or false`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	for _, goText := range []string{"strconv", "parsing field", "time: ", "ParseInt", "int64"} {
		if strings.Contains(msg, goText) {
			t.Errorf("%q leaks Go's %q", msg, goText)
		}
	}
	if strings.Contains(msg, "\n") || strings.Count(msg, "configuration:") != 1 {
		t.Errorf("want one line: %q", msg)
	}
}

func TestDaysAreADurationUnit(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "100ms": 100 * time.Millisecond, "0": 0, "2d30m": 48*time.Hour + 30*time.Minute,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("%q: got %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "-1d", "7days", "x1d", "1h1d", "1d-1h", "1d+1h", "200000d", "106751d24h"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("%q accepted as %v", in, got)
		}
	}
	setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir(), "VOIK_RETENTION_MAX_AGE": "30d"})
	if c, err := Load(""); err != nil || c.RetentionMaxAge != 30*24*time.Hour {
		t.Fatalf("VOIK_RETENTION_MAX_AGE=30d: %+v, %v", c, err)
	}
}

func writeYAML(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "voik.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// An empty value in the file counts (it used to bring the default back,
// and errors then blamed a variable the user never set); problems with a
// value from the file name its key and the file.
func TestYAMLEmptyValuesCountAndErrorsNameTheKey(t *testing.T) {
	setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir()})
	c, err := Load(writeYAML(t, "http_addr: \"\"\nnats_name:\nsubjects: a.>\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "" || c.NatsName != "" {
		t.Fatalf("empty values ignored: http_addr %q, nats_name %q", c.HTTPAddr, c.NatsName)
	}
	_, err = Load(writeYAML(t, "http_addr: \"8333\"\nlog_level: loud\nsync_interval: 7x\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{`http_addr (in voik.yaml) "8333": want host:port`, `log_level (in voik.yaml) "loud"`, `sync_interval (in voik.yaml) "7x": want a duration`} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "VOIK_HTTP_ADDR") || strings.Contains(msg, "VOIK_LOG_LEVEL") {
		t.Errorf("%q blames a variable that was never set", msg)
	}
}

func TestUnknownYAMLKeysAreRefused(t *testing.T) {
	setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir()})
	_, err := Load(writeYAML(t, "subjets: orders.>\nVOIK_SYNC: always\nshoe_size: 9\n"))
	if err == nil {
		t.Fatal("a misspelled key was accepted")
	}
	for _, want := range []string{`"subjets" is not a setting (did you mean subjects?)`, `"VOIK_SYNC" is not a setting (did you mean sync?)`, `"shoe_size" is not a setting;`} {
		if !strings.Contains(err.Error()+";", want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

func TestYAMLShapes(t *testing.T) {
	setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir()})
	c, err := Load(writeYAML(t, "subjects: [orders.>, payments.>]\nnats_url:\n  - nats://a:4222\n  - nats://b:4222\n"))
	if err != nil || c.Subjects != "orders.>,payments.>" || c.NatsURL != "nats://a:4222,nats://b:4222" {
		t.Fatalf("lists: %+v, %v", c, err)
	}
	for text, want := range map[string]string{
		"- a\n- b\n":                    "want a mapping of settings",
		"sync: [always]\n":              "sync (line 1): want a single value, got a list",
		"sync: always\nsync: none\n":    "sync is set twice",
		"sync: always\n  bad: indent\n": "is not YAML",
	} {
		if _, err := Load(writeYAML(t, text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", text, err, want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// With VOIK_NATS_URL set voik shares a NATS server, where > would take
// every request on it: the subjects must be named (PROTOCOL.md section 1).
func TestSubjectsDefaultToEverythingOnlyWithTheEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	setEnv(t, map[string]string{"VOIK_DATA_DIR": dir})
	if c, err := Load(""); err != nil || c.Subjects != ">" {
		t.Fatalf("embedded: %+v, %v", c, err)
	}
	setEnv(t, map[string]string{"VOIK_DATA_DIR": dir, "VOIK_NATS_URL": "nats://127.0.0.1:4222"})
	_, err := Load("")
	if err == nil || !strings.Contains(err.Error(), "VOIK_SUBJECTS is required with VOIK_NATS_URL") || !strings.Contains(err.Error(), "no responders") {
		t.Fatalf("external NATS without subjects: %v", err)
	}
	setEnv(t, map[string]string{"VOIK_DATA_DIR": dir, "VOIK_NATS_URL": "nats://127.0.0.1:4222", "VOIK_SUBJECTS": ">"})
	if c, err := Load(""); err != nil || c.Subjects != ">" {
		t.Fatalf("> given explicitly: %+v, %v", c, err)
	}
}

func TestUsageShowsEachSettingsType(t *testing.T) {
	var b strings.Builder
	Usage(&b)
	text := b.String()
	for _, want := range []string{"VOIK_SYNC_INTERVAL", "duration", "VOIK_SEGMENT_SIZE", "size", "VOIK_MAX_OPEN_LOGS", "integer", "VOIK_SUBJECTS", "filters", "> with the embedded server"} {
		if !strings.Contains(text, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	if strings.Contains(text, "int64") {
		t.Errorf("usage names a Go type:\n%s", text)
	}
}

// A value that does not parse is blamed on where it came from, and the
// value left in force (the file's) on the file: a bad variable over a bad
// file value names each once, correctly.
func TestEachProblemNamesTheSourceOfItsValue(t *testing.T) {
	setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir(), "VOIK_MAX_OPEN_LOGS": "abc"})
	_, err := Load(writeYAML(t, "max_open_logs: 0\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{`VOIK_MAX_OPEN_LOGS "abc": want a whole number`, `max_open_logs (in voik.yaml) 0: want 1 or more`} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "VOIK_MAX_OPEN_LOGS 0") {
		t.Errorf("%q blames the variable for the file's value", msg)
	}
}

// The client commands never touch the data dir: an empty one (a shared
// env file) stops only the server.
func TestAnEmptyDataDirStopsOnlyTheServer(t *testing.T) {
	setEnv(t, map[string]string{"VOIK_DATA_DIR": ""})
	if _, err := LoadClient(""); err != nil {
		t.Fatalf("client: %v", err)
	}
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "VOIK_DATA_DIR is empty") {
		t.Fatalf("server: %v", err)
	}
}
