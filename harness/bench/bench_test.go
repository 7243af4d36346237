package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voik/voik/harness"
)

// TestRunSmall runs every scenario with tiny counts: the benchmark works,
// every figure is there, nothing is lost or wrong, and the report prints
// and saves. The flood part has a test of its own, TestRunFloodPart.
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
		Parts:         []string{"ceiling", "voik", "jetstream", "always"},
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
		if scenario == ScenarioVoikFloodQuiet || scenario == ScenarioVoikFloodCapture {
			continue // the flood part's, not run here
		}
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
	for _, want := range []string{"voik capture", "JetStream pull consumer", "targets at 1KiB", "capture voik/ceiling", "history voik FETCH/fastest JetStream reader ("} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	// voik's FETCH against each JetStream reader, and against the fastest.
	ratios := map[string]Ratio{}
	for _, ratio := range r.Ratios {
		ratios[ratio.Name] = ratio
	}
	for _, reader := range jsReaders {
		if ratio, ok := ratios["history voik FETCH/"+reader]; !ok || ratio.Value <= 0 {
			t.Errorf("no ratio of voik's FETCH to %s: %+v", reader, r.Ratios)
		}
	}
	fastest, failed := r.fastestJSReader(1024)
	if fastest == nil || len(failed) > 0 {
		t.Errorf("fastest JetStream reader %+v, not counted %v", fastest, failed)
	} else {
		if ratio := ratios["history voik FETCH/fastest JetStream reader"]; ratio.Ref != fastest.Scenario || ratio.Value != r.rate(1024, ScenarioVoikFetch, fastest.Scenario) {
			t.Errorf("ratio to the fastest reader %+v, want against %s", ratio, fastest.Scenario)
		}
		target := findTarget(r, "FETCH history vs fastest JetStream reader")
		if target == nil || target.Got <= 0 || !strings.Contains(target.Note, "fastest: "+fastest.Scenario+",") {
			t.Errorf("FETCH target %+v, want a ratio against %s, named in the note", target, fastest.Scenario)
		}
	}
	if err := r.WriteJSON(filepath.Join(t.TempDir(), "bench.json")); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.Logf("progress:\n%s\nreport:\n%s", progress.String(), out.String())
	}
}

