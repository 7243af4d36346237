package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// Env is a testing.TB for a program, so that the benchmark uses the same
// harness helpers (StartNATS, StartVoikProcess, ...) as the tests. Cleanups
// run when the scenario that registered them ends; Fatal ends the scenario,
// not the program, which records the failure and goes on.
//
// The embedded TB is nil: it only supplies testing.TB's unexported method.
// Every method the harness calls is defined here.
type Env struct {
	testing.TB
	name string
	log  io.Writer
	ctx  context.Context

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	msgs     []string
	tempDirs []string
}

// failNow is what FailNow panics with; run recovers it.
type failNow struct{}

// newEnv returns an Env for one scenario that logs to log.
func newEnv(ctx context.Context, name string, log io.Writer) *Env {
	return &Env{name: name, log: log, ctx: ctx}
}

// run calls fn with e, then e's cleanups (last registered first), and
// returns the failure messages, if any.
func (e *Env) run(fn func(*Env)) (err error) {
	defer func() {
		r := recover()
		if _, ok := r.(failNow); r != nil && !ok {
			e.fail(fmt.Sprintf("panic: %v", r))
		}
		e.runCleanups()
		if e.Failed() {
			err = fmt.Errorf("%s: %v", e.name, e.msgs)
		}
	}()
	fn(e)
	return nil
}

func (e *Env) runCleanups() {
	for {
		e.mu.Lock()
		if len(e.cleanups) == 0 {
			e.mu.Unlock()
			break
		}
		fn := e.cleanups[len(e.cleanups)-1]
		e.cleanups = e.cleanups[:len(e.cleanups)-1]
		e.mu.Unlock()
		fn()
	}
	for _, dir := range e.tempDirs {
		os.RemoveAll(dir)
	}
	e.tempDirs = nil
}

func (e *Env) fail(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failed = true
	if msg != "" {
		e.msgs = append(e.msgs, msg)
		fmt.Fprintf(e.log, "  %s: FAIL: %s\n", e.name, msg)
	}
}

func (e *Env) Cleanup(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, fn)
}
func (e *Env) Error(args ...any)                 { e.fail(fmt.Sprint(args...)) }
func (e *Env) Errorf(format string, args ...any) { e.fail(fmt.Sprintf(format, args...)) }
func (e *Env) Fail()                             { e.fail("") }
func (e *Env) FailNow()                          { e.fail(""); panic(failNow{}) }
func (e *Env) Failed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed
}
func (e *Env) Fatal(args ...any) { e.fail(fmt.Sprint(args...)); panic(failNow{}) }
func (e *Env) Fatalf(format string, args ...any) {
	e.fail(fmt.Sprintf(format, args...))
	panic(failNow{})
}
func (e *Env) Helper()         {}
func (e *Env) Log(args ...any) { fmt.Fprintf(e.log, "  %s: %s\n", e.name, fmt.Sprint(args...)) }
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(e.log, "  %s: %s\n", e.name, fmt.Sprintf(format, args...))
}
func (e *Env) Name() string                  { return e.name }
func (e *Env) Skip(args ...any)              { e.Fatal(append([]any{"skipped: "}, args...)...) }
func (e *Env) SkipNow()                      { e.Fatal("skipped") }
func (e *Env) Skipf(format string, a ...any) { e.Fatalf("skipped: "+format, a...) }
func (e *Env) Skipped() bool                 { return false }
func (e *Env) Context() context.Context      { return e.ctx }
func (e *Env) Output() io.Writer             { return e.log }
func (e *Env) Attr(key, value string)        {}
func (e *Env) ArtifactDir() string           { return e.TempDir() }
func (e *Env) Setenv(key, value string)      { e.Fatal("Setenv is not supported in a program") }
func (e *Env) Chdir(dir string)              { e.Fatal("Chdir is not supported in a program") }

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
