// Command voikbench measures voik against a counting NATS subscriber and
// JetStream on this machine, in one run, and prints a table (see package
// harness/bench for what it runs). `make bench` runs it.
//
//	voikbench [-quick] [-json FILE] [-voik BIN] [-sizes 128,1024,16384]
//	          [-messages N,N,N] [-appends N,N,N] [-always N,N,N]
//	          [-window N] [-wide-window N] [-fetch-one N] [-repeat N]
//	          [-parts ceiling,voik,jetstream,always,flood]
//	          [-inprocess -cpuprofile FILE | -inprocess -profile DIR]
package main

import (
	"context"
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

func run() int {
	quick := flag.Bool("quick", false, "about a minute instead of about 3")
	jsonPath := flag.String("json", "", "also write the figures to this file as JSON")
	voikBin := flag.String("voik", "", "voik binary to run as the child (default: go build it into a temp dir)")
	sizes := flag.String("sizes", "", "message sizes in bytes, comma-separated (default 128,1024,16384)")
	msgs := flag.String("messages", "", "capture burst per size, comma-separated")
	appends := flag.String("appends", "", "acknowledged appends per size, comma-separated")
	always := flag.String("always", "", "JetStream sync-always acknowledged publishes per size, comma-separated")
	window := flag.Int("window", 0, "acknowledged messages in flight (default 256)")
	wideWindow := flag.Int("wide-window", 0, "run the acknowledged scenarios again with this many in flight (default 4000, nats.go's default for JetStream async publishes; -1: don't)")
	repeat := flag.Int("repeat", 0, "run everything this many times, keep the best rate and worst loss (default 3, quick 1)")
	fetchOne := flag.Int("fetch-one", 0, "single-record reads timed per size")
	inProcess := flag.Bool("inprocess", false, "run voik inside this process (for -cpuprofile; no resource figures)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	profileDir := flag.String("profile", "", "with -inprocess: write a CPU profile of each voik phase to DIR/SIZE-PHASE.pprof")
	voikSync := flag.String("voik-sync", "batch", "VOIK_SYNC of the voik under test: always, batch, interval or none")
	parts := flag.String("parts", "", "run only these of ceiling,voik,jetstream,always,flood (comma-separated; flood: voik's capture of the -messages burst without and under a FETCH flood)")
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprintln(out, "usage: voikbench [flags]: voik against a counting NATS subscriber and JetStream")
		flag.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  -%s\n    \t%s\n", f.Name, f.Usage)
		})
	}
	flag.Parse()

	opts := bench.Defaults(*quick)
	custom := false
	for _, list := range []struct {
		flag string
		into *[]int
	}{{*sizes, &opts.Sizes}, {*msgs, &opts.Messages}, {*appends, &opts.Appends}, {*always, &opts.AppendsAlways}} {
		if list.flag == "" {
			continue
		}
		values, err := ints(list.flag)
		if err != nil {
			fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
			return 2
		}
		*list.into, custom = values, true
	}
	if *sizes != "" {
		// Counts given for fewer sizes repeat their last value.
		for _, counts := range []*[]int{&opts.Messages, &opts.Appends, &opts.AppendsAlways} {
			*counts = fit(*counts, len(opts.Sizes))
		}
	}
	if *window > 0 {
		opts.Window, custom = *window, true
	}
	if *wideWindow != 0 {
		opts.WideWindow, custom = max(*wideWindow, 0), true
	}
	if *repeat > 0 {
		opts.Repeat, custom = *repeat, true
	}
	if *fetchOne > 0 {
		opts.FetchOne, custom = *fetchOne, true
	}
	if custom {
		opts.Mode += "+custom"
	}
	opts.InProcess = *inProcess
	opts.VoikSync = *voikSync
	if *voikSync != "batch" {
		opts.Mode += "+sync-" + *voikSync
	}
	if *parts != "" {
		opts.Parts = strings.Split(*parts, ",")
		opts.Mode += "+parts"
	}
	opts.Progress = os.Stderr

	if !opts.InProcess {
		bin, cleanup, err := voikBinary(*voikBin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
			return 1
		}
		defer cleanup()
		opts.VoikBin = bin
	}
	if *profileDir != "" {
		if !opts.InProcess || *cpuProfile != "" {
			fmt.Fprintln(os.Stderr, "voikbench: -profile needs -inprocess and no -cpuprofile")
			return 2
		}
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
			return 1
		}
		opts.PhaseProfile = func(size int, phase string) func() {
			f, err := os.Create(filepath.Join(*profileDir, fmt.Sprintf("%d-%s.pprof", size, phase)))
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
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
			return 1
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	report, err := bench.Run(ctx, opts)
	if err != nil && report == nil {
		fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
		return 2
	}
	fmt.Println()
	report.Write(os.Stdout)
	if *jsonPath != "" {
		if err := report.WriteJSON(*jsonPath); err != nil {
			fmt.Fprintf(os.Stderr, "voikbench: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "figures written to %s\n", *jsonPath)
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
