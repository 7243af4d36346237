// Package config reads voik's settings from an optional YAML file and
// VOIK_* environment variables (a variable overrides the file), and
// validates every one of them before anything starts, reporting all that
// are wrong at once (load.go says how).
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
	"strconv"
	"strings"
	"time"
)

// Config is every setting of voik. The tags are the contract of `voik -h`:
// variable, YAML key, default and meaning; `type` names the kind of value
// where the Go type says too little, `default-text` the default where it
// takes words, and `list` marks comma-separated lists (a YAML sequence
// will do for them).
type Config struct {
	NatsURL   string `yaml:"nats_url" env:"VOIK_NATS_URL" env-default:"" type:"URLs" list:"true" env-description:"NATS server(s) to connect to, comma-separated; empty starts an embedded NATS server"`
	DataDir   string `yaml:"data_dir" env:"VOIK_DATA_DIR" env-default:"./data" type:"directory" env-description:"where the logs live; nothing is written outside it"`
	Subjects  string `yaml:"subjects" env:"VOIK_SUBJECTS" env-default:">" default-text:"> with the embedded server; none otherwise" type:"filters" list:"true" env-description:"comma-separated NATS subject filters to capture (wildcards allowed); required with VOIK_NATS_URL, where > would take every request on the server"`
	APIPrefix string `yaml:"api_prefix" env:"VOIK_API_PREFIX" env-default:"VOIK.API" type:"subject" env-description:"subject prefix of the request/reply API"`
	HTTPAddr  string `yaml:"http_addr" env:"VOIK_HTTP_ADDR" env-default:":8333" type:"host:port" env-description:"address of /metrics, /healthz and /readyz; empty turns HTTP off"`

	NatsName     string `yaml:"nats_name" env:"VOIK_NATS_NAME" env-default:"voik" env-description:"NATS connection name"`
	NatsCreds    string `yaml:"nats_creds" env:"VOIK_NATS_CREDS" env-default:"" type:"file" env-description:"NATS credentials file (JWT and NKey seed)"`
	NatsNKey     string `yaml:"nats_nkey" env:"VOIK_NATS_NKEY" env-default:"" type:"file" env-description:"NATS NKey seed file"`
	NatsToken    string `yaml:"nats_token" env:"VOIK_NATS_TOKEN" env-default:"" env-description:"NATS auth token (secret; never logged)"`
	NatsUser     string `yaml:"nats_user" env:"VOIK_NATS_USER" env-default:"" env-description:"NATS user name"`
	NatsPassword string `yaml:"nats_password" env:"VOIK_NATS_PASSWORD" env-default:"" env-description:"NATS password (secret; never logged)"`
	NatsTLSCA    string `yaml:"nats_tls_ca" env:"VOIK_NATS_TLS_CA" env-default:"" type:"file" env-description:"CA certificate file that verifies the NATS server"`
	NatsTLSCert  string `yaml:"nats_tls_cert" env:"VOIK_NATS_TLS_CERT" env-default:"" type:"file" env-description:"client certificate file for mutual TLS"`
	NatsTLSKey   string `yaml:"nats_tls_key" env:"VOIK_NATS_TLS_KEY" env-default:"" type:"file" env-description:"client key file for mutual TLS"`

	EmbeddedHost string `yaml:"embedded_host" env:"VOIK_EMBEDDED_HOST" env-default:"127.0.0.1" env-description:"listen host of the embedded NATS server (when VOIK_NATS_URL is empty)"`
	EmbeddedPort int    `yaml:"embedded_port" env:"VOIK_EMBEDDED_PORT" env-default:"4222" type:"port" env-description:"listen port of the embedded NATS server; -1 picks a free one"`

	Sync         string        `yaml:"sync" env:"VOIK_SYNC" env-default:"batch" type:"policy" env-description:"when appends are made durable: always, batch (group commit), interval or none"`
	SyncInterval time.Duration `yaml:"sync_interval" env:"VOIK_SYNC_INTERVAL" env-default:"100ms" env-description:"sync period under the interval policy"`
	SegmentSize  ByteSize      `yaml:"segment_size" env:"VOIK_SEGMENT_SIZE" env-default:"64MiB" env-description:"size at which a segment file is sealed and a new one started; the largest record must fit"`

	RetentionMaxAge      time.Duration `yaml:"retention_max_age" env:"VOIK_RETENTION_MAX_AGE" env-default:"0s" env-description:"delete segments whose records are all older than this; 0 keeps them"`
	RetentionMaxBytes    ByteSize      `yaml:"retention_max_bytes" env:"VOIK_RETENTION_MAX_BYTES" env-default:"0" env-description:"per-subject bytes (data+headers) kept at least, unless another limit deletes sooner; older segments beyond it are deleted; 0: no limit"`
	RetentionMaxMessages uint64        `yaml:"retention_max_messages" env:"VOIK_RETENTION_MAX_MESSAGES" env-default:"0" env-description:"per-subject records kept at least, unless another limit deletes sooner; older segments beyond it are deleted; 0: no limit"`

	Group    string        `yaml:"group" env:"VOIK_GROUP" env-default:"" type:"name" env-description:"replication group name (letters, digits, - and _); members of one group keep one log in identical copies; empty runs standalone"`
	Replicas int           `yaml:"replicas" env:"VOIK_REPLICAS" env-default:"3" env-description:"how many members the group has (1-7); a majority is REPLICAS/2+1; the same on every member"`
	Instance string        `yaml:"instance" env:"VOIK_INSTANCE" env-default:"" default-text:"the host name" type:"name" env-description:"this member's name in its group: unique, and stable across restarts (the pod name)"`
	Lease    time.Duration `yaml:"lease" env:"VOIK_LEASE" env-default:"5s" env-description:"how long a silent group leader keeps the lead before another member may take it"`
	// JournalKeep is how many journal records a group member keeps below
	// the committed offset, for members catching up.
	JournalKeep uint64 `yaml:"journal_keep" env:"VOIK_JOURNAL_KEEP" env-default:"1000000" env-description:"group journal records kept below the committed offset (about 100 bytes each on disk) so that a member that was away catches up by copying the journal; one further behind copies the logs (a snapshot)"`

	DedupeWindow time.Duration `yaml:"dedupe_window" env:"VOIK_DEDUPE_WINDOW" env-default:"2m" env-description:"a message with a Nats-Msg-Id header whose id was stored on its subject this recently is not stored again (an ack names the first); 0 turns it off"`

	MaxOpenLogs  int      `yaml:"max_open_logs" env:"VOIK_MAX_OPEN_LOGS" env-default:"1000" env-description:"subject logs held open at once (files and mappings); others are reopened on demand"`
	PendingMsgs  int      `yaml:"pending_msgs" env:"VOIK_PENDING_MSGS" env-default:"1000000" env-description:"capture subscription pending limit in messages before NATS drops (slow consumer)"`
	PendingBytes ByteSize `yaml:"pending_bytes" env:"VOIK_PENDING_BYTES" env-default:"512MiB" env-description:"capture subscription pending limit in bytes"`

	ReplyBudget  ByteSize `yaml:"reply_budget" env:"VOIK_REPLY_BUDGET" env-default:"256MiB" env-description:"bytes of API replies being built or sent at once; past it a request is answered 503 at once, and one requester may hold a quarter of it"`
	MaxLongPolls int      `yaml:"max_long_polls" env:"VOIK_MAX_LONG_POLLS" env-default:"10000" env-description:"FETCH long polls waiting at once; past it a long poll is answered 503, and other requests are not held up"`

	NatsPingInterval time.Duration `yaml:"nats_ping_interval" env:"VOIK_NATS_PING_INTERVAL" env-default:"2s" env-description:"how often each NATS connection pings the server; with VOIK_NATS_MAX_PINGS_OUT it bounds how long a frozen server goes unnoticed"`
	NatsMaxPingsOut  int           `yaml:"nats_max_pings_out" env:"VOIK_NATS_MAX_PINGS_OUT" env-default:"3" env-description:"unanswered pings after which a connection counts as lost (/readyz turns not ready and it reconnects)"`

	Pprof bool `yaml:"pprof" env:"VOIK_PPROF" env-default:"false" env-description:"serve Go's profiles under /debug/pprof/ on VOIK_HTTP_ADDR, for finding where CPU and memory go; off by default: anyone who reaches the address can read them"`

	LogLevel  string `yaml:"log_level" env:"VOIK_LOG_LEVEL" env-default:"info" type:"level" env-description:"debug, info, warn or error"`
	LogFormat string `yaml:"log_format" env:"VOIK_LOG_FORMAT" env-default:"text" type:"format" env-description:"text or json"`

	// origin maps a variable to where its value came from (load.go), for
	// error messages; a Config built in code has none.
	origin map[string]string
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
	c, err := load(path, true, checks)
	if err != nil {
		return nil, err
	}
	return c, checkDataDir(c.Name("VOIK_DATA_DIR"), c.DataDir)
}

