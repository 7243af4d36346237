package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/messages"
	"github.com/voik/voik/natsauth"
	"github.com/voik/voik/sidecar"
	"github.com/voik/voik/sidecar/lease"
)

func runClient(command string, o *options, positional []string, stdout, stderr io.Writer) int {
	cfg, err := config.LoadClient(o.config, checkClientSettings)
	if err != nil {
		fmt.Fprintf(stderr, "voik %s: %v\n", command, err)
		return exitUsage
	}
	url := cfg.NatsURL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	opts, err := natsauth.Options(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "voik %s: %v\n", command, err)
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
	// Buffered; fetch flushes after each page, so that --follow shows
	// records as they arrive.
	buf := bufio.NewWriter(stdout)
	out := &printer{w: buf, json: json.NewEncoder(buf), data: o.data}
	switch command {
	case "fetch":
		err = cliFetch(ctx, api, out, positional[0], o)
	case "info":
		var reply *messages.InfoReply
		if reply, err = api.Info(ctx, positional[0]); err == nil {
			err = out.json.Encode(reply)
		}
	case "subjects":
		err = cliSubjects(ctx, api, out, positional)
	case "group":
		err = cliGroup(ctx, api, out, cfg.Group, positional)
	case "groups":
		err = cliGroups(ctx, api, out)
	case "resize":
		err = cliResize(ctx, nc, cfg.Group, positional[0], out)
	case "retire":
		err = cliRetire(nc, cfg, positional[0], out)
	case "force-lead":
		err = cliForceLead(ctx, nc, cfg, o.yes, stderr, out)
	case "replay":
		if o.waitEnd {
			err = cliReplayWait(ctx, api, out, positional[0], o)
		} else {
			err = cliReplay(ctx, api, out, positional[0], o)
		}
	}
	if ferr := buf.Flush(); err == nil {
		err = ferr
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "voik %s: %s\n", command, describe(err))
		return exitFailed
	}
	return exitOK
}

// cliGroup prints the GROUP reply of the group named, or of VOIK_GROUP.
func cliGroup(ctx context.Context, api *client.Client, out *printer, configured string, positional []string) error {
	name := configured
	if len(positional) > 0 {
		name = positional[0]
	}
	if name == "" {
		return errors.New("name a GROUP, or set VOIK_GROUP")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := api.Group(ctx, name)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no leader of group %s answered (none elected yet, or no quorum): %w", name, err)
		}
		return err
	}
	return out.json.Encode(reply)
}

// groupsLine is a line of `voik groups`: a group or standalone voik, with
// its members and their lag when it is a group that has a leader.
type groupsLine struct {
	messages.GroupsReply
	Epoch   uint64                 `json:"epoch,omitempty"`
	Members []messages.GroupMember `json:"members,omitempty"`
}

