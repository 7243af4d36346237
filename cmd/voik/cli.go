package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/messages"
	"github.com/voik/voik/natsauth"
)

// clientFlags are the flags the client commands share, checked before
// anything connects: a bad one is a usage error (exit 2), not a failure.
type clientFlags struct {
	offset  string
	since   string
	count   uint64
	follow  bool
	deliver string

	startOffset *uint64 // --offset; nil: the first held
	startTime   int64   // --since as Unix ns; 0: not given
}

// parseClientFlags reads a client command's flags before or after its
// arguments. -h prints the command's flags to help and is flag.ErrHelp;
// any other error is for the caller to print in one line.
func parseClientFlags(command string, args []string, help io.Writer) (*clientFlags, []string, error) {
	f := &clientFlags{}
	flags := flag.NewFlagSet("voik "+command, flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	switch command {
	case "fetch", "replay":
		flags.StringVar(&f.offset, "offset", "", "first offset (default: the first held)")
		flags.StringVar(&f.since, "since", "", "start at this time: RFC 3339, or a duration ago such as 10m")
		flags.Uint64Var(&f.count, "count", 0, "at most this many records (default: fetch 100 per page and stop at the end; replay all)")
	}
	if command == "fetch" {
		flags.BoolVar(&f.follow, "follow", false, "keep waiting for new records")
	}
	if command == "replay" {
		flags.StringVar(&f.deliver, "deliver", "", "subject to publish the records to (required)")
	}
	// Flags may come before or after the positional arguments.
	var positional []string
	for {
		if err := flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(help, "Usage of voik %s:\n", command)
				flags.SetOutput(help)
				flags.PrintDefaults()
			}
			return nil, nil, err
		}
		args = flags.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if f.offset != "" && f.since != "" {
		return nil, nil, errors.New("--offset and --since are alternatives")
	}
	if command == "replay" && f.deliver == "" {
		return nil, nil, errors.New("--deliver is required")
	}
	var err error
	if f.startOffset, err = parseOffset(f.offset); err != nil {
		return nil, nil, err
	}
	if f.startTime, err = parseSince(f.since, time.Now()); err != nil {
		return nil, nil, err
	}
	return f, positional, nil
}

// parseSince reads --since: RFC 3339, or a duration before now.
func parseSince(since string, now time.Time) (int64, error) {
	if since == "" {
		return 0, nil
	}
	if d, err := time.ParseDuration(since); err == nil {
		return now.Add(-d).UnixNano(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, since)
	if err != nil {
		return 0, fmt.Errorf("--since %q: want RFC 3339 (2026-11-25T10:00:00Z) or a duration (10m)", since)
	}
	return t.UnixNano(), nil
}

// parseOffset reads --offset; empty is nil.
func parseOffset(offset string) (*uint64, error) {
	if offset == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(offset, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("--offset %q is not an offset", offset)
	}
	return &n, nil
}

func runClient(command string, args []string, configPath string, stdout, stderr io.Writer) int {
	f, positional, err := parseClientFlags(command, args, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "voik %s: %v\n", command, err)
		return exitUsage
	}
	wantArgs := 1
	if command == "subjects" {
		wantArgs = min(len(positional), 1)
	}
	if len(positional) != wantArgs {
		fmt.Fprintf(stderr, "voik %s: want %d argument(s), got %d (try voik -h)\n", command, wantArgs, len(positional))
		return exitUsage
	}
	cfg, err := config.LoadClient(configPath, checkClientSettings)
	if err != nil {
		fmt.Fprintf(stderr, "voik: %v\n", err)
		return exitUsage
	}
	url := cfg.NatsURL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	opts, err := natsauth.Options(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "voik: %v\n", err)
		return exitUsage
	}
	nc, err := nats.Connect(url, append(opts, nats.Name(cfg.NatsName+"-cli"))...)
	if err != nil {
		fmt.Fprintf(stderr, "voik %s: cannot connect to NATS at %s: %v\n", command, url, err)
		return exitFailed
	}
	defer nc.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	api := client.New(nc, cfg.APIPrefix)
	out := json.NewEncoder(stdout)
	switch command {
	case "fetch":
		err = cliFetch(ctx, api, out, positional[0], f)
	case "info":
		var reply *messages.InfoReply
		if reply, err = api.Info(ctx, positional[0]); err == nil {
			err = out.Encode(reply)
		}
	case "subjects":
		err = cliSubjects(ctx, api, out, positional)
	case "replay":
		err = cliReplay(ctx, api, out, positional[0], f)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "voik %s: %v\n", command, err)
		return exitFailed
	}
	return exitOK
}