// LoadClient is Load for the command-line client: it captures nothing, so
// VOIK_SUBJECTS may be left out, and it does not touch the data dir.
func LoadClient(path string, checks ...Check) (*Config, error) {
	return load(path, false, checks)
}

func load(path string, server bool, checks []Check) (*Config, error) {
	c := Defaults()
	problems := c.read(path)
	if strings.TrimSpace(c.Subjects) == "" {
		c.Subjects = ""
		if c.NatsURL == "" {
			c.Subjects = Defaults().Subjects // empty with the embedded server: the default
		}
	}
	_, given := c.origin["VOIK_SUBJECTS"]
	if server && c.NatsURL != "" && (!given || c.Subjects == "") {
		// The one default that depends on another setting (PROTOCOL.md
		// section 1): > is for voik's own embedded server only.
		problems = append(problems, fmt.Errorf("%s is required with %s: name the subjects to capture, e.g. orders.>,payments.> "+
			"(on a shared NATS, > takes every message, requests too: a request to a service that is down would wait for its timeout "+
			"instead of failing at once with no responders)", c.Name("VOIK_SUBJECTS"), c.Name("VOIK_NATS_URL")))
		c.Subjects = Defaults().Subjects // judged once, here
	}
	if c.Group != "" && c.Instance == "" {
		c.Instance, _ = os.Hostname() // a pod's name in Kubernetes
	}
	if server && c.DataDir == "" { // the client commands never touch it
		problems = append(problems, fmt.Errorf("%s is empty: want a directory", c.Name("VOIK_DATA_DIR")))
	}
	problems = append(problems, c.problems(checks...)...)
	if err := joinProblems(problems); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every setting, its own rules and those of checks, and
// returns every problem found, on one line.
func (c *Config) Validate(checks ...Check) error {
	return joinProblems(c.problems(checks...))
}

// problems is every rule broken, in a fixed order: first those of checks
// (the settings judged by other parts), then the NATS connection, the
// limits, the files, the logs.
func (c *Config) problems(checks ...Check) []error {
	var problems []error
	for _, check := range checks {
		problems = append(problems, check(c)...)
	}
	for _, part := range []func() []string{c.natsProblems, c.groupProblems, c.limitProblems, c.fileProblems, c.logProblems} {
		for _, p := range part() {
			problems = append(problems, errors.New(p))
		}
	}
	return problems
}

// joinProblems makes one error of many, on one line, so that a broken
// deployment is fixed in one round instead of one restart per mistake.
func joinProblems(problems []error) error {
	if len(problems) == 0 {
		return nil
	}
	texts := make([]string, len(problems))
	for i, p := range problems {
		texts[i] = strings.Join(strings.Fields(p.Error()), " ")
	}
	return &Error{Problems: problems, text: "configuration: " + strings.Join(texts, "; ")}
}

// Error is a configuration that cannot run: every problem, each naming
// its setting, the value and what is expected.
type Error struct {
	Problems []error
	text     string
}

func (e *Error) Error() string { return e.text }

// quoted is a value as error messages show it.
func quoted(s string) string { return strconv.Quote(s) }

func (c *Config) natsProblems() []string {
	var bad []string
	if c.NatsURL != "" {
		websocket := 0
		entries := strings.Split(c.NatsURL, ",")
		for i, entry := range entries {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				bad = append(bad, fmt.Sprintf("%s %s has an empty entry (number %d)", c.Name("VOIK_NATS_URL"), quoted(redactURLs(c.NatsURL)), i+1))
				continue
			}
			ws, problem := natsURLProblem(entry)
			if problem != "" {
				bad = append(bad, fmt.Sprintf("%s entry %s: %s", c.Name("VOIK_NATS_URL"), quoted(redactURL(entry)), problem))
			}
			if ws {
				websocket++
			}
		}
		if websocket > 0 && websocket < len(entries) {
			bad = append(bad, c.Name("VOIK_NATS_URL")+" mixes websocket (ws://, wss://) and other URLs; NATS clients take one kind")
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad = append(bad, fmt.Sprintf("%s %s: want host:port such as :8333 or 127.0.0.1:8333, or empty to turn HTTP off", c.Name("VOIK_HTTP_ADDR"), quoted(c.HTTPAddr)))
		}
	}
	if c.EmbeddedPort < -1 || c.EmbeddedPort > 65535 {
		bad = append(bad, fmt.Sprintf("%s %d: want a port from 0 to 65535, or -1 for a free one", c.Name("VOIK_EMBEDDED_PORT"), c.EmbeddedPort))
	}
	if c.NatsPingInterval <= 0 {
		bad = append(bad, fmt.Sprintf("%s %v: want a duration above 0", c.Name("VOIK_NATS_PING_INTERVAL"), c.NatsPingInterval))
	}
	if c.NatsMaxPingsOut < 1 {
		bad = append(bad, fmt.Sprintf("%s %d: want 1 or more", c.Name("VOIK_NATS_MAX_PINGS_OUT"), c.NatsMaxPingsOut))
	}
	return bad
}

