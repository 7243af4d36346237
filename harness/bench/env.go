package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/voik/voik/harness"
)

// Env is the harness.TB of one benchmark scenario, so that the benchmark
// uses the same harness helpers (StartNATS, StartVoikProcess, ...) as the
// tests without linking the testing package into voikbench.
//
// It ends a scenario as testing ends a test: the scenario runs in a
// goroutine of its own, and Fatal records the failure and calls
// runtime.Goexit, which ends that goroutine after running its deferred
// calls. Then the cleanups run (last registered first) and the program
// records the failure and goes on with the next scenario. As in a test,
// Fatal must be called from the scenario's goroutine: from another one it
// would end that goroutine instead.
type Env struct {
	name string
	log  io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	msgs     []string
	tempDirs []string
}

var _ harness.TB = (*Env)(nil)

// newEnv returns an Env for one scenario that logs to log.
func newEnv(name string, log io.Writer) *Env {
	return &Env{name: name, log: log}
}

// run calls fn with e, then e's cleanups (last registered first), then
// removes e's temporary directories, and returns the failures, if any.
// Each of fn and the cleanups runs in a goroutine of its own, so that a
// Fatal in any of them ends that one and no more: a cleanup that fails
// does not keep the others from running.
func (e *Env) run(fn func(*Env)) error {
	e.call(func() { fn(e) })
	for {
		e.mu.Lock()
		if len(e.cleanups) == 0 {
			e.mu.Unlock()
			break
		}
		cleanup := e.cleanups[len(e.cleanups)-1]
		e.cleanups = e.cleanups[:len(e.cleanups)-1]
		e.mu.Unlock()
		e.call(cleanup)
	}
	// After the cleanups: a server they stop may still write into its
	// directory until then.
	e.mu.Lock()
	dirs := e.tempDirs
	e.tempDirs = nil
	e.mu.Unlock()
	for _, dir := range dirs {
		os.RemoveAll(dir)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failed {
		return fmt.Errorf("%s: %v", e.name, e.msgs)
	}
	return nil
}

// call runs fn in a new goroutine and waits until it ends: by returning,
// by runtime.Goexit (Fatal), or by a panic, which is a bug in the
// scenario; it is recorded as a failure with its stack, so that the other
// scenarios still run and the report is still written.
func (e *Env) call(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			// recover is nil under runtime.Goexit: only a panic is caught.
			if r := recover(); r != nil {
				e.fail(fmt.Sprintf("panic: %v\n%s", r, debug.Stack()))
			}
		}()
		fn()
	}()
	<-done
}

func (e *Env) fail(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failed = true
	e.msgs = append(e.msgs, msg)
	fmt.Fprintf(e.log, "  %s: FAIL: %s\n", e.name, msg)
}

// Cleanup registers fn to run when the scenario ends.
func (e *Env) Cleanup(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, fn)
}

// Errorf records a failure; the scenario goes on.
func (e *Env) Errorf(format string, args ...any) { e.fail(fmt.Sprintf(format, args...)) }

// Failed reports whether the scenario has failed.
func (e *Env) Failed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed
}

// Fatal records a failure and ends the scenario (see Env).
func (e *Env) Fatal(args ...any) {
	e.fail(fmt.Sprint(args...))
	runtime.Goexit()
}

// Fatalf records a failure and ends the scenario (see Env).
func (e *Env) Fatalf(format string, args ...any) {
	e.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

// Helper does nothing: failures are printed without a file and line.
func (e *Env) Helper() {}

// Logf prints a line to the progress output, under the scenario's name.
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(e.log, "  %s: %s\n", e.name, fmt.Sprintf(format, args...))
}

// TempDir makes a directory that is removed when the scenario ends.
func (e *Env) TempDir() string {
	dir, err := os.MkdirTemp("", "voikbench-")
	if err != nil {
		e.Fatalf("temp dir: %v", err)
	}
	e.mu.Lock()
	e.tempDirs = append(e.tempDirs, dir)
	e.mu.Unlock()
	return dir
}
