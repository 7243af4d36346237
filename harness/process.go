package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/sidecar"
)

// BuildVoik builds the voik binary (voikPackage) into a temporary
// directory of tb and returns its path. It is meant to be called once per
// test binary run (in the one test that needs it, or once per package from
// a helper the caller holds on to) and the path passed to StartVoikProcess;
// the go build cache makes a repeat cheap. There is no package-level cache
// on purpose: the binary belongs to whoever built it.
//
// With VOIK_TEST_BIN set, it builds nothing and returns that binary: to
// show that a test fails on an older voik.
func BuildVoik(tb TB) string {
	tb.Helper()
	if bin := os.Getenv("VOIK_TEST_BIN"); bin != "" {
		tb.Logf("testing the voik at VOIK_TEST_BIN=%s", bin)
		return bin
	}
	start := time.Now()
	bin, err := BuildVoikInto(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("built voik in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// voikPackage is the main package of the voik binary.
const voikPackage = "github.com/voik/voik/cmd/voik"

// BuildVoikInto builds the voik binary into dir and returns its path.
func BuildVoikInto(dir string) (string, error) {
	bin := filepath.Join(dir, "voik")
	if out, err := exec.Command(goTool(), "build", "-o", bin, voikPackage).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", voikPackage, err, out)
	}
	return bin, nil
}

// goTool is the go command that builds what tests run as children.
func goTool() string {
	if tool, err := exec.LookPath("go"); err == nil {
		return tool
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// VoikProcess is voik running as a child process, so that a test can
// SIGKILL it and start it again on the same data dir.
//
// Client stays valid across Kill and Restart: its connection reconnects
// to the same NATS server (the external one, or the embedded one the child
// starts again on the same port). Requests made while voik is down fail.
type VoikProcess struct {
	Config *config.Config // as started; NatsURL and ports made concrete
	Client *client.Client
	Conn   *nats.Conn // the connection under Client
	// NatsURL is the server the child uses: cfg.NatsURL, or its embedded
	// server's URL.
	NatsURL string
	// HTTPAddr is where the child serves /readyz and /metrics ("" when off).
	HTTPAddr string

	bin     string
	wrap    []string // a command the child runs under, or none
	logPath string   // the child's stdout and stderr, every run appended
	starts  int

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	err    error         // cmd.Wait's result, set before exited closes
}

// StartVoikProcess runs bin with cfg as VOIK_* environment variables
// (nothing else of the parent's VOIK_* leaks in) and returns once voik's
// API answers. When cfg.NatsURL is empty the child's embedded server gets
// a fixed free port, and an HTTP address with port 0 gets a free port, so
// that both survive a restart. The child is killed when the test ends; its
// output is written to the test log if the test failed.
func StartVoikProcess(tb TB, bin string, cfg *config.Config) *VoikProcess {
	tb.Helper()
	return StartVoikProcessWrapped(tb, bin, cfg, nil)
}

// StartVoikProcessWrapped is StartVoikProcess with the child run through
// wrap, a command that runs the rest of its arguments (ip netns exec NS:
// Netns.Exec), which must exec it in place so that signals reach voik.
func StartVoikProcessWrapped(tb TB, bin string, cfg *config.Config, wrap []string) *VoikProcess {
	tb.Helper()
	c := *cfg
	if c.NatsURL == "" && c.EmbeddedPort <= 0 {
		c.EmbeddedPort = freePort(tb, c.EmbeddedHost)
	}
	if host, port, err := net.SplitHostPort(c.HTTPAddr); err == nil && port == "0" {
		c.HTTPAddr = net.JoinHostPort(host, strconv.Itoa(freePort(tb, host)))
	}
	if err := c.Validate(sidecar.CheckSettings); err != nil {
		tb.Fatalf("config: %v", err)
	}
	p := &VoikProcess{
		wrap:     wrap,
		Config:   &c,
		NatsURL:  c.NatsURL,
		HTTPAddr: c.HTTPAddr,
		bin:      bin,
		logPath:  filepath.Join(tb.TempDir(), "voik.log"),
	}
	if p.NatsURL == "" {
		p.NatsURL = "nats://" + net.JoinHostPort(c.EmbeddedHost, strconv.Itoa(c.EmbeddedPort))
	}
	tb.Cleanup(func() {
		if p.running() && tb.Failed() {
			// The goroutines of a child still running when the test
			// failed go to its output (Go's SIGQUIT), for the log below.
			p.signal(syscall.SIGCONT)
			p.signal(syscall.SIGQUIT)
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
			}
		}
		if p.running() {
			p.signal(syscall.SIGKILL)
			<-p.exited
		}
		if p.Conn != nil {
			p.Conn.Close()
		}
		if tb.Failed() {
			tb.Logf("voik child output (%s):\n%s", p.logPath, p.Output())
		}
	})
	p.start(tb)
	nc, err := nats.Connect(p.NatsURL,
		nats.Name("voik-harness"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.NoCallbacksAfterClientClose(),
	)
	if err != nil {
		tb.Fatalf("connect %s: %v", p.NatsURL, err)
	}
	p.Conn = nc
	p.Client = client.New(nc, c.APIPrefix)
	p.waitReady(tb)
	return p
}

// processEnv is the parent's environment without VOIK_*, plus cfg as
// VOIK_* variables, one per field of config.Config.
func processEnv(cfg *config.Config) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VOIK_") {
			env = append(env, kv)
		}
	}
	v := reflect.ValueOf(cfg).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("env")
		if name == "" {
			continue
		}
		var value string
		switch f := v.Field(i).Interface().(type) {
		case time.Duration:
			value = f.String()
		case config.ByteSize:
			value = strconv.FormatInt(int64(f), 10)
		default:
			value = fmt.Sprint(f)
		}
		env = append(env, name+"="+value)
	}
	return env
}