// groupProblems checks the replication group's settings (PROTOCOL.md
// section 8); standalone, they are not used.
func (c *Config) groupProblems() []string {
	if c.Group == "" {
		return nil
	}
	var bad []string
	if !validName(c.Group, false) {
		bad = append(bad, fmt.Sprintf("%s %s: want letters, digits, - and _ only", c.Name("VOIK_GROUP"), quoted(c.Group)))
	}
	if c.Replicas < 1 || c.Replicas > 7 {
		bad = append(bad, fmt.Sprintf("%s %d: want 1 to 7", c.Name("VOIK_REPLICAS"), c.Replicas))
	}
	if !validName(c.Instance, true) {
		bad = append(bad, fmt.Sprintf("%s %s: want letters, digits, -, _ and inner dots (a pod name)", c.Name("VOIK_INSTANCE"), quoted(c.Instance)))
	}
	if c.Lease < 100*time.Millisecond {
		bad = append(bad, fmt.Sprintf("%s %v: want 100ms or more", c.Name("VOIK_LEASE"), c.Lease))
	}
	return bad
}

// validName says whether s is a group or instance name: letters, digits,
// - and _, and (dots true) dots between them. Names become NATS subject
// tokens and key-value keys.
func validName(s string, dots bool) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || (r == '.' && dots) || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func (c *Config) limitProblems() []string {
	var bad []string
	atLeast := func(env string, v, least int64, show string) {
		if v < least {
			bad = append(bad, fmt.Sprintf("%s %s: want %d or more", c.Name(env), show, least))
		}
	}
	if c.SyncInterval <= 0 {
		bad = append(bad, fmt.Sprintf("%s %v: want a duration above 0", c.Name("VOIK_SYNC_INTERVAL"), c.SyncInterval))
	}
	if c.DedupeWindow < 0 {
		bad = append(bad, fmt.Sprintf("%s %v: want 0 (off) or a duration above 0", c.Name("VOIK_DEDUPE_WINDOW"), c.DedupeWindow))
	}
	if c.RetentionMaxAge < 0 {
		bad = append(bad, fmt.Sprintf("%s %v: want 0 (keep) or a duration above 0", c.Name("VOIK_RETENTION_MAX_AGE"), c.RetentionMaxAge))
	}
	atLeast("VOIK_MAX_OPEN_LOGS", int64(c.MaxOpenLogs), 1, strconv.Itoa(c.MaxOpenLogs))
	atLeast("VOIK_PENDING_MSGS", int64(c.PendingMsgs), 1, strconv.Itoa(c.PendingMsgs))
	atLeast("VOIK_PENDING_BYTES", int64(c.PendingBytes), 1, c.PendingBytes.String())
	if c.ReplyBudget < 1<<20 {
		bad = append(bad, fmt.Sprintf("%s %v: want 1MiB or more", c.Name("VOIK_REPLY_BUDGET"), c.ReplyBudget))
	}
	atLeast("VOIK_MAX_LONG_POLLS", int64(c.MaxLongPolls), 1, strconv.Itoa(c.MaxLongPolls))
	return bad
}