// TestRunFloodPart runs only the read-flood part (-parts flood), small: a
// 5,000-message burst, the flood's 3,000 FETCH/s for about a second
// before it and while it is stored. Every figure must be there, nothing
// lost in either phase, and the flood answered.
func TestRunFloodPart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs voik and NATS under a read flood")
	}
	var progress strings.Builder
	opts := Options{
		Sizes:         []int{1024},
		Messages:      []int{5000},
		Appends:       []int{1},
		AppendsAlways: []int{1},
		Window:        1,
		FetchOne:      1,
		Repeat:        1,
		Stall:         10 * time.Second,
		VoikBin:       harness.BuildVoik(t),
		Parts:         []string{"flood"},
		Progress:      &syncWriter{b: &progress},
		Mode:          "test",
	}
	r, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Write(&out)
	defer func() {
		if t.Failed() {
			t.Logf("progress:\n%s\nreport:\n%s", progress.String(), out.String())
		}
	}()
	for _, e := range r.Errors {
		t.Error(e)
	}
	for _, f := range r.Figures {
		if f.Scenario != ScenarioVoikFloodQuiet && f.Scenario != ScenarioVoikFloodCapture {
			t.Errorf("-parts flood ran %q too", f.Scenario)
		}
	}
	for _, scenario := range []string{ScenarioVoikFloodQuiet, ScenarioVoikFloodCapture} {
		f := r.figure(1024, scenario)
		if f == nil || f.Err != "" || f.Lost != 0 || f.Done != 5000 || f.MsgPerS <= 0 {
			t.Errorf("%s: %+v, want all 5000 stored at a rate", scenario, f)
		}
	}
	if len(r.Floods) != 1 {
		t.Fatalf("%d flood runs, want 1: %+v", len(r.Floods), r.Floods)
	}
	run := r.Floods[0]
	switch {
	case run.NoFloodLost != 0 || run.FloodLost != 0:
		t.Errorf("lost %d without the flood and %d under it", run.NoFloodLost, run.FloodLost)
	case run.NoFloodMsgPerS <= 0 || run.FloodMsgPerS <= 0 || run.Ratio <= 0:
		t.Errorf("capture rates missing: %+v", run)
	case run.Sent <= 0 || run.Replies <= 0:
		t.Errorf("the flood sent %d and got %d replies, want some of each", run.Sent, run.Replies)
	case run.OtherErrors != 0:
		t.Errorf("the flood got %d errors other than 503", run.OtherErrors)
	case run.NoFloodPeakAnonRSS <= 0 || run.FloodPeakAnonRSS <= 0:
		t.Errorf("peak anon RSS not measured: %d without, %d with the flood", run.NoFloodPeakAnonRSS, run.FloodPeakAnonRSS)
	case run.ReplyBudget != 256<<20:
		t.Errorf("reply budget %d, want the default 256 MiB", run.ReplyBudget)
	case run.History != 4096:
		t.Errorf("history of %d records, want 4096 (4 MiB of 1 KiB)", run.History)
	}
	targets := map[string]Target{}
	for _, target := range r.Targets {
		targets[target.Name] = target
	}
	for _, name := range []string{"loss under read flood", "peak anon RSS under read flood"} {
		if _, ok := targets[name]; !ok {
			t.Errorf("no target %q in %+v", name, r.Targets)
		}
	}
	if loss := targets["loss under read flood"]; !loss.Met {
		t.Errorf("loss target missed: %+v", loss)
	}
	if len(r.Info) != 1 || r.Info[0].Got <= 0 {
		t.Errorf("capture ratio under the flood not given as information: %+v", r.Info)
	}
	for _, want := range []string{ScenarioVoikFloodCapture, "capture under read flood:", "loss under read flood", "capture under read flood / without", "no target"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"floods"`, `"flood_peak_anon_rss"`, `"flood_503s"`, `"reply_budget"`, `"info"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

// The flood's targets follow the worst repeat: one lost message or one
// peak past budget plus margin misses them, whatever the other repeats
// did; the capture ratio is information, never a target.
func TestFloodTargetsTakeTheWorstRepeat(t *testing.T) {
	const budget = 256 << 20
	r := &Report{
		Runs: []Figure{
			{Size: 1024, Repeat: 1, Scenario: ScenarioVoikFloodQuiet, Messages: 10, Done: 10, MsgPerS: 100},
			{Size: 1024, Repeat: 1, Scenario: ScenarioVoikFloodCapture, Messages: 10, Done: 10, MsgPerS: 50},
			{Size: 1024, Repeat: 2, Scenario: ScenarioVoikFloodQuiet, Messages: 10, Done: 10, MsgPerS: 80},
			{Size: 1024, Repeat: 2, Scenario: ScenarioVoikFloodCapture, Messages: 10, Done: 9, Lost: 1, MsgPerS: 60},
		},
		Floods: []FloodRun{
			{Size: 1024, Run: 1, ReplyBudget: budget, FloodPeakAnonRSS: budget + floodMemoryMargin + 1},
			{Size: 1024, Run: 2, ReplyBudget: budget, FloodPeakAnonRSS: 100 << 20},
		},
	}
	r.compare()
	got := map[string]Target{}
	for _, target := range r.Targets {
		got[target.Name] = target
	}
	if loss := got["loss under read flood"]; loss.Met || loss.Got != 1 {
		t.Errorf("loss target %+v: want missed with 1 lost (repeat 2)", loss)
	}
	if rss := got["peak anon RSS under read flood"]; rss.Met || rss.Got != float64(budget+floodMemoryMargin+1)/(1<<20) {
		t.Errorf("memory target %+v: want missed at repeat 1's peak", rss)
	}
	// Best of each: 60 under the flood over 100 without.
	if len(r.Info) != 1 || r.Info[0].Got != 0.6 || !strings.Contains(r.Info[0].Note, "repeat by repeat: 0.50, 0.75") {
		t.Errorf("information %+v: want the ratio 0.6 and both repeats'", r.Info)
	}
	for _, target := range r.Targets {
		if strings.Contains(target.Name, "/ without") {
			t.Errorf("the capture ratio is a target: %+v", target)
		}
	}
}

// A Fatal ends the scenario as it ends a test: nothing after it runs, the
// scenario's deferred calls do (the flood part stops its flood in one),
// then the cleanups, last registered first, then the temporary
// directories go; the error carries the message.
func TestEnvFatalEndsTheScenarioAndRunsCleanups(t *testing.T) {
	var log strings.Builder
	e := newEnv("scenario", &log)
	var order []string // appended to by one goroutine at a time: run waits for each
	var dir string
	err := e.run(func(e *Env) {
		dir = e.TempDir()
		defer func() { order = append(order, "deferred") }()
		e.Cleanup(func() { order = append(order, "first") })
		e.Cleanup(func() { order = append(order, "second") })
		e.Fatalf("stop here")
		order = append(order, "after Fatal")
	})
	if err == nil || !strings.Contains(err.Error(), "stop here") {
		t.Fatalf("err %v, want the Fatal message", err)
	}
	if !slices.Equal(order, []string{"deferred", "second", "first"}) {
		t.Fatalf("ran %v; want the deferred call, then the cleanups last registered first, and nothing after Fatal", order)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still there: %v", dir, err)
	}
	if !strings.Contains(log.String(), "scenario: FAIL: stop here") {
		t.Errorf("log %q lacks the failure", log.String())
	}
}

// A cleanup that calls Fatal ends itself only: the cleanups registered
// before it still run, and both failures are reported. A panic in the
// scenario is recorded as a failure, not a crash of the program.
func TestEnvFatalInACleanupAndAPanic(t *testing.T) {
	var log strings.Builder
	e := newEnv("scenario", &log)
	var order []string
	err := e.run(func(e *Env) {
		e.Cleanup(func() { order = append(order, "first") })
		e.Cleanup(func() {
			e.Fatal("cleanup failed")
			order = append(order, "after the cleanup's Fatal")
		})
		e.Errorf("goes on")
		order = append(order, "after Errorf")
		panic("a bug")
	})
	if !slices.Equal(order, []string{"after Errorf", "first"}) {
		t.Errorf("ran %v; want the scenario up to its panic, then the first cleanup", order)
	}
	for _, want := range []string{"goes on", "panic: a bug", "cleanup failed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v lacks %q", err, want)
		}
	}
	if ok := newEnv("fine", &log).run(func(e *Env) { e.Logf("nothing wrong") }); ok != nil {
		t.Errorf("a scenario that did not fail: %v", ok)
	}
}

