package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voik/voik/harness"
)

// TestRunSmall runs every scenario with tiny counts: the benchmark works,
// every figure is there, nothing is lost or wrong, and the report prints
// and saves.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs voik, NATS and JetStream")
	}
	var progress strings.Builder
	opts := Options{
		Sizes:         []int{1024},
		Messages:      []int{2000},
		Appends:       []int{500},
		AppendsAlways: []int{50},
		Window:        32,
		WideWindow:    64,
		FetchOne:      20,
		Repeat:        1,
		Stall:         10 * time.Second,
		VoikBin:       harness.BuildVoik(t),
		Progress:      &syncWriter{b: &progress},
		Mode:          "test",
	}
	r, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range r.Errors {
		t.Error(e)
	}
	for _, scenario := range scenarioOrder {
		f := r.figure(1024, scenario)
		switch {
		case f == nil:
			t.Errorf("%s: no figure", scenario)
		case f.Err != "" || f.Done != f.Messages || f.MsgPerS <= 0:
			// JetStream may drop plain publishes it cannot keep up with;
			// the benchmark reports it, the test does not judge it.
			if scenario != ScenarioJSCapture {
				t.Errorf("%s: %+v", scenario, f)
			}
		}
	}
	if len(r.Resources) != 1 || r.Resources[0].PeakRSS <= 0 {
		t.Errorf("resources: %+v", r.Resources)
	}
	var out strings.Builder
	r.Write(&out)
	for _, want := range []string{"voik capture", "JetStream pull consumer", "targets at 1KiB", "capture voik/ceiling"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if err := r.WriteJSON(filepath.Join(t.TempDir(), "bench.json")); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.Logf("progress:\n%s\nreport:\n%s", progress.String(), out.String())
	}
}

func TestEnvFatalEndsTheScenarioAndRunsCleanups(t *testing.T) {
	var log strings.Builder
	e := newEnv(context.Background(), "scenario", &log)
	var order []string
	err := e.run(func(e *Env) {
		dir := e.TempDir()
		e.Cleanup(func() { order = append(order, "first") })
		e.Cleanup(func() { order = append(order, "second:"+filepath.Base(dir)) })
		e.Fatalf("stop here")
		order = append(order, "after Fatal")
	})
	if err == nil || !strings.Contains(err.Error(), "stop here") {
		t.Fatalf("err %v, want the Fatal message", err)
	}
	if len(order) != 2 || order[0][:6] != "second" || order[1] != "first" {
		t.Fatalf("cleanups ran as %v; want last registered first, and nothing after Fatal", order)
	}
}

// syncWriter lets the progress goroutines share a strings.Builder.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestMain lets the test binary serve as the ceiling's counting
// subscriber, as voikbench does.
func TestMain(m *testing.M) {
	RunChildIfAsked()
	os.Exit(m.Run())
}

// A target's note gives the ratio within each repeat, beside the ratio of
// the best of each: a lucky repeat of the reference shows as what it is.
func TestTargetsShowTheRatioRepeatByRepeat(t *testing.T) {
	r := &Report{Runs: []Figure{
		{Size: 1024, Repeat: 1, Scenario: ScenarioCeiling, Done: 1, MsgPerS: 400},
		{Size: 1024, Repeat: 1, Scenario: ScenarioVoikCapture, Done: 1, MsgPerS: 200},
		{Size: 1024, Repeat: 2, Scenario: ScenarioCeiling, Done: 1, MsgPerS: 100},
		{Size: 1024, Repeat: 2, Scenario: ScenarioVoikCapture, Done: 1, MsgPerS: 190},
		{Size: 128, Repeat: 3, Scenario: ScenarioCeiling, Done: 1, MsgPerS: 1}, // another size
	}}
	r.compare()
	for _, target := range r.Targets {
		if target.Name != "capture vs ceiling" {
			continue
		}
		if target.Got != 0.5 || target.Note != "repeat by repeat: 0.50, 1.90" {
			t.Fatalf("capture target %+v: want 0.5 (best 200 over best 400) and both repeats' ratios", target)
		}
		return
	}
	t.Fatalf("no capture target in %+v", r.Targets)
}
