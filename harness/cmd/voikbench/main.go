// Command voikbench measures voik against a counting NATS subscriber and
// JetStream on this machine, in one run, and prints a table (see package
// harness/bench for what it runs). `make bench` runs it.
//
//	voikbench [-quick] [-json FILE] [-voik BIN] [-sizes 128,1024,16384]
//	          [-messages N,N,N] [-appends N,N,N] [-always N,N,N]
//	          [-window N] [-wide-window N] [-fetch-one N] [-repeat N]
//	          [-parts ceiling,voik,jetstream,always,flood,group,groups]
//	          [-inprocess -cpuprofile FILE | -inprocess -profile DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/voik/voik/harness"
	"github.com/voik/voik/harness/bench"
)

func main() {
	bench.RunChildIfAsked() // the ceiling's children are this binary again
	os.Exit(run())
}

// run runs voikbench as its flags say and returns the exit status: 2 for
// flags or options that do not make a run, 1 for a run that failed or
// could not be set up or written, 0 otherwise.
func run() int {
	f := parseFlags()
	opts, err := f.options()
	if err != nil {
		return fail(2, err)
	}
	if !opts.InProcess {
		bin, cleanup, err := voikBinary(f.voikBin)
		if err != nil {
			return fail(1, err)
		}
		defer cleanup()
		opts.VoikBin = bin
	}
	stopProfile, code := f.profile(&opts)
	if code != 0 {
		return code
	}
	defer stopProfile()
	return runAndReport(opts, f.jsonPath)
}

// fail prints err as voikbench's and returns code, the exit status it
// ends the run with.
func fail(code int, err error) int {
	fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
	return code
}

// flags is voikbench's command line, as given.
type flags struct {
	quick                            bool
	jsonPath, voikBin                string
	sizes, messages, appends, always string // comma-separated lists: sizes, then counts per size
	window, wideWindow               int
	repeat, fetchOne                 int
	inProcess                        bool
	cpuProfile, profileDir           string
	groupProfileDir                  string
	voikSync, parts                  string
}

// parseFlags reads the command line; package flag ends the program on a
// bad one.
func parseFlags() flags {
	var f flags
	flag.BoolVar(&f.quick, "quick", false, "about a minute instead of about 3")
	flag.StringVar(&f.jsonPath, "json", "", "also write the figures to this file as JSON")
	flag.StringVar(&f.voikBin, "voik", "", "voik binary to run as the child (default: go build it into a temp dir)")
	flag.StringVar(&f.sizes, "sizes", "", "message sizes in bytes, comma-separated (default 128,1024,16384)")
	flag.StringVar(&f.messages, "messages", "", "capture burst per size, comma-separated")
	flag.StringVar(&f.appends, "appends", "", "acknowledged appends per size, comma-separated")
	flag.StringVar(&f.always, "always", "", "JetStream sync-always acknowledged publishes per size, comma-separated")
	flag.IntVar(&f.window, "window", 0, "acknowledged messages in flight (default 256)")
	flag.IntVar(&f.wideWindow, "wide-window", 0, "run the acknowledged scenarios again with this many in flight (default 4000, nats.go's default for JetStream async publishes; -1: don't)")
	flag.IntVar(&f.repeat, "repeat", 0, "run everything this many times, keep the best rate and worst loss (default 3, quick 1)")
	flag.IntVar(&f.fetchOne, "fetch-one", 0, "single-record reads timed per size")
	flag.BoolVar(&f.inProcess, "inprocess", false, "run voik inside this process (for -cpuprofile; no resource figures)")
	flag.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to FILE")
	flag.StringVar(&f.profileDir, "profile", "", "with -inprocess: write a CPU profile of each voik phase to DIR/SIZE-PHASE.pprof")
	flag.StringVar(&f.groupProfileDir, "groupprofile", "", "write CPU profiles of the first 3 s of the group part's capture and acked scenarios to DIR: each member's (VOIK_PPROF) and this process's (the NATS servers, the publisher); not with -cpuprofile")
	flag.StringVar(&f.voikSync, "voik-sync", "batch", "VOIK_SYNC of the voik under test: always, batch, interval or none")
	flag.StringVar(&f.parts, "parts", "", "run only these of ceiling,voik,jetstream,always,flood,group,groups (comma-separated; flood: voik's capture of the -messages burst without and under a FETCH flood; group: a group of three voiks beside a three-server NATS cluster against JetStream R3 streams on it, at 1KiB or the size nearest: capture, replication lag, acked appends, 20 kills of the leader; groups: the same burst split over two subjects, into one group that takes both, then into two groups that take one each, with the machine's CPU saturation)")
	flag.Usage = usage
	flag.Parse()
	return f
}

// usage prints what voikbench does and each flag's name and usage. The
// usages give the defaults that matter, bench.Defaults' (which -quick
// changes), not the flags' own zero values.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintln(out, "usage: voikbench [flags]: voik against a counting NATS subscriber and JetStream")
	flag.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(out, "  -%s\n    \t%s\n", f.Name, f.Usage)
	})
}

