// Package config reads voik's settings from an optional YAML file and
// VOIK_* environment variables (a variable overrides the file) with
// github.com/ilyakaznacheev/cleanenv, and validates every one of them
// before anything starts.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/ilyakaznacheev/cleanenv"
)

// Config is every setting of voik. The tags are the contract of `voik -h`:
// variable, default and meaning.
type Config struct {
	NatsURL   string `yaml:"nats_url" env:"VOIK_NATS_URL" env-default:"" env-description:"NATS server(s) to connect to, comma-separated; empty starts an embedded NATS server"`
	DataDir   string `yaml:"data_dir" env:"VOIK_DATA_DIR" env-default:"./data" env-description:"where the logs live; nothing is written outside it"`
	Subjects  string `yaml:"subjects" env:"VOIK_SUBJECTS" env-default:">" env-description:"comma-separated NATS subject filters to capture (wildcards allowed)"`
	APIPrefix string `yaml:"api_prefix" env:"VOIK_API_PREFIX" env-default:"VOIK.API" env-description:"subject prefix of the request/reply API"`
	HTTPAddr  string `yaml:"http_addr" env:"VOIK_HTTP_ADDR" env-default:":8333" env-description:"address of /metrics, /healthz and /readyz; empty turns HTTP off"`

	NatsName     string `yaml:"nats_name" env:"VOIK_NATS_NAME" env-default:"voik" env-description:"NATS connection name"`
	NatsCreds    string `yaml:"nats_creds" env:"VOIK_NATS_CREDS" env-default:"" env-description:"NATS credentials file (JWT and NKey seed)"`
	NatsNKey     string `yaml:"nats_nkey" env:"VOIK_NATS_NKEY" env-default:"" env-description:"NATS NKey seed file"`
	NatsToken    string `yaml:"nats_token" env:"VOIK_NATS_TOKEN" env-default:"" env-description:"NATS auth token (secret; never logged)"`
	NatsUser     string `yaml:"nats_user" env:"VOIK_NATS_USER" env-default:"" env-description:"NATS user name"`
	NatsPassword string `yaml:"nats_password" env:"VOIK_NATS_PASSWORD" env-default:"" env-description:"NATS password (secret; never logged)"`
	NatsTLSCA    string `yaml:"nats_tls_ca" env:"VOIK_NATS_TLS_CA" env-default:"" env-description:"CA certificate file that verifies the NATS server"`
	NatsTLSCert  string `yaml:"nats_tls_cert" env:"VOIK_NATS_TLS_CERT" env-default:"" env-description:"client certificate file for mutual TLS"`
	NatsTLSKey   string `yaml:"nats_tls_key" env:"VOIK_NATS_TLS_KEY" env-default:"" env-description:"client key file for mutual TLS"`

	EmbeddedHost string `yaml:"embedded_host" env:"VOIK_EMBEDDED_HOST" env-default:"127.0.0.1" env-description:"listen host of the embedded NATS server (when VOIK_NATS_URL is empty)"`
	EmbeddedPort int    `yaml:"embedded_port" env:"VOIK_EMBEDDED_PORT" env-default:"4222" env-description:"listen port of the embedded NATS server; -1 picks a free one"`

	Sync         string        `yaml:"sync" env:"VOIK_SYNC" env-default:"batch" env-description:"when appends are made durable: always, batch (group commit), interval or none"`
	SyncInterval time.Duration `yaml:"sync_interval" env:"VOIK_SYNC_INTERVAL" env-default:"100ms" env-description:"sync period under the interval policy"`
	SegmentSize  ByteSize      `yaml:"segment_size" env:"VOIK_SEGMENT_SIZE" env-default:"64MiB" env-description:"size at which a segment file is sealed and a new one started; the largest record must fit"`

	RetentionMaxAge      time.Duration `yaml:"retention_max_age" env:"VOIK_RETENTION_MAX_AGE" env-default:"0s" env-description:"delete segments whose records are all older than this; 0 keeps them"`
	RetentionMaxBytes    ByteSize      `yaml:"retention_max_bytes" env:"VOIK_RETENTION_MAX_BYTES" env-default:"0" env-description:"per-subject bytes (data+headers) kept at least, unless another limit deletes sooner; older segments beyond it are deleted; 0: no limit"`
	RetentionMaxMessages uint64        `yaml:"retention_max_messages" env:"VOIK_RETENTION_MAX_MESSAGES" env-default:"0" env-description:"per-subject records kept at least, unless another limit deletes sooner; older segments beyond it are deleted; 0: no limit"`

	MaxOpenLogs  int      `yaml:"max_open_logs" env:"VOIK_MAX_OPEN_LOGS" env-default:"1000" env-description:"subject logs held open at once (files and mappings); others are reopened on demand"`
	PendingMsgs  int      `yaml:"pending_msgs" env:"VOIK_PENDING_MSGS" env-default:"1000000" env-description:"capture subscription pending limit in messages before NATS drops (slow consumer)"`
	PendingBytes ByteSize `yaml:"pending_bytes" env:"VOIK_PENDING_BYTES" env-default:"512MiB" env-description:"capture subscription pending limit in bytes"`

	ReplyBudget  ByteSize `yaml:"reply_budget" env:"VOIK_REPLY_BUDGET" env-default:"256MiB" env-description:"bytes of API replies being built or sent at once; past it a request is answered 503 at once, and one requester may hold a quarter of it"`
	MaxLongPolls int      `yaml:"max_long_polls" env:"VOIK_MAX_LONG_POLLS" env-default:"10000" env-description:"FETCH long polls waiting at once; past it a long poll is answered 503, and other requests are not held up"`

	NatsPingInterval time.Duration `yaml:"nats_ping_interval" env:"VOIK_NATS_PING_INTERVAL" env-default:"2s" env-description:"how often each NATS connection pings the server; with VOIK_NATS_MAX_PINGS_OUT it bounds how long a frozen server goes unnoticed"`
	NatsMaxPingsOut  int           `yaml:"nats_max_pings_out" env:"VOIK_NATS_MAX_PINGS_OUT" env-default:"3" env-description:"unanswered pings after which a connection counts as lost (/readyz turns not ready and it reconnects)"`

	LogLevel  string `yaml:"log_level" env:"VOIK_LOG_LEVEL" env-default:"info" env-description:"debug, info, warn or error"`
	LogFormat string `yaml:"log_format" env:"VOIK_LOG_FORMAT" env-default:"text" env-description:"text or json"`
}

