package harness

// TB is what harness needs of whoever runs it: a test, a benchmark, or a
// program's own runner (harness/bench's Env). *testing.T and *testing.B
// satisfy it, so tests pass t as before; harness itself does not import
// testing, so a program built on it (voikbench) does not link the testing
// package.
//
// As with testing, Fatal and Fatalf end the calling goroutine, and must be
// called from the goroutine that runs the test or scenario.
type TB interface {
	Helper()
	// Cleanup registers a function to run when the test or scenario ends,
	// last registered first.
	Cleanup(func())
	// TempDir is a new directory that is removed when the test ends.
	TempDir() string
	Logf(format string, args ...any)
	// Errorf records a failure and goes on.
	Errorf(format string, args ...any)
	Failed() bool
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}