// options are the bench.Options of the flags: the defaults of the mode
// (full or quick), with what the flags set over them. The mode is named
// after what they changed, so that a report says it is not the standard
// run.
func (f flags) options() (bench.Options, error) {
	opts := bench.Defaults(f.quick)
	custom, err := f.setCounts(&opts)
	if err != nil {
		return opts, err
	}
	if f.window > 0 {
		opts.Window, custom = f.window, true
	}
	if f.wideWindow != 0 {
		opts.WideWindow, custom = max(f.wideWindow, 0), true
	}
	if f.repeat > 0 {
		opts.Repeat, custom = f.repeat, true
	}
	if f.fetchOne > 0 {
		opts.FetchOne, custom = f.fetchOne, true
	}
	if custom {
		opts.Mode += "+custom"
	}
	opts.InProcess = f.inProcess
	opts.VoikSync = f.voikSync
	if f.voikSync != "batch" {
		opts.Mode += "+sync-" + f.voikSync
	}
	if f.parts != "" {
		opts.Parts = strings.Split(f.parts, ",")
		opts.Mode += "+parts"
	}
	opts.Progress = os.Stderr
	return opts, nil
}

// setCounts sets the sizes and the per-size counts the flags give and
// says whether they gave any.
func (f flags) setCounts(opts *bench.Options) (custom bool, err error) {
	for _, list := range []struct {
		flag string
		into *[]int
	}{{f.sizes, &opts.Sizes}, {f.messages, &opts.Messages}, {f.appends, &opts.Appends}, {f.always, &opts.AppendsAlways}} {
		if list.flag == "" {
			continue
		}
		values, err := ints(list.flag)
		if err != nil {
			return custom, err
		}
		*list.into, custom = values, true
	}
	if f.sizes != "" {
		// Counts given for fewer sizes repeat their last value.
		for _, counts := range []*[]int{&opts.Messages, &opts.Appends, &opts.AppendsAlways} {
			*counts = fit(*counts, len(opts.Sizes))
		}
	}
	return custom, nil
}

// profile starts the CPU profiles the flags ask for: of each voik phase
// (through opts.PhaseProfile), which needs voik in this process to
// profile it, or of this whole process until stop is called. A profile
// that cannot be set up returns the exit status instead, 0 otherwise.
func (f flags) profile(opts *bench.Options) (stop func(), code int) {
	if f.profileDir != "" {
		if !opts.InProcess || f.cpuProfile != "" {
			return nil, fail(2, errors.New("-profile needs -inprocess and no -cpuprofile"))
		}
		if err := os.MkdirAll(f.profileDir, 0o755); err != nil {
			return nil, fail(1, err)
		}
		opts.PhaseProfile = phaseProfiles(f.profileDir)
	}
	if f.groupProfileDir != "" {
		if f.cpuProfile != "" {
			return nil, fail(2, errors.New("-groupprofile profiles this process too: not with -cpuprofile"))
		}
		if err := os.MkdirAll(f.groupProfileDir, 0o755); err != nil {
			return nil, fail(1, err)
		}
		opts.GroupProfileDir = f.groupProfileDir
	}
	if f.cpuProfile == "" {
		return func() {}, 0
	}
	file, err := os.Create(f.cpuProfile)
	if err != nil {
		return nil, fail(1, err)
	}
	pprof.StartCPUProfile(file)
	return func() { pprof.StopCPUProfile(); file.Close() }, 0
}

// phaseProfiles is a bench.Options.PhaseProfile that writes each phase's
// CPU profile to dir/SIZE-PHASE.pprof. A profile it cannot start is
// skipped rather than failing a run already under way.
func phaseProfiles(dir string) func(size int, phase string) func() {
	return func(size int, phase string) func() {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d-%s.pprof", size, phase)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
			return func() {}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return func() {}
		}
		return func() { pprof.StopCPUProfile(); f.Close() }
	}
}

// runAndReport runs the benchmark until it is done or interrupted
// (SIGINT, SIGTERM), prints the report, also of a run that ended early,
// and writes its JSON if asked to; it returns the exit status.
func runAndReport(opts bench.Options, jsonPath string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	report, err := bench.Run(ctx, opts)
	if err != nil && report == nil {
		return fail(2, err) // the options did not make a run
	}
	fmt.Println()
	report.Write(os.Stdout)
	if jsonPath != "" {
		if err := report.WriteJSON(jsonPath); err != nil {
			return fail(1, err)
		}
		fmt.Fprintf(os.Stderr, "figures written to %s\n", jsonPath)
	}
	if err != nil || len(report.Errors) > 0 {
		return 1
	}
	return 0
}

// voikBinary returns bin, or builds voik into a temp dir.
func voikBinary(bin string) (string, func(), error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", nil, err
		}
		abs, err := filepath.Abs(bin)
		return abs, func() {}, err
	}
	dir, err := os.MkdirTemp("", "voikbench-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	start := time.Now()
	if bin, err = harness.BuildVoikInto(dir); err != nil {
		cleanup()
		return "", nil, err
	}
	fmt.Fprintf(os.Stderr, "built voik in %v\n", time.Since(start).Round(time.Millisecond))
	return bin, cleanup, nil
}

func ints(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(s, "_", "")))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func fit(counts []int, n int) []int {
	for len(counts) < n {
		counts = append(counts, counts[len(counts)-1])
	}
	return counts[:n]
}