// A Check judges settings that this package cannot judge alone, because
// their rules belong to another part (the subject grammar to the wire
// types, segment sizes to the storage engine): it returns one error per
// bad setting, each naming its variable. The caller that ties the parts
// together passes them in (sidecar.CheckSettings), so that config stays a
// leaf and every problem is still reported at once.
type Check func(*Config) []error

// Load reads the YAML file at path (none when path is empty), then the
// environment, then validates everything (with checks), the data dir
// included. Errors are one line, fit for a terminal.
func Load(path string, checks ...Check) (*Config, error) {
	c, err := LoadClient(path, checks...)
	if err != nil {
		return nil, err
	}
	return c, checkDataDir(c.DataDir)
}

// LoadClient is Load for the command-line client: it does not touch the
// data dir.
func LoadClient(path string, checks ...Check) (*Config, error) {
	var c Config
	var err error
	if path != "" {
		err = cleanenv.ReadConfig(path, &c)
	} else {
		err = cleanenv.ReadEnv(&c)
	}
	if err != nil {
		return nil, fmt.Errorf("configuration: %s", oneLine(err))
	}
	if err := c.Validate(checks...); err != nil {
		return nil, err
	}
	return &c, nil
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// Usage writes every setting with its variable, default and meaning.
func Usage(w io.Writer) {
	header := "Settings (environment variable, or the YAML key in lower case without VOIK_ in -config FILE; the variable wins):"
	text, _ := cleanenv.GetDescription(&Config{}, &header)
	fmt.Fprintln(w, text)
}

// Validate checks every setting, its own rules and those of checks, and
// returns every problem found on one line.
func (c *Config) Validate(checks ...Check) error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	for _, check := range checks {
		problems = append(problems, check(c)...)
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("VOIK_HTTP_ADDR %q: want host:port, e.g. :8333", c.HTTPAddr)
		}
	}
	if c.NatsURL != "" {
		websocket := 0
		entries := strings.Split(c.NatsURL, ",")
		for i, entry := range entries {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				bad("VOIK_NATS_URL has an empty entry (number %d)", i+1)
				continue
			}
			ws, problem := natsURLProblem(entry)
			if problem != "" {
				bad("VOIK_NATS_URL entry %q: %s", redactURL(entry), problem)
			}
			if ws {
				websocket++
			}
		}
		if websocket > 0 && websocket < len(entries) {
			bad("VOIK_NATS_URL mixes websocket (ws://, wss://) and other URLs; NATS clients take one kind")
		}
	}
	if c.EmbeddedPort < -1 || c.EmbeddedPort > 65535 {
		bad("VOIK_EMBEDDED_PORT %d is not a port", c.EmbeddedPort)
	}
	if c.SyncInterval <= 0 {
		bad("VOIK_SYNC_INTERVAL %v must be positive", c.SyncInterval)
	}
	if c.RetentionMaxAge < 0 {
		bad("VOIK_RETENTION_MAX_AGE %v is negative", c.RetentionMaxAge)
	}
	if c.MaxOpenLogs < 1 {
		bad("VOIK_MAX_OPEN_LOGS %d must be at least 1", c.MaxOpenLogs)
	}
	if c.PendingMsgs < 1 || c.PendingBytes < 1 {
		bad("VOIK_PENDING_MSGS and VOIK_PENDING_BYTES must be positive")
	}
	if c.ReplyBudget < 1<<20 {
		bad("VOIK_REPLY_BUDGET %v must be at least 1MiB", c.ReplyBudget)
	}
	if c.MaxLongPolls < 1 {
		bad("VOIK_MAX_LONG_POLLS %d must be at least 1", c.MaxLongPolls)
	}
	if c.NatsPingInterval <= 0 {
		bad("VOIK_NATS_PING_INTERVAL %v must be positive", c.NatsPingInterval)
	}
	if c.NatsMaxPingsOut < 1 {
		bad("VOIK_NATS_MAX_PINGS_OUT %d must be at least 1", c.NatsMaxPingsOut)
	}
	if _, err := c.Level(); err != nil {
		bad("VOIK_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("VOIK_LOG_FORMAT %q: want text or json", c.LogFormat)
	}
	if (c.NatsTLSCert == "") != (c.NatsTLSKey == "") {
		bad("VOIK_NATS_TLS_CERT and VOIK_NATS_TLS_KEY go together")
	}
	if c.NatsCreds != "" && c.NatsNKey != "" {
		bad("VOIK_NATS_CREDS and VOIK_NATS_NKEY are alternatives: set one")
	}
	if (c.NatsUser == "") != (c.NatsPassword == "") {
		bad("VOIK_NATS_USER and VOIK_NATS_PASSWORD go together")
	}
	for _, file := range []struct{ name, path string }{
		{"VOIK_NATS_CREDS", c.NatsCreds}, {"VOIK_NATS_NKEY", c.NatsNKey}, {"VOIK_NATS_TLS_CA", c.NatsTLSCA},
		{"VOIK_NATS_TLS_CERT", c.NatsTLSCert}, {"VOIK_NATS_TLS_KEY", c.NatsTLSKey},
	} {
		if file.path == "" {
			continue
		}
		if f, err := os.Open(file.path); err != nil {
			bad("%s: %v", file.name, errors.Unwrap(err))
		} else {
			f.Close()
		}
	}
	if c.DataDir == "" {
		bad("VOIK_DATA_DIR is empty")
	}
	if len(problems) == 0 {
		return nil
	}
	// Every problem at once, on one line, so that a broken deployment is
	// fixed in one round instead of one restart per mistake.
	return fmt.Errorf("configuration: "+strings.TrimSuffix(strings.Repeat("%w; ", len(problems)), "; "), anySlice(problems)...)
}

