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

var update = flag.Bool("update", false, "rewrite the settings table in README.md")

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
	for _, want := range []string{"VOIK_API_PREFIX", "VOIK_SYNC ", "VOIK_LOG_LEVEL", "VOIK_NATS_CREDS", "VOIK_NATS_NKEY"} {
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
		setEnv(t, map[string]string{"VOIK_DATA_DIR": t.TempDir(), "VOIK_NATS_URL": urls})
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

// TestREADMESettingsTable keeps the README's settings table identical to
// the settings in the code (make docs rewrites it).
func TestREADMESettingsTable(t *testing.T) {
	const begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
	path := filepath.Join("..", "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q section", begin, end)
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
		t.Fatalf("README settings table is out of date; run make docs")
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
	if !reflect.DeepEqual(loaded, defaults) {
		t.Fatalf("Load with nothing set:\n%+v\nDefaults:\n%+v", loaded, defaults)
	}
}
