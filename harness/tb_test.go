package harness

import "testing"

// What the tests of every package pass to harness must satisfy TB, so
// that their calls compile unchanged.
var (
	_ TB = (*testing.T)(nil)
	_ TB = (*testing.B)(nil)
	_ TB = testing.TB(nil)
)
