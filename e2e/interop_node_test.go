package e2e

// Node interop: voik driven by a JavaScript client, nats.js and
// @msgpack/msgpack as pinned in interop/node/package-lock.json (installed by
// `make interop-deps`, which `make test` runs first). The scripts check the
// contract as such a client sees it; this file starts NATS and voik for them
// and runs them with node.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voik/voik/config"
)

// nodeDir is interop/node, from the e2e directory the test runs in.
const nodeDir = "../interop/node"

// TestNodeClientUsesEveryVerbAndDecodesEveryReplyAsBigInt runs
// interop/node/interop.mjs: every verb, acked appends (and a lowercase
// voik-ack that gets none), error replies, the fixed integer widths of every
// reply and their decoding to BigInt, whole-valued floats in requests, and
// what @msgpack/msgpack does with a header named __proto__.
func TestNodeClientUsesEveryVerbAndDecodesEveryReplyAsBigInt(t *testing.T) {
	e := startNodeVoik(t)
	out := runNode(t, 2*time.Minute, e, "interop.mjs")
	if !strings.Contains(out, "PASS: ") {
		t.Fatalf("interop.mjs exited 0 without its PASS line")
	}
}

// TestNodeProtocolDocExampleReadsALogPageByPage runs interop/node/example.mjs,
// the JavaScript example that docs/protocol.md quotes, on a subject of three
// records and checks what it prints: each offset, ts as a date to the
// millisecond, and data.
func TestNodeProtocolDocExampleReadsALogPageByPage(t *testing.T) {
	e := startNodeVoik(t)
	const subject = "interop.example"
	var want []string
	for _, data := range []string{"one", "two", "three"} {
		ack := e.appendAcked(subject, nil, []byte(data))
		when := time.Unix(0, ack.Timestamp).UTC().Format("2006-01-02T15:04:05.000Z")
		want = append(want, fmt.Sprintf("%d %s %s", ack.Offset, when, data))
	}
	out := runNode(t, 30*time.Second, e, "example.mjs", subject)
	if strings.TrimSpace(out) != strings.Join(want, "\n") {
		t.Fatalf("example.mjs printed\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
}

// startNodeVoik starts NATS and voik capturing interop.> only, under an API
// prefix of its own (so that a script that hard-codes VOIK.API fails).
func startNodeVoik(t *testing.T) *e2e {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", ".package-lock.json")); err != nil {
		t.Fatalf("interop/node/node_modules is not installed (%v): run `make interop-deps` (make test does)", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node (20 or later) is needed for the interop test: %v", err)
	}
	return startWith(t, nil, func(cfg *config.Config) {
		cfg.Subjects = "interop.>"
		cfg.APIPrefix = "INTEROP.API"
	})
}

// runNode runs `node script args...` in interop/node with NATS_URL and
// VOIK_API_PREFIX set, logs its output line by line as it comes, fails the
// test when it exits non-zero or outlives timeout, and returns its stdout.
func runNode(t *testing.T, timeout time.Duration, e *e2e, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "NATS_URL="+e.server.ClientURL(), "VOIK_API_PREFIX="+e.prefix())
	cmd.WaitDelay = 5 * time.Second
	var mu sync.Mutex // stdout's and stderr's lines do not interleave
	stdout := &lineLogger{t: t, name: script, mu: &mu}
	stderr := &lineLogger{t: t, name: script + " (stderr)", mu: &mu}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	stdout.flush()
	stderr.flush()
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node %s did not finish within %v", script, timeout)
	case err != nil:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("node %s failed (%v):\n%s", script, err, stderr.all.String())
		}
		t.Fatalf("node %s: %v", script, err)
	}
	return stdout.all.String()
}

// lineLogger passes a process's output to t.Log a line at a time, and keeps it.
type lineLogger struct {
	t    *testing.T
	name string
	mu   *sync.Mutex
	part []byte
	all  bytes.Buffer
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Logf("%s: %s", l.name, l.part[:i])
		l.part = l.part[i+1:]
	}
}

func (l *lineLogger) flush() {
	if len(l.part) > 0 {
		l.t.Logf("%s: %s", l.name, l.part)
		l.part = nil
	}
}
