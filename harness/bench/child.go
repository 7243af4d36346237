package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/harness"
)

// RunChildIfAsked turns this process into one of the benchmark's
// children and exits, if the benchmark started it as one: a counting
// subscriber (counterEnv) or a responder (responderEnv). Programs that
// run Run (and the tests of this package, from TestMain) call it first
// thing.
func RunChildIfAsked() {
	var err error
	switch {
	case os.Getenv(counterEnv) != "":
		err = runCounter(os.Getenv(counterEnv))
	case os.Getenv(responderEnv) != "":
		err = runResponder(os.Getenv(responderEnv))
	default:
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "voikbench child: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// subscribeReady subscribes handler to subject with no pending limits,
// makes sure the server has the subscription, and says "ready" on stdout:
// what a child does before the benchmark starts sending.
func subscribeReady(nc *nats.Conn, subject string, handler nats.MsgHandler) error {
	sub, err := nc.Subscribe(subject, handler)
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Println("ready")
	return nil
}

// child is a child process of the benchmark: this binary again.
type child struct {
	pid int
	out *bufio.Scanner // its standard output, after "ready"
}

// cpu is the CPU time the child has used so far, or 0 when /proc cannot
// tell.
func (c child) cpu() time.Duration {
	u, err := harness.ReadProcUsage(c.pid)
	if err != nil {
		return 0
	}
	return u.CPU
}

// waitForStdinToClose is how a child that has done its work waits for the
// benchmark to stop it, staying alive for cpu to be read.
func waitForStdinToClose() { bufio.NewReader(os.Stdin).ReadString('\n') }

// startChild runs this binary again with env added to its environment, as
// the child named what, and returns it once it has said "ready" on its
// standard output. The child is stopped when e's cleanups run: its
// stdin is closed (a responder's cue to exit), then it is killed if it
// has not exited within 5 seconds.
func startChild(e *Env, what, env string) child {
	self, err := os.Executable()
	if err != nil {
		e.Fatalf("%s: %v", what, err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.Fatalf("%s: %v", what, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.Fatalf("%s: %v", what, err)
	}
	if err := cmd.Start(); err != nil {
		e.Fatalf("%s: %v", what, err)
	}
	e.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	out := bufio.NewScanner(stdout)
	if !out.Scan() || out.Text() != "ready" {
		e.Fatalf("%s did not start: %q %v", what, out.Text(), out.Err())
	}
	return child{pid: cmd.Process.Pid, out: out}
}
