package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"
)

// Options say what to run. Sizes and the per-size counts line up by index.
type Options struct {
	Sizes         []int // message data bytes
	Messages      []int // capture burst, also the history that reads go through
	Appends       []int // acknowledged appends (voik) and publishes (JetStream, default sync)
	AppendsAlways []int // JetStream acknowledged publishes under sync always
	Window        int   // acknowledged messages in flight
	// WideWindow, when above 0, runs every acknowledged scenario a second
	// time with this many in flight: 4000 is nats.go's default limit of
	// pending JetStream async publishes, so the JetStream figures at this
	// window are JetStream as a user gets it without tuning. Under sync
	// always JetStream then publishes at least three windows' worth.
	WideWindow int
	// Repeat runs every scenario this many times, one size after the
	// other; the report keeps each scenario's best rate and worst loss.
	Repeat   int
	FetchOne int // single-record reads timed
	// Stall ends a phase that made no progress for this long; what is
	// missing then is counted as lost.
	Stall time.Duration
	// VoikSync is VOIK_SYNC of the voik under test (default batch).
	VoikSync string
	// VoikBin is the voik binary run as a child. Empty: InProcess must be
	// set.
	VoikBin string
	// InProcess runs voik inside this process (for a CPU profile that
	// covers it); its resources are then not measured.
	InProcess bool
	// PhaseProfile, when set, is called as each voik phase starts
	// ("capture", "appends", "appends-wide", "fetch", "fetch-one", "replay",
	// "capture-no-flood", "capture-flood") and the function it returns as
	// the phase ends: -profile uses it to write one CPU profile per phase.
	PhaseProfile func(size int, phase string) (stop func())
	// GroupProfileDir, when set, turns VOIK_PPROF on in the group part's
	// members and writes CPU profiles of the first GroupProfileSeconds of
	// each of its capture and acked scenarios there: one of each member
	// (fetched from its /debug/pprof/profile) and one of this process (the
	// NATS servers, the publisher), as SIZE-SCENARIO-WHO.pprof.
	GroupProfileDir string
	// Parts limits the run to some of "ceiling", "voik", "jetstream",
	// "always" (JetStream sync always), "flood" (voik's capture of the
	// Messages burst without and under a read flood), "group" (a group
	// of three voiks on a three-server cluster against JetStream R3, at
	// one size: see group.go), "groups" (one group against two splitting
	// the subjects: groups.go); empty runs all.
	Parts    []string
	Progress io.Writer // where progress goes (stderr)
	Mode     string    // "full", "quick" or "custom", for the report
}

// Defaults are the counts of a full run (about 3 minutes on two
// cores, every scenario three times) and of a quick one (about a minute,
// once). 300,000 at 1 KiB is the
// burst the capture target is stated for; quick keeps it.
func Defaults(quick bool) Options {
	o := Options{
		Sizes:         []int{128, 1024, 16384},
		Messages:      []int{1_000_000, 300_000, 40_000},
		Appends:       []int{200_000, 100_000, 20_000},
		AppendsAlways: []int{5_000, 5_000, 2_000},
		Window:        256,
		WideWindow:    4000,
		FetchOne:      2000,
		Repeat:        3,
		Stall:         10 * time.Second,
		Mode:          "full",
	}
	if quick {
		o.Messages = []int{500_000, 300_000, 20_000}
		o.Appends = []int{50_000, 50_000, 10_000}
		o.AppendsAlways = []int{2_000, 2_000, 1_000}
		o.FetchOne = 1000
		o.Repeat = 1
		o.Mode = "quick"
	}
	return o
}