func (c *Config) fileProblems() []string {
	var bad []string
	together := func(a, b string, setA, setB bool) {
		if setA != setB {
			bad = append(bad, fmt.Sprintf("%s and %s go together: set both or neither", c.Name(a), c.Name(b)))
		}
	}
	together("VOIK_NATS_TLS_CERT", "VOIK_NATS_TLS_KEY", c.NatsTLSCert != "", c.NatsTLSKey != "")
	together("VOIK_NATS_USER", "VOIK_NATS_PASSWORD", c.NatsUser != "", c.NatsPassword != "")
	if c.NatsCreds != "" && c.NatsNKey != "" {
		bad = append(bad, fmt.Sprintf("%s and %s are alternatives: set one", c.Name("VOIK_NATS_CREDS"), c.Name("VOIK_NATS_NKEY")))
	}
	for _, file := range []struct{ env, path string }{
		{"VOIK_NATS_CREDS", c.NatsCreds}, {"VOIK_NATS_NKEY", c.NatsNKey}, {"VOIK_NATS_TLS_CA", c.NatsTLSCA},
		{"VOIK_NATS_TLS_CERT", c.NatsTLSCert}, {"VOIK_NATS_TLS_KEY", c.NatsTLSKey},
	} {
		if file.path == "" {
			continue
		}
		if f, err := os.Open(file.path); err != nil {
			bad = append(bad, fmt.Sprintf("%s %s: %v", c.Name(file.env), quoted(file.path), errors.Unwrap(err)))
		} else {
			f.Close()
		}
	}
	return bad
}

func (c *Config) logProblems() []string {
	var bad []string
	if _, err := c.Level(); err != nil {
		bad = append(bad, fmt.Sprintf("%s %s: want debug, info, warn or error", c.Name("VOIK_LOG_LEVEL"), quoted(c.LogLevel)))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad = append(bad, fmt.Sprintf("%s %s: want text or json", c.Name("VOIK_LOG_FORMAT"), quoted(c.LogFormat)))
	}
	return bad
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

// redactURLs redacts every entry of a comma-separated list of URLs.
func redactURLs(list string) string {
	entries := strings.Split(list, ",")
	for i, entry := range entries {
		entries[i] = redactURL(entry)
	}
	return strings.Join(entries, ",")
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
func checkDataDir(name, dir string) error {
	if dir == "" {
		return fmt.Errorf("configuration: %s is empty: want a directory", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("configuration: %s %q cannot be created: %v", name, dir, errors.Unwrap(err))
	}
	probe, err := os.CreateTemp(dir, ".voik-write-check-*")
	if err != nil {
		return fmt.Errorf("configuration: %s %q is not writable: %v", name, dir, errors.Unwrap(err))
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