func findTarget(r *Report, name string) *Target {
	for i := range r.Targets {
		if r.Targets[i].Name == name {
			return &r.Targets[i]
		}
	}
	return nil
}

// The FETCH target is stated against the fastest JetStream reader of the
// run, whichever it is, and its note names it; each repeat's ratio is
// against that repeat's fastest; a reader that failed is not counted but
// named; the ratio to each reader is printed.
func TestFetchTargetIsAgainstTheFastestJetStreamReader(t *testing.T) {
	r := &Report{Runs: []Figure{
		{Size: 1024, Repeat: 1, Scenario: ScenarioVoikCapture, Messages: 300_000, Done: 300_000, MsgPerS: 1},
		{Size: 1024, Repeat: 1, Scenario: ScenarioVoikFetch, Messages: 10, Done: 10, MsgPerS: 900},
		{Size: 1024, Repeat: 1, Scenario: ScenarioJSPull, Messages: 10, Done: 10, MsgPerS: 200},
		{Size: 1024, Repeat: 1, Scenario: ScenarioJSOrdered, Messages: 10, Done: 10, MsgPerS: 250},
		{Size: 1024, Repeat: 1, Scenario: ScenarioJSLegacyPull, Messages: 10, Done: 10, MsgPerS: 300},
		{Size: 1024, Repeat: 1, Scenario: ScenarioJSLegacyOrdered, Messages: 10, Done: 10, MsgPerS: 450},
		{Size: 1024, Repeat: 2, Scenario: ScenarioVoikFetch, Messages: 10, Done: 10, MsgPerS: 800},
		{Size: 1024, Repeat: 2, Scenario: ScenarioJSPull, Messages: 10, Done: 10, MsgPerS: 200},
		{Size: 1024, Repeat: 2, Scenario: ScenarioJSOrdered, Messages: 10, Done: 10, MsgPerS: 250},
		{Size: 1024, Repeat: 2, Scenario: ScenarioJSLegacyPull, Messages: 10, Done: 10, MsgPerS: 400},
		// Faster than all, but stalled: not counted.
		{Size: 1024, Repeat: 2, Scenario: ScenarioJSLegacyOrdered, Messages: 10, Done: 5, MsgPerS: 5000, Err: "stalled"},
	}}
	r.compare()
	target := findTarget(r, "FETCH history vs fastest JetStream reader")
	if target == nil {
		t.Fatalf("no FETCH target in %+v", r.Targets)
	}
	// The legacy ordered consumer failed in repeat 2, so the legacy pull's
	// best (400) is the fastest: 900/400.
	if target.Got != 2.25 || !target.Met || target.Want != ">= 1.0" {
		t.Errorf("target %+v: want 2.25 (900 over the legacy pull's 400), met against >= 1.0", target)
	}
	for _, want := range []string{"fastest: " + ScenarioJSLegacyPull + ", 400 msg/s", "repeat by repeat: 2.00, 2.00", "not counted: " + ScenarioJSLegacyOrdered + " (stalled)"} {
		if !strings.Contains(target.Note, want) {
			t.Errorf("note %q lacks %q", target.Note, want)
		}
	}
	got := map[string]Ratio{}
	for _, ratio := range r.Ratios {
		got[ratio.Name] = ratio
	}
	for name, want := range map[string]float64{
		"history voik FETCH/" + ScenarioJSPull:        4.5,
		"history voik FETCH/" + ScenarioJSOrdered:     3.6,
		"history voik FETCH/" + ScenarioJSLegacyPull:  2.25,
		"history voik FETCH/fastest JetStream reader": 2.25,
	} {
		if got[name].Value != want {
			t.Errorf("ratio %q = %v, want %v", name, got[name].Value, want)
		}
	}
	if _, ok := got["history voik FETCH/"+ScenarioJSLegacyOrdered]; ok {
		t.Errorf("a ratio to the reader that failed: %+v", r.Ratios)
	}
	if ref := got["history voik FETCH/fastest JetStream reader"].Ref; ref != ScenarioJSLegacyPull {
		t.Errorf("the fastest reader's ratio names %q", ref)
	}
	var out strings.Builder
	r.Write(&out)
	if want := "history voik FETCH/fastest JetStream reader (" + ScenarioJSLegacyPull + ") 2.25"; !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, out.String())
	}
}