// jsonRecord is how the CLI prints a record: data as text when it is
// valid UTF-8, else as base64 in data_base64.
type jsonRecord struct {
	Subject    string              `json:"subject"`
	Offset     uint64              `json:"offset"`
	Timestamp  int64               `json:"ts"`
	Time       string              `json:"time"`
	Headers    map[string][]string `json:"headers,omitempty"`
	Data       *string             `json:"data,omitempty"`
	DataBase64 *string             `json:"data_base64,omitempty"`
}

func printRecord(out *json.Encoder, subject string, r messages.Record) error {
	line := jsonRecord{Subject: subject, Offset: r.Offset, Timestamp: r.Timestamp,
		Time: time.Unix(0, r.Timestamp).UTC().Format(time.RFC3339Nano), Headers: r.Headers}
	if utf8.Valid(r.Data) {
		text := string(r.Data)
		line.Data = &text
	} else {
		encoded := base64.StdEncoding.EncodeToString(r.Data)
		line.DataBase64 = &encoded
	}
	return out.Encode(line)
}

func cliFetch(ctx context.Context, api *client.Client, out *json.Encoder, subject string, f *clientFlags) error {
	req := messages.FetchRequest{Offset: f.startOffset, StartTime: f.startTime}
	printed := uint64(0)
	for {
		if f.count > 0 {
			req.MaxMessages = min(f.count-printed, messages.MaxMessagesCap)
		}
		if f.follow {
			req.WaitMs = 30000
		}
		reply, err := api.Fetch(ctx, subject, req)
		if err != nil {
			return err
		}
		for _, r := range reply.Records {
			if err := printRecord(out, subject, r); err != nil {
				return err
			}
			printed++
		}
		if f.count > 0 && printed >= f.count {
			return nil
		}
		if !f.follow && reply.NextOffset >= reply.EndOffset {
			return nil
		}
		next := reply.NextOffset
		req.Offset, req.StartTime = &next, 0
	}
}

func cliSubjects(ctx context.Context, api *client.Client, out *json.Encoder, positional []string) error {
	req := messages.SubjectsRequest{}
	if len(positional) > 0 {
		req.Filter = positional[0]
	}
	for {
		reply, err := api.Subjects(ctx, req)
		if err != nil {
			return err
		}
		for _, s := range reply.Subjects {
			if err := out.Encode(s); err != nil {
				return err
			}
		}
		req.Offset += uint64(len(reply.Subjects))
		if len(reply.Subjects) == 0 || req.Offset >= reply.Total {
			return nil
		}
	}
}

func cliReplay(ctx context.Context, api *client.Client, out *json.Encoder, subject string, f *clientFlags) error {
	req := messages.ReplayRequest{Deliver: f.deliver, MaxMessages: f.count, Offset: f.startOffset, StartTime: f.startTime}
	reply, err := api.ReplayTo(ctx, subject, req)
	if err != nil {
		return err
	}
	return out.Encode(reply)
}

// checkClientSettings judges the one setting of the client whose rule
// lives in the wire types: the API prefix.
func checkClientSettings(c *config.Config) []error {
	if err := messages.CheckPrefix(c.APIPrefix); err != nil {
		return []error{fmt.Errorf("VOIK_API_PREFIX %w", err)}
	}
	return nil
}