func anySlice(errs []error) []any {
	out := make([]any, len(errs))
	for i, err := range errs {
		out[i] = err
	}
	return out
}

// natsURLProblem says what keeps the NATS client from ever connecting to
// entry (one URL of VOIK_NATS_URL, "host:port" meaning nats://), or "";
// and whether it is a websocket URL. Without this check such a URL is
// retried forever, as a server that is not up yet would be.
func natsURLProblem(entry string) (websocket bool, problem string) {
	raw := entry
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return false, err.Error()
	}
	switch u.Scheme {
	case "nats", "tls":
	case "ws", "wss":
		websocket = true
	default:
		return false, fmt.Sprintf("scheme %q: want nats://, tls://, ws:// or wss://", u.Scheme)
	}
	// An empty host is this machine, as for net.Dial.
	if host := u.Hostname(); strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return websocket, fmt.Sprintf("%q is neither a host name nor an IP address (write IPv6 as [::1]:4222)", host)
		}
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return websocket, fmt.Sprintf("port %s is not between 1 and 65535", port)
		}
	}
	return websocket, ""
}

// redactURL hides the user and password of a URL for an error message;
// it works on text, as the URL may not parse.
func redactURL(entry string) string {
	scheme, rest, ok := strings.Cut(entry, "://")
	if !ok {
		scheme, rest = "", entry
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return entry
	}
	rest = "xxxxx" + rest[at:]
	if ok {
		return scheme + "://" + rest
	}
	return rest
}