// A push reader the server stops feeding fails after the stall with how
// far it got; one that reads everything returns at once.
func TestAwaitAllEndsAtTheStall(t *testing.T) {
	var read atomic.Int64
	read.Store(3)
	start := time.Now()
	err := awaitAll(make(chan struct{}), &read, 10, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stalled: 3 of 10 messages read") {
		t.Errorf("err %v, want a stall at 3 of 10", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("waited %v for a 50ms stall", waited)
	}
	all := make(chan struct{})
	close(all)
	if err := awaitAll(all, &read, 3, time.Hour); err != nil {
		t.Errorf("a finished read: %v", err)
	}
}

// voikbench is a program: it must not link the testing package (its
// flags and init) through harness or harness/bench, which is why they
// take harness.TB and not testing.TB. A package that imports testing is
// named.
func TestVoikbenchDoesNotLinkTesting(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			t.Skip("no go tool to list voikbench's dependencies")
		}
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "github.com/voik/voik/harness/cmd/voikbench").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(deps) < 10 {
		t.Fatalf("go list printed only %q", out)
	}
	for _, line := range deps {
		pkg, imports, _ := strings.Cut(line, ": ")
		if pkg == "testing" {
			t.Errorf("voikbench links the testing package")
		}
		if slices.Contains(strings.Fields(imports), "testing") {
			t.Errorf("%s imports testing", pkg)
		}
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

// The longest wait for an ack counts from the start, whatever order the
// acks were recorded in, and skips messages never acked.
func TestLongestGapIsTheLongestSilenceBetweenAcks(t *testing.T) {
	start := time.Unix(100, 0)
	got := make([]atomic.Int64, 4)
	for i, ms := range []int64{100, 10, 0, 15} {
		if ms > 0 {
			got[i].Store(start.Add(time.Duration(ms) * time.Millisecond).UnixNano())
		}
	}
	if gap := longestGap(got, start); gap != 85*time.Millisecond {
		t.Fatalf("longest gap %v, want 85ms", gap)
	}
}

// A group scenario's CPU per message adds up every process's, and its
// note names the leader's first.
func TestGroupCPUSplitsByProcessLeaderFirst(t *testing.T) {
	before := groupCPU{self: time.Second, members: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, ok: true, slowSyncs: 1, pulls: 10, pulled: 100}
	after := groupCPU{self: 2 * time.Second, members: []time.Duration{2 * time.Second, 4 * time.Second, 6 * time.Second}, ok: true, slowSyncs: 3, pulls: 14, pulled: 1100}
	total, note := before.split(after, 1, 1_000_000)
	if total != 7 || !strings.Contains(note, "members 2.0/1.0/3.0 (leader first), NATS servers + publisher 1.0") ||
		!strings.Contains(note, "records per pull 250") || !strings.Contains(note, "s: 2") {
		t.Fatalf("total %v, note %q", total, note)
	}
	if total, note := before.split(groupCPU{}, 0, 10); total != 0 || note != "CPU not read" {
		t.Fatalf("unread: %v %q", total, note)
	}
}
