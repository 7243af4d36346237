package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A long output keeps voik's log lines ahead of a goroutine dump that
// would push them out: the dump's tail is kept too, after them.
func TestOutputKeepsTheLogAheadOfAGoroutineDump(t *testing.T) {
	var b strings.Builder
	b.WriteString("--- start 1 at now ---\n")
	b.WriteString("time=2026-12-07T06:08:54.948Z level=INFO msg=\"handed over the lead\"\n")
	for range 5000 {
		b.WriteString("goroutine 1 [chan receive]:\n\truntime.gopark(...)\n")
	}
	b.WriteString("time=2026-12-07T06:08:57Z level=INFO msg=\"shut down cleanly\"\n")
	p := &VoikProcess{logPath: filepath.Join(t.TempDir(), "voik.log")}
	if err := os.WriteFile(p.logPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := p.Output()
	if len(out) > 70<<10 || !strings.Contains(out, "handed over the lead") || !strings.Contains(out, "shut down cleanly") ||
		!strings.Contains(out, "--- start 1") || !strings.Contains(out, "runtime.gopark") {
		t.Fatalf("%d bytes; log lines or the dump's tail missing:\n%.300s", len(out), out)
	}
}
