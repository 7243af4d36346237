// Command voik captures NATS subjects into per-subject commit logs and
// serves their history over NATS request/reply. `voik -h` lists every
// setting; `voik help` lists the client commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/voik/voik/config"
	"github.com/voik/voik/sidecar"
)

// version is set at build time (make build).
var version = "dev"

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // voik ran and failed
	exitUsage  = 2 // bad configuration or arguments: nothing started
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is voik with its arguments and output streams; it returns the exit
// status.
func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("voik", flag.ContinueOnError)
	// Help that was asked for goes to stdout (voik -h | less); a bad flag
	// is one line on stderr, like any other usage error.
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	configPath := flags.String("config", "", "YAML settings file; VOIK_* variables override it")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(flags, stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "voik: %v (voik -h lists the commands and settings)\n", err)
		return exitUsage
	}
	command, rest := "serve", flags.Args()
	if len(rest) > 0 {
		command, rest = rest[0], rest[1:]
	}
	switch command {
	case "serve":
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "voik: serve takes no arguments, got %q\n", rest)
			return exitUsage
		}
		return serve(*configPath, stderr)
	case "help":
		usage(flags, stdout)
		return exitOK
	case "version":
		fmt.Fprintln(stdout, "voik", version)
		return exitOK
	case "fetch", "info", "subjects", "replay":
		return runClient(command, rest, *configPath, stdout, stderr)
	}
	fmt.Fprintf(stderr, "voik: unknown command %q (try voik -h)\n", command)
	return exitUsage
}

func usage(flags *flag.FlagSet, w io.Writer) {
	flags.SetOutput(w)
	fmt.Fprint(w, `voik: a memory for NATS subjects.

Usage:
  voik [-config FILE] [serve]        run the sidecar in the foreground
  voik [-config FILE] fetch SUBJECT [--offset N | --since TIME] [--count N] [--follow]
  voik [-config FILE] info SUBJECT
  voik [-config FILE] subjects [FILTER]
  voik [-config FILE] replay SUBJECT --deliver SUBJ [--offset N | --since TIME] [--count N]
  voik version

Client commands print JSON lines and connect with the same NATS settings
(VOIK_NATS_URL empty: nats://127.0.0.1:4222, where 'make run' listens).

Flags:
`)
	flags.PrintDefaults()
	fmt.Fprintln(w)
	config.Usage(w)
}

func serve(configPath string, stderr io.Writer) int {
	cfg, err := config.Load(configPath, sidecar.CheckSettings)
	if err != nil {
		fmt.Fprintf(stderr, "voik: %v\n", err)
		return exitUsage
	}
	logger := cfg.Logger(stderr).With("version", version)
	gc := tuneGC(os.Getenv, "/sys/fs/cgroup", "/proc/self/cgroup")
	s, err := sidecar.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "voik: %v\n", err)
		return exitUsage
	}
	if gc.LimitFrom != "GOMEMLIMIT" {
		s.GovernMemoryLimit(gc.MemoryLimit)
	}
	logger.Info("garbage collector", "gogc", gc.GOGC, "memory_ceiling", gc.MemoryLimit, "memory_ceiling_from", gc.LimitFrom)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "voik: %v\n", err)
		var configErr *sidecar.ConfigError
		if errors.As(err, &configErr) {
			return exitUsage
		}
		return exitFailed
	}
	return exitOK
}