// freePort asks the kernel for a port that is free now.
func freePort(tb TB, host string) int {
	tb.Helper()
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start launches the child; it does not wait for it to be ready.
func (p *VoikProcess) start(tb TB) {
	tb.Helper()
	out, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatalf("voik log: %v", err)
	}
	defer out.Close() // the child holds its own descriptor
	p.starts++
	fmt.Fprintf(out, "--- start %d at %s ---\n", p.starts, time.Now().Format(time.RFC3339Nano))
	args := append(append([]string(nil), p.wrap...), p.bin, "serve")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = processEnv(p.Config) // each start: a test may change Config between restarts
	cmd.Stdout, cmd.Stderr = out, out
	// The child must not outlive a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.bin, err)
	}
	p.cmd, p.err = cmd, nil
	p.exited = make(chan struct{})
	exited := p.exited
	go func() {
		err := cmd.Wait()
		p.err = err
		close(exited)
	}()
}

// waitReady returns once voik answers a SUBJECTS request (the contract: the
// API answers only once capture is active), and /readyz says ready when
// HTTP is on. It fails the test if the child exits first or 30s pass.
func (p *VoikProcess) waitReady(tb TB) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.exited:
			tb.Fatalf("voik exited while starting: %v\n%s", p.err, p.Output())
		default:
		}
		if p.answers() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("voik did not answer within 30s\n%s", p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *VoikProcess) answers() bool {
	if !p.Conn.IsConnected() {
		return false
	}
	if _, err := p.Conn.Request(p.Config.APIPrefix+".SUBJECTS", nil, 500*time.Millisecond); err != nil {
		return false
	}
	return p.HTTPAddr == "" || p.Ready()
}