// cliGroups prints every group and standalone voik on the prefix, one JSON
// line each: GROUPS, then GROUP of each group that has a leader.
func cliGroups(ctx context.Context, api *client.Client, out *printer) error {
	replies, err := api.Groups(ctx, 0)
	if err != nil {
		return err
	}
	if len(replies) == 0 {
		return errors.New("no voik answered on this API prefix")
	}
	for _, r := range replies {
		line := groupsLine{GroupsReply: r}
		if r.Group != "" && r.Leader != "" {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			g, err := api.Group(gctx, r.Group)
			cancel()
			if err == nil {
				line.Epoch, line.Members = g.Epoch, g.Members
			}
		}
		if err := out.json.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// cliResize stores a new size for the group (sidecar.ResizeGroup).
func cliResize(ctx context.Context, nc *nats.Conn, name, replicas string, out *printer) error {
	if name == "" {
		return errors.New("VOIK_GROUP is not set: name the group to resize")
	}
	n, _ := strconv.Atoi(replicas) // checked by replicasArg
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	before, err := sidecar.ResizeGroup(ctx, nc, name, n)
	if err != nil {
		return err
	}
	return out.json.Encode(map[string]any{"group": name, "replicas_before": before, "replicas": n})
}

// cliRetire asks the group's leader to retire a member for good.
func cliRetire(nc *nats.Conn, cfg *config.Config, instance string, out *printer) error {
	if cfg.Group == "" {
		return errors.New("VOIK_GROUP is not set: name the member's group")
	}
	reply, err := sidecar.RetireMember(nc, cfg.Group, instance, 3*cfg.Lease)
	if err != nil {
		return err
	}
	return out.json.Encode(reply)
}

// cliForceLead makes the member of this data dir the only one in sync
// (lease.ForceLead), after saying what that costs.
func cliForceLead(ctx context.Context, nc *nats.Conn, cfg *config.Config, yes bool, stderr io.Writer, out *printer) error {
	if cfg.Group == "" {
		return errors.New("VOIK_GROUP is not set: run it with the member's settings, where its data dir is")
	}
	instance := cfg.Instance
	if instance == "" {
		instance, _ = os.Hostname()
	}
	id, err := os.ReadFile(filepath.Join(cfg.DataDir, ".group", "id"))
	if err != nil {
		return fmt.Errorf("no group member's data dir at VOIK_DATA_DIR %s: %w", cfg.DataDir, err)
	}
	fmt.Fprintf(stderr, "voik force-lead: WARNING: %s becomes the only member in sync of group %s; records committed only on the other members are lost\n", instance, cfg.Group)
	if !yes {
		return errors.New("not done: add --yes to confirm")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := lease.NewKV(ctx, nc, cfg.Group, 0)
	if err != nil {
		return err
	}
	old, err := lease.ForceLead(ctx, kv, lease.Member{Instance: instance, DataDirID: strings.TrimSpace(string(id))})
	if err != nil {
		return err
	}
	return out.json.Encode(map[string]any{"group": cfg.Group, "forced": instance, "replaced": old})
}

// describe is err for a line that already starts "voik COMMAND: ": the
// client's errors start "voik: " too, to name their package to a program
// that uses it; said once is enough.
func describe(err error) string {
	return strings.TrimPrefix(err.Error(), "voik: ")
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

// printer writes the client commands' output: JSON lines, or with data
// set (fetch --data) each record's data alone.
type printer struct {
	w    *bufio.Writer
	json *json.Encoder
	data bool
}

func (p *printer) record(subject string, r messages.Record) error {
	if p.data {
		p.w.Write(r.Data)
		return p.w.WriteByte('\n')
	}
	line := jsonRecord{Subject: subject, Offset: r.Offset, Timestamp: r.Timestamp,
		Time: time.Unix(0, r.Timestamp).UTC().Format(time.RFC3339Nano), Headers: r.Headers}
	if utf8.Valid(r.Data) {
		text := string(r.Data)
		line.Data = &text
	} else {
		encoded := base64.StdEncoding.EncodeToString(r.Data)
		line.DataBase64 = &encoded
	}
	return p.json.Encode(line)
}

func cliFetch(ctx context.Context, api *client.Client, out *printer, subject string, o *options) error {
	req := messages.FetchRequest{Offset: o.startOffset, StartTime: o.startTime}
	if o.wait > 0 {
		req.WaitMs = uint64((o.wait + time.Millisecond - 1) / time.Millisecond)
	} else if o.follow {
		req.WaitMs = 30000
	}
	count := o.count
	if o.last.set {
		info, err := api.Info(ctx, subject)
		var apiErr *messages.Error
		switch {
		case errors.As(err, &apiErr) && apiErr.Code == messages.CodeNotFound && req.WaitMs > 0:
			// No log yet: the long poll waits for its first record.
		case err != nil:
			return err
		default:
			start := info.FirstOffset
			if info.EndOffset-start > o.last.n {
				start = info.EndOffset - o.last.n
			}
			req.Offset = &start
			// The last N as INFO counted them, not what arrived since,
			// unless asked to wait for more.
			if req.WaitMs == 0 && (count == 0 || count > info.EndOffset-start) {
				count = info.EndOffset - start
				if count == 0 {
					return nil
				}
			}
		}
	}
	printed := uint64(0)
	for {
		if count > 0 {
			req.MaxMessages = min(count-printed, messages.MaxMessagesCap)
		}
		reply, err := api.Fetch(ctx, subject, req)
		if err != nil {
			return err
		}
		for _, r := range reply.Records {
			if err := out.record(subject, r); err != nil {
				return err
			}
			printed++
		}
		if err := out.w.Flush(); err != nil {
			return err
		}
		if count > 0 && printed >= count {
			return nil
		}
		if !o.follow && reply.NextOffset >= reply.EndOffset {
			return nil
		}
		next := reply.NextOffset
		req.Offset, req.StartTime = &next, 0
	}
}

func cliSubjects(ctx context.Context, api *client.Client, out *printer, positional []string) error {
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
			if err := out.json.Encode(s); err != nil {
				return err
			}
		}
		req.Offset += uint64(len(reply.Subjects))
		if len(reply.Subjects) == 0 || req.Offset >= reply.Total {
			return nil
		}
	}
}

func cliReplay(ctx context.Context, api *client.Client, out *printer, subject string, o *options) error {
	req := messages.ReplayRequest{Deliver: o.deliver, MaxMessages: o.count, Offset: o.startOffset, StartTime: o.startTime}
	reply, err := api.ReplayTo(ctx, subject, req)
	if err != nil {
		return err
	}
	return out.json.Encode(reply)
}

// replaySummary is replay --wait's last line.
type replaySummary struct {
	Subject     string `json:"subject"`
	Deliver     string `json:"deliver"`
	FirstOffset uint64 `json:"first_offset"`
	EndOffset   uint64 `json:"end_offset"`
	Delivered   uint64 `json:"delivered"`
	TooLarge    uint64 `json:"too_large,omitempty"`
}

// errIdle cancels a replay --wait that nothing arrived for within
// --timeout.
var errIdle = errors.New("idle")

// cliReplayWait is replay --wait: subscribe to the deliver subject (the
// client does, before it asks), count (and with --print print) the
// records, and return at the end marker with a summary line.
func cliReplayWait(ctx context.Context, api *client.Client, out *printer, subject string, o *options) error {
	req := messages.ReplayRequest{Deliver: o.deliver, MaxMessages: o.count, Offset: o.startOffset, StartTime: o.startTime}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(o.timeout, func() { cancel(errIdle) })
	defer idle.Stop()
	var sum replaySummary
	reply, err := api.Replay(ctx, subject, req, func(r client.ReplayedRecord) error {
		idle.Reset(o.timeout)
		if r.TooLarge {
			sum.TooLarge++
			return nil
		}
		sum.Delivered++
		if !o.print {
			return nil
		}
		return out.record(subject, messages.Record{Offset: r.Offset, Timestamp: r.Timestamp, Headers: r.Headers, Data: r.Data})
	})
	if reply != nil {
		sum.Subject, sum.Deliver, sum.FirstOffset, sum.EndOffset = reply.Subject, reply.Deliver, reply.FirstOffset, reply.EndOffset
	}
	delivered := func() string {
		return fmt.Sprintf("%d of the %d records of [%d, %d) delivered", sum.Delivered+sum.TooLarge, sum.EndOffset-sum.FirstOffset, sum.FirstOffset, sum.EndOffset)
	}
	switch {
	case err == nil:
		return out.json.Encode(sum)
	case errors.Is(context.Cause(ctx), errIdle):
		if reply == nil {
			return fmt.Errorf("no reply to the replay request within %v (--timeout)", o.timeout)
		}
		return fmt.Errorf("nothing arrived on %s for %v (--timeout) while waiting for offset %d; %s", sum.Deliver, o.timeout, sum.FirstOffset+sum.Delivered+sum.TooLarge, delivered())
	case reply != nil:
		return fmt.Errorf("%s; %s", describe(err), delivered())
	}
	return err
}

// checkClientSettings judges the one setting of the client whose rule
// lives in the wire types: the API prefix.
func checkClientSettings(c *config.Config) []error {
	if err := messages.CheckPrefix(c.APIPrefix); err != nil {
		return []error{fmt.Errorf("%s %w", c.Name("VOIK_API_PREFIX"), err)}
	}
	return nil
}
