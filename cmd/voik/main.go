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
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "voik: %v (voik -h lists the commands and settings)\n", err)
		return exitUsage
	}
	name, rest := "serve", flags.Args()
	if len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "voik: unknown command %q (voik -h lists the commands)\n", name)
		return exitUsage
	}
	// The command's own flags, -config among them, may come anywhere
	// after it; its arguments are checked before anything connects.
	o, positional, err := c.parse(rest, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "voik %s: %v; see voik %s -h\n", name, err, name)
		return exitUsage
	}
	if o.config == "" {
		o.config = *configPath
	}
	switch name {
	case "serve":
		return serve(o.config, stderr)
	case "help":
		if len(positional) == 1 {
			lookup(positional[0]).help(stdout)
		} else {
			usage(stdout)
		}
		return exitOK
	case "version":
		fmt.Fprintln(stdout, "voik", version)
		return exitOK
	}
	return runClient(name, o, positional, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `voik: a memory for NATS subjects.

Usage:
  voik [serve]                  run the sidecar in the foreground
  voik fetch SUBJECT [flags]    print a subject's records as JSON lines
                                [--offset N | --since TIME | --last N] [--count N]
                                [--follow] [--wait DURATION] [--data]
  voik info SUBJECT             print a subject's offsets, counts, bytes and times
  voik subjects [FILTER]        print the stored subjects that match FILTER (default >)
  voik replay SUBJECT [flags]   have voik publish a subject's records onto NATS
                                [--deliver SUBJ] [--wait | --print] [--count N]
                                [--offset N | --since TIME] [--timeout DURATION]
  voik group [GROUP]            print a replication group's leader, epoch and members
  voik groups                   print every group and standalone voik on the prefix:
                                filters, leader, members and lag
  voik resize REPLICAS          store a new size of the group VOIK_GROUP names, before
                                rolling its members with the new VOIK_REPLICAS
  voik retire INSTANCE          tell the leader a member is gone for good
  voik force-lead --yes         after losing a group's majority for good: make this
                                member (VOIK_DATA_DIR, VOIK_INSTANCE) the only one in sync
  voik version                  print voik's version
  voik help [COMMAND]           this text, or a command's help

voik COMMAND -h (or --help) shows a command's arguments, flags and examples.
Flags take one dash or two and may come before or after the arguments.
-config FILE, a YAML settings file (VOIK_* variables override it), is
accepted anywhere: before the command (voik -config voik.yaml fetch orders.eu)
or after it (voik fetch orders.eu -config voik.yaml, voik serve -config voik.yaml).

The client commands (fetch, info, subjects, replay, group, groups, resize, retire, force-lead) connect with the same NATS
settings (VOIK_NATS_URL empty: nats://127.0.0.1:4222, where 'make run' listens)
and print JSON lines. `+recordShape+`
voik fetch --data prints the data alone instead, raw, one record a line.

Exit status: 0 success; 1 a runtime failure (NATS unreachable, an error reply,
a replay cut short); 2 a usage or configuration error, before anything connects.

`)
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