// Ready says whether the child's /readyz answers 200: connected,
// capturing, and in a group the leader or an in-sync follower (one that
// answers reads).
func (p *VoikProcess) Ready() bool {
	resp, err := statusClient.Get("http://" + p.HTTPAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (p *VoikProcess) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *VoikProcess) signal(sig syscall.Signal) {
	// The only failure is a child that is already gone, which the waits
	// that follow see.
	_ = p.cmd.Process.Signal(sig)
}

// PID is the running child's process id.
func (p *VoikProcess) PID() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the child to be gone.
func (p *VoikProcess) Kill() {
	if !p.running() {
		return
	}
	p.signal(syscall.SIGKILL)
	<-p.exited
}

// Pause stops the child (SIGSTOP): it holds its connections and files
// and does nothing, as a process the scheduler starves or a VM that
// freezes.
func (p *VoikProcess) Pause() { p.signal(syscall.SIGSTOP) }

// Resume continues a paused child (SIGCONT).
func (p *VoikProcess) Resume() { p.signal(syscall.SIGCONT) }

// Stop sends SIGTERM and fails the test unless voik exits with status 0
// within 60s (it is killed then).
func (p *VoikProcess) Stop(tb TB) {
	tb.Helper()
	if !p.running() {
		tb.Errorf("voik stop: not running (exit: %v)", p.err)
		return
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		p.Kill()
		tb.Errorf("voik did not exit within 60s of SIGTERM; killed")
		return
	}
	if p.err != nil {
		tb.Errorf("voik exited after SIGTERM with %v, want status 0", p.err)
	}
}

// Restart starts voik again with the same settings and data dir and
// returns once it answers. A child still running is killed first.
func (p *VoikProcess) Restart(tb TB) {
	tb.Helper()
	p.Kill()
	p.start(tb)
	p.waitReady(tb)
}

// Exited is closed when the current child has exited.
func (p *VoikProcess) Exited() <-chan struct{} { return p.exited }

// Output is everything the child wrote, every run, for a failure message.
// Past 64 KiB it keeps voik's own log lines (and the harness's start
// marks) first, the last 48 KiB of them, then the last 16 KiB of the
// rest: a failed test's SIGQUIT leaves a goroutine dump that would
// otherwise push out the log that says what the member did.
func (p *VoikProcess) Output() string {
	out, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no output: %v)", err)
	}
	const keep, keepLog = 64 << 10, 48 << 10
	if len(out) <= keep {
		return string(out)
	}
	var logLines, rest []byte
	for _, line := range bytes.SplitAfter(out, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("time=")) || bytes.HasPrefix(line, []byte("{\"time\"")) || bytes.HasPrefix(line, []byte("--- start")) {
			logLines = append(logLines, line...)
		} else {
			rest = append(rest, line...)
		}
	}
	return tail(logLines, keepLog) + "--- the rest of the output (goroutine dumps, panics) ---\n" + tail(rest, keep-keepLog)
}

// tail is the last n bytes of b, from a line's start.
func tail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	cut := bytes.IndexByte(b[len(b)-n:], '\n')
	return "...\n" + string(b[len(b)-n+cut+1:])
}

// GroupStatus is a group member's GET /group (PROTOCOL.md section 8).
type GroupStatus struct {
	Group        string `json:"group"`
	Instance     string `json:"instance"`
	Role         string `json:"role"` // leader, follower or candidate
	Leader       string `json:"leader"`
	Epoch        uint64 `json:"epoch"`
	CommittedLag uint64 `json:"committed_lag"`
}

// statusClient gives up on a member that does not answer (a paused, cut
// off or killed one).
var statusClient = &http.Client{Timeout: 2 * time.Second}

// GroupStatus reads the child's GET /group.
func (p *VoikProcess) GroupStatus() (GroupStatus, error) {
	var st GroupStatus
	resp, err := statusClient.Get("http://" + p.HTTPAddr + "/group")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /group: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Metric reads the first series of the child's /metrics whose name is
// name and whose labels include every one of labels (`code="200"`), and
// says whether it found one (a counter appears with its first count).
func (p *VoikProcess) Metric(name string, labels ...string) (float64, bool, error) {
	m, err := p.Metrics()
	if err != nil {
		return 0, false, err
	}
	v, ok := m.Find(name, labels...)
	return v, ok, nil
}

// Metrics is one scrape of the child's /metrics: each series (name and
// labels, as written) with its value, in the order written.
type Metrics []struct {
	Series string
	Value  float64
}

// Metrics scrapes the child's /metrics once, for reading several series
// of one moment.
func (p *VoikProcess) Metrics() (Metrics, error) {
	resp, err := statusClient.Get("http://" + p.HTTPAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m Metrics
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		series, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(series, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m = append(m, struct {
				Series string
				Value  float64
			}{series, v})
		}
	}
	return m, sc.Err()
}

// Find is the first series named name whose labels include every one of
// labels, and whether there is one.
func (m Metrics) Find(name string, labels ...string) (float64, bool) {
	for _, s := range m {
		if s.Series != name && !strings.HasPrefix(s.Series, name+"{") {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(s.Series, l)
		}
		if matches {
			return s.Value, true
		}
	}
	return 0, false
}
