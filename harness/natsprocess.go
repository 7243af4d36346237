package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSProcess is a nats-server running as a child process, for load tests
// whose server must not share the test process: under the race detector
// an in-process server is several times slower than a real one, and
// becomes the bottleneck the test means to measure voik against.
type NATSProcess struct {
	URL string
	cmd *exec.Cmd
}

// BuildNATSServer builds nats-server from the module voik depends on
// into a temporary directory and returns its path.
func BuildNATSServer(tb TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "nats-server")
	if out, err := exec.Command(goTool(), "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		tb.Fatalf("go build nats-server: %v\n%s", err, out)
	}
	return bin
}

// StartNATSProcess builds nats-server from the module voik depends on
// (the same version the in-process server is), runs it on 127.0.0.1 with
// a max_payload of 1 MiB and, with voikUser, the user of WithVoikUser,
// and returns once it accepts clients. It is killed when the test ends.
func StartNATSProcess(tb TB, voikUser bool) *NATSProcess {
	tb.Helper()
	dir := tb.TempDir()
	bin := BuildNATSServer(tb)
	port := freePort(tb, "127.0.0.1")
	conf := fmt.Sprintf("listen: \"127.0.0.1:%d\"\nmax_payload: 1048576\n", port)
	if voikUser {
		// What docs/operations.md asks for, as WithVoikUser sets it.
		conf += fmt.Sprintf(`authorization {
  users = [
    { user: %q, password: %q, permissions: { publish: ">", subscribe: { allow: ">", deny: ["_INBOX.>"] } } }
    { user: "client" }
  ]
}
no_auth_user: "client"
`, VoikUser, VoikPassword)
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "nats.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &NATSProcess{URL: "nats://127.0.0.1:" + strconv.Itoa(port), cmd: cmd}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := nats.Connect(p.URL, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return p
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nats-server on %s did not accept clients: %v", p.URL, err)
		}
		time.Sleep(20 * time.Millisecond) // a process starting: no event to wait on
	}
}