// checkDataDir makes the data dir (0700) and proves it writable.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("configuration: VOIK_DATA_DIR %q cannot be created: %v", dir, errors.Unwrap(err))
	}
	probe, err := os.CreateTemp(dir, ".voik-write-check-*")
	if err != nil {
		return fmt.Errorf("configuration: VOIK_DATA_DIR %q is not writable: %v", dir, errors.Unwrap(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// Level parses LogLevel.
func (c *Config) Level() (slog.Level, error) {
	var level slog.Level
	err := level.UnmarshalText([]byte(c.LogLevel))
	return level, err
}

// Logger builds the process logger the settings ask for.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	level, _ := c.Level()
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// DataPath is the absolute data dir, for messages that name it.
func (c *Config) DataPath() string {
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return c.DataDir
	}
	return abs
}

// MarkdownTable renders every setting as a Markdown table: variable,
// default, meaning. The README's settings table is this, kept in step by a
// test (make docs rewrites it).
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n| --- | --- | --- |\n")
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		def := f.Tag.Get("env-default")
		if def == "" {
			def = "empty"
		} else {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Tag.Get("env"), def, strings.ReplaceAll(f.Tag.Get("env-description"), "|", "\\|"))
	}
	return b.String()
}

// Defaults is every setting at its default, read from the env-default
// tags above, the one place defaults are written: tests start from it
// rather than write them again.
func Defaults() *Config {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		def := t.Field(i).Tag.Get("env-default")
		if def == "" {
			continue
		}
		if err := setDefault(v.Field(i), def); err != nil {
			// The tags are this file's: a bad one is a bug the tests catch.
			panic(fmt.Sprintf("config: default of %s: %v", t.Field(i).Name, err))
		}
	}
	return &c
}

// setDefault parses def into field, as cleanenv would.
func setDefault(field reflect.Value, def string) error {
	if setter, ok := field.Addr().Interface().(interface{ SetValue(string) error }); ok {
		return setter.SetValue(def)
	}
	switch field.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(def)
		field.SetInt(int64(d))
		return err
	}
	switch field.Kind() {
	case reflect.String:
		field.SetString(def)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(def, 10, 64)
		field.SetInt(n)
		return err
	case reflect.Uint64:
		n, err := strconv.ParseUint(def, 10, 64)
		field.SetUint(n)
		return err
	default:
		return fmt.Errorf("no parser for %s", field.Type())
	}
	return nil
}