func (o *Options) check() error {
	if len(o.Messages) != len(o.Sizes) || len(o.Appends) != len(o.Sizes) || len(o.AppendsAlways) != len(o.Sizes) {
		return fmt.Errorf("bench: %d sizes but %d, %d, %d counts", len(o.Sizes), len(o.Messages), len(o.Appends), len(o.AppendsAlways))
	}
	for i, size := range o.Sizes {
		if size < 1 || size > 512<<10 {
			return fmt.Errorf("bench: size %d out of range 1..512KiB", size)
		}
		if o.Messages[i] < 1 || o.Appends[i] < 1 || o.AppendsAlways[i] < 1 {
			return fmt.Errorf("bench: counts must be positive")
		}
	}
	if o.Repeat < 1 {
		o.Repeat = 1
	}
	if o.Window < 1 || o.FetchOne < 1 || o.WideWindow < 0 {
		return fmt.Errorf("bench: window and fetch-one must be positive, the wide window 0 (none) or more")
	}
	if o.VoikBin == "" && !o.InProcess {
		return fmt.Errorf("bench: no voik binary")
	}
	if o.Stall <= 0 {
		o.Stall = 10 * time.Second
	}
	for _, part := range o.Parts {
		if !slices.Contains([]string{"ceiling", "voik", "jetstream", "always", "flood", "group", "groups"}, part) {
			return fmt.Errorf("bench: unknown part %q (want ceiling, voik, jetstream, always, flood, group)", part)
		}
	}
	if o.VoikSync == "" {
		o.VoikSync = "batch"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// Report is everything one run measured.
type Report struct {
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Host    string    `json:"host"`
	Mode    string    `json:"mode"`
	Window  int       `json:"window"`
	// WideWindow is the second window of the acknowledged scenarios (0:
	// not run).
	WideWindow int         `json:"wide_window,omitempty"`
	Repeat     int         `json:"repeat"`
	Figures    []Figure    `json:"figures"` // per scenario, the best of the repeats
	Resources  []Resources `json:"resources,omitempty"`
	Floods     []FloodRun  `json:"floods,omitempty"` // the read-flood part, every repeat
	// Failovers is the group part's failover scenario (first repeat).
	Failovers []FailoverRun `json:"failovers,omitempty"`
	// Runs is every figure measured, repeats included.
	Runs    []Figure `json:"runs"`
	Ratios  []Ratio  `json:"ratios"`
	Targets []Target `json:"targets"`
	// Info is printed with the targets but states no goal (the capture
	// rate under a read flood over that without).
	Info   []Info   `json:"info,omitempty"`
	Errors []string `json:"errors,omitempty"`
}

// Run runs every scenario for every size and returns what was measured.
// A scenario that fails is recorded in Report.Errors and the run goes on.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	r := &Report{
		Started:    time.Now(),
		Host:       fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()),
		Mode:       opts.Mode,
		Window:     opts.Window,
		WideWindow: opts.WideWindow,
		Repeat:     opts.Repeat,
	}
	defer r.compare()
	for repeat := 1; repeat <= opts.Repeat; repeat++ {
		if err := r.runSizes(ctx, &opts, repeat); err != nil {
			return r, err
		}
	}
	r.Seconds = time.Since(r.Started).Seconds()
	return r, nil
}

func (r *Report) runSizes(ctx context.Context, opts *Options, repeat int) error {
	for i, size := range opts.Sizes {
		s := &sizeRun{
			ctx:           ctx,
			opts:          opts,
			size:          size,
			repeat:        repeat,
			messages:      opts.Messages[i],
			appends:       opts.Appends[i],
			appendsAlways: opts.AppendsAlways[i],
			payload:       make([]byte, size),
			report:        r,
		}
		rand.Read(s.payload)
		fmt.Fprintf(opts.Progress, "== %s (run %d of %d): %d messages, %d acked, %d acked under sync always\n", sizeName(size), repeat, opts.Repeat, s.messages, s.appends, s.appendsAlways)
		for _, part := range []struct {
			name string
			fn   func(*Env)
		}{
			{"ceiling", s.ceiling},
			{"voik", s.voik},
			{"jetstream", s.jetstream},
			{"always", s.jetstreamAlways},
			{"flood", s.flood},
			// The group part's scenarios, each on a cluster of its own,
			// so that one that fails leaves the others their figures.
			{"group", s.groupBatch},
			{"group", s.groupAlways},
			{"group", s.groupFailover},
			{"groups", s.groupsSplit},
		} {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if len(opts.Parts) > 0 && !slices.Contains(opts.Parts, part.name) {
				continue
			}
			e := newEnv(fmt.Sprintf("%s %s", sizeName(size), part.name), opts.Progress)
			if err := e.run(part.fn); err != nil {
				r.Errors = append(r.Errors, err.Error())
			}
		}
	}
	return nil
}

// sizeRun is the scenarios of one message size.
type sizeRun struct {
	ctx           context.Context
	opts          *Options
	size          int
	repeat        int
	messages      int
	appends       int
	appendsAlways int
	payload       []byte
	report        *Report
}

// add records a figure and prints it as progress.
func (s *sizeRun) add(f Figure) {
	f.Repeat = s.repeat
	s.report.Runs = append(s.report.Runs, f)
	line := fmt.Sprintf("  %-30s %9d done %7d lost %10.0f msg/s %8.1f MB/s", f.Scenario, f.Done, f.Lost, f.MsgPerS, f.MBPerS)
	if f.P50us > 0 {
		line += fmt.Sprintf("  p50 %s p99 %s", micros(f.P50us), micros(f.P99us))
	}
	if f.Err != "" {
		line += "  ERROR " + f.Err
	}
	fmt.Fprintln(s.opts.Progress, line)
}

func sizeName(size int) string {
	switch {
	case size >= 1<<20 && size%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", size>>20)
	case size >= 1<<10 && size%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", size>>10)
	}
	return fmt.Sprintf("%dB", size)
}

func micros(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2fms", us/1000)
	}
	return fmt.Sprintf("%.0fµs", us)
}
