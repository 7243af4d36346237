package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/voik/voik/config"
	"github.com/voik/voik/messages"
)

// command is one of voik's subcommands: what it takes, how -h describes
// it, and which flags it reads.
type command struct {
	name     string
	synopsis string // what follows "voik NAME" in its usage line
	about    string // what it does, for -h
	args     string // the Arguments: section of -h, "" for none
	examples []string
	// Positional arguments: argName names one in error messages.
	argName          string
	minArgs, maxArgs int
	flags            func(*flag.FlagSet, *options) // its own flags; every command has -config
	settings         bool                          // -h also lists every setting
	validArg         func(string) error            // checks an argument before anything connects
}

// options are every command's flags, checked before anything connects: a
// bad one is a usage error (exit 2), not a failure.
type options struct {
	config string

	// fetch and replay
	offset string
	since  string
	count  uint64
	// fetch
	last   optionalUint
	follow bool
	wait   time.Duration
	data   bool
	// replay
	deliver   string
	waitEnd   bool
	print     bool
	timeout   time.Duration
	timeoutOn bool // --timeout was given
	// force-lead
	yes bool

	startOffset *uint64 // --offset; nil: the first held
	startTime   int64   // --since as Unix ns; 0: not given
}

// optionalUint is an unsigned flag that knows whether it was given.
type optionalUint struct {
	n   uint64
	set bool
}

func (o *optionalUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.n, 10)
}

func (o *optionalUint) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a whole number, 0 or more")
	}
	o.n, o.set = n, true
	return nil
}

const defaultReplayTimeout = 30 * time.Second

// recordShape is how -h describes a record line, in fetch's and the
// top-level help.
const recordShape = `Each record is one JSON line:
  {"subject":"orders.eu","offset":3,"ts":1795657050823708284,
   "time":"2026-11-26T01:37:30.823708284Z","headers":{"Source":["web"]},"data":"order"}
ts is when voik received the message, in Unix nanoseconds, and time the same
in RFC 3339 (UTC); headers is there only when the message had any. data is
the body as text when it is valid UTF-8; otherwise data is left out and
data_base64 holds the body in standard base64 (RFC 4648, with = padding).`

func subjectArg(s string) error {
	if !messages.ValidSubject(s) {
		return fmt.Errorf("%s is not a valid subject: it needs dot-separated tokens without spaces or wildcards, such as orders.eu", strconv.Quote(s))
	}
	return nil
}

func groupArg(s string) error {
	for _, r := range s {
		if !(r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')) {
			return fmt.Errorf("%s is not a group name: letters, digits, - and _", strconv.Quote(s))
		}
	}
	return nil
}

func replicasArg(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 7 {
		return fmt.Errorf("%s is not a group size: 1 to 7 (odd: an even one tolerates no more failures than the odd one below it)", strconv.Quote(s))
	}
	return nil
}

func filterArg(s string) error {
	if !messages.ValidFilter(s) {
		return fmt.Errorf("%s is not a valid filter: it needs dot-separated tokens without spaces, * for any one token and > for the rest, such as orders.>", strconv.Quote(s))
	}
	return nil
}

func startFlags(f *flag.FlagSet, o *options) {
	f.StringVar(&o.offset, "offset", "", "start at offset `N` (default: the first held)")
	f.StringVar(&o.since, "since", "", "start at the first record at or after `TIME`: RFC 3339 (2026-11-25T10:00:00Z) or a duration ago (10m)")
}

var commands = []*command{
	{
		name:     "serve",
		synopsis: "[-config FILE]",
		about: `Runs voik in the foreground: connects to NATS (or, with VOIK_NATS_URL empty,
starts an embedded NATS server on 127.0.0.1:4222), captures the subjects of
VOIK_SUBJECTS into per-subject logs under VOIK_DATA_DIR and answers the API
under VOIK_API_PREFIX. SIGINT or SIGTERM stops it cleanly, with exit status 0.
serve is what voik does when no command is given.`,
		examples: []string{
			"voik serve",
			"voik serve -config voik.yaml",
			"VOIK_NATS_URL=nats://nats:4222 VOIK_SUBJECTS='orders.>' voik serve",
		},
		settings: true,
	},
	{
		name:     "fetch",
		synopsis: "SUBJECT [--offset N | --since TIME | --last N] [--count N] [--follow] [--wait DURATION] [--data]",
		about: `Prints SUBJECT's records, oldest first, from the first held (or --offset,
--since, --last) to the end of its log, or on and on with --follow.

` + recordShape + `
With --data, each record's data alone is printed, raw bytes followed by a
newline, for a pipe: voik fetch orders.eu --data | jq .`,
		args:    "  SUBJECT   the subject to read: concrete, no wildcards (orders.eu)",
		argName: "SUBJECT", minArgs: 1, maxArgs: 1, validArg: subjectArg,
		flags: func(f *flag.FlagSet, o *options) {
			startFlags(f, o)
			f.Var(&o.last, "last", "start at the last `N` records (from max(first_offset, end_offset-N)); not with --offset or --since")
			f.Uint64Var(&o.count, "count", 0, "print at most `N` records (default: all up to the end of the log; FETCH asks 100 per page)")
			f.BoolVar(&o.follow, "follow", false, "at the end of the log, keep waiting for new records until interrupted (each wait up to --wait, default 30s)")
			f.DurationVar(&o.wait, "wait", 0, "long poll: when no record exists at the start offset yet, wait up to `DURATION` for one (at most 60s; wait_ms)")
			f.BoolVar(&o.data, "data", false, "print only each record's data, raw, followed by a newline")
		},
		examples: []string{
			"voik fetch orders.eu",
			"voik fetch orders.eu --offset 2 --count 1",
			"voik fetch orders.eu --last 10 --follow",
			"voik fetch orders.eu --since 10m --data | jq .",
			"voik fetch orders.eu --offset 4 --wait 30s --count 1",
		},
	},
	{
		name:     "info",
		synopsis: "SUBJECT",
		about: `Prints one JSON line summing up SUBJECT's log:
  {"subject","first_offset","end_offset","messages","bytes","first_ts","last_ts","segments"}
first_offset is the lowest offset held, end_offset the offset of the next
record; first_ts and last_ts are Unix nanoseconds, 0 when no record is held.`,
		args:    "  SUBJECT   the subject: concrete, no wildcards (orders.eu)",
		argName: "SUBJECT", minArgs: 1, maxArgs: 1, validArg: subjectArg,
		examples: []string{"voik info orders.eu"},
	},
	{
		name:     "subjects",
		synopsis: "[FILTER]",
		about: `Prints each stored subject matching FILTER as a JSON string on a line of its
own, in bytewise order.`,
		args:    "  FILTER    a NATS subject filter, wildcards allowed (default >: every subject)",
		argName: "FILTER", minArgs: 0, maxArgs: 1, validArg: filterArg,
		examples: []string{"voik subjects", "voik subjects 'orders.>'", "voik subjects '*.eu'"},
	},
	{
		name:     "replay",
		synopsis: "SUBJECT [--deliver SUBJ] [--wait | --print] [--offset N | --since TIME] [--count N] [--timeout DURATION]",
		about: `Has voik publish SUBJECT's records, in order, onto the NATS subject --deliver,
each with its headers plus Voik-Subject, Voik-Offset and Voik-Timestamp, then
an end marker (Voik-Status: end). --deliver is required without --wait.

Without --wait, prints voik's reply as one JSON line and returns at once:
  {"subject","first_offset","end_offset","deliver"}   (the range [first_offset, end_offset))
With --wait, subscribes to the deliver subject (a fresh inbox when --deliver
is not given) before asking, counts the records as they arrive and returns at
the end marker with one summary JSON line:
  {"subject","deliver","first_offset","end_offset","delivered"}
plus "too_large" when some records were too large to replay. With --print,
each record is printed first as a JSON line, as voik fetch prints it.
A replay voik cuts short (Voik-Status 503: shutting down), a record lost on
the way, or nothing arriving for --timeout is exit status 1, with one line on
standard error saying at which offset.`,
		args:    "  SUBJECT   the subject to replay: concrete, no wildcards (orders.eu)",
		argName: "SUBJECT", minArgs: 1, maxArgs: 1, validArg: subjectArg,
		flags: func(f *flag.FlagSet, o *options) {
			startFlags(f, o)
			f.Uint64Var(&o.count, "count", 0, "replay at most `N` records (default: all, up to the end as voik receives the request)")
			f.StringVar(&o.deliver, "deliver", "", "publish the records to `SUBJ` (required without --wait; with it, default a fresh inbox)")
			f.BoolVar(&o.waitEnd, "wait", false, "wait for the end of the replay, count the records, and print a summary line")
			f.BoolVar(&o.print, "print", false, "print each replayed record as a JSON line, then the summary (implies --wait)")
			f.DurationVar(&o.timeout, "timeout", defaultReplayTimeout, "with --wait: give up (exit 1) when nothing has arrived for `DURATION`")
		},
		examples: []string{
			"voik replay orders.eu --deliver orders.replayed --offset 1",
			"voik replay orders.eu --wait",
			"voik replay orders.eu --deliver orders.replayed --since 1h --wait",
			"voik replay orders.eu --print --count 10",
		},
	},
	{
		name:     "group",
		synopsis: "[GROUP]",
		about: `Asks the leader of GROUP (default VOIK_GROUP) for its members and prints one
JSON line:
  {"group","leader","epoch","replicas","members":[{"instance","role","in_sync","lag"}]}
lag is how many journal records a member does not hold durably yet. With no
leader (an election under way, or no quorum) nobody answers: exit status 1
after 5 seconds.`,
		args:    "  GROUP     the group's name (VOIK_GROUP of its members)",
		argName: "GROUP", minArgs: 0, maxArgs: 1, validArg: groupArg,
		examples: []string{"voik group orders", "VOIK_GROUP=orders voik group"},
	},
	{
		name: "groups",
		about: `Asks every group and standalone voik on the NATS system and API prefix
(GROUPS) who it is, waits a second for the answers, and prints one JSON line
for each, sorted by group:
  {"group","instance","filters","leader","epoch","members":[{"instance","role","in_sync","lag"}]}
group is empty for a standalone voik; leader is empty while a group has
none (epoch and members come from its leader, and are left out then).
Exit status 1 when nobody answers.`,
		examples: []string{"voik groups", "VOIK_API_PREFIX=SHOP.API voik groups"},
	},
	{
		name:     "resize",
		synopsis: "REPLICAS",
		about: `Stores REPLICAS as the size of the group VOIK_GROUP names (its VOIK_REPLICAS),
the first step of growing it (3 to 5) or shrinking it (5 to 3). Members
started with the new VOIK_REPLICAS from then on are accepted (and those with
the old one refused); members already running keep theirs until restarted.
Then roll the members with the new setting, adding or removing members:
docs/groups.md, "Changing a group". Prints the sizes before and after.`,
		args:    "  REPLICAS  the group's new size: 1 to 7, odd by choice (a majority is half plus one)",
		argName: "REPLICAS", minArgs: 1, maxArgs: 1, validArg: replicasArg,
		examples: []string{"VOIK_GROUP=orders voik resize 5"},
	},
	{
		name:     "retire",
		synopsis: "INSTANCE",
		about: `Tells the leader of VOIK_GROUP that member INSTANCE is gone for good (its
node and disk lost, say): it leaves the in-sync set at once, even where that
leaves fewer than a majority (it holds nothing new, so it committed nothing
either; a replacement that catches up restores the majority), and the
group stops listing it. A member that still pulls, or leads, is refused:
stop it first. One that comes back after all rejoins out of sync, as any
member would. Prints the in-sync set after.`,
		args:    "  INSTANCE  the member's VOIK_INSTANCE (its pod name)",
		argName: "INSTANCE", minArgs: 1, maxArgs: 1,
		examples: []string{"VOIK_GROUP=orders voik retire voik-2"},
	},
	{
		name: "force-lead",
		about: `The escape hatch after a group has lost a majority of its members for good
(their disks gone, say): makes THIS member, the one whose VOIK_DATA_DIR,
VOIK_INSTANCE and VOIK_GROUP it is run with (kubectl exec into its pod), the
only member in sync, so that it takes the lead at its next look, in a new
epoch. Records that were committed only on the members left out, and not on
this one, are LOST; members that come back follow this one and drop what it
does not hold. Nothing is committed again (acks wait, then 503) until enough
members have caught up to make a majority of VOIK_REPLICAS with it.
Refuses to run without --yes.`,
		flags: func(f *flag.FlagSet, o *options) {
			f.BoolVar(&o.yes, "yes", false, "confirm: records that only the lost members held are lost for good")
		},
		examples: []string{"voik force-lead --yes"},
	},
	{
		name:     "version",
		about:    "Prints voik's version.",
		examples: []string{"voik version"},
	},
	{
		name:     "help",
		synopsis: "[COMMAND]",
		about:    "Prints voik's usage and every setting, or with COMMAND that command's help (as voik COMMAND -h does).",
		args:     "  COMMAND   serve, fetch, info, subjects, replay, group, groups, resize, retire, force-lead, version or help",
		argName:  "COMMAND", minArgs: 0, maxArgs: 1, // validArg: set by init, as it looks commands up
		examples: []string{"voik help", "voik help fetch"},
	},
}

func init() {
	lookup("help").validArg = func(s string) error {
		if lookup(s) == nil {
			return fmt.Errorf("unknown command %s", strconv.Quote(s))
		}
		return nil
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// flagSet is c's flags, bound to o.
func (c *command) flagSet(o *options) *flag.FlagSet {
	f := flag.NewFlagSet("voik "+c.name, flag.ContinueOnError)
	// Help that was asked for goes to stdout (voik fetch -h | less); a bad
	// flag is one line on stderr, like any other usage error.
	f.SetOutput(io.Discard)
	f.Usage = func() {}
	f.StringVar(&o.config, "config", "", "YAML settings `FILE`; VOIK_* variables override it (also accepted before the command)")
	if c.flags != nil {
		c.flags(f, o)
	}
	return f
}

// help writes c's -h: usage line, what it does, arguments, flags,
// examples (and for serve, every setting).
func (c *command) help(w io.Writer) {
	synopsis := "voik " + c.name
	if c.name == "serve" {
		synopsis = "voik [serve]"
	}
	if c.synopsis != "" {
		synopsis += " " + c.synopsis
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\n", synopsis, c.about)
	if c.args != "" {
		fmt.Fprintf(w, "Arguments:\n%s\n\n", c.args)
	} else {
		fmt.Fprint(w, "Arguments: none.\n\n")
	}
	where := "before or after the arguments"
	if c.maxArgs == 0 {
		where = "any order"
	}
	fmt.Fprintf(w, "Flags (one dash or two, %s):\n", where)
	f := c.flagSet(&options{})
	f.SetOutput(w)
	f.PrintDefaults()
	fmt.Fprint(w, "\nExamples:\n")
	for _, e := range c.examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	if c.settings {
		fmt.Fprintln(w)
		config.Usage(w)
	}
}

// parse reads c's flags, before or after its arguments, and checks the
// arguments. -h prints c's help to help and is errHelp; any other error
// is a usage error for the caller to print in one line.
func (c *command) parse(args []string, help io.Writer) (*options, []string, error) {
	o := &options{}
	f := c.flagSet(o)
	var positional []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.help(help)
			}
			return nil, nil, err
		}
		rest := f.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...) // after --, arguments only
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	f.Visit(func(fl *flag.Flag) {
		if fl.Name == "timeout" {
			o.timeoutOn = true
		}
	})
	if err := c.checkArgs(positional); err != nil {
		return nil, nil, err
	}
	if err := o.check(c.name); err != nil {
		return nil, nil, err
	}
	return o, positional, nil
}

// checkArgs says in words what c takes when positional is not it.
func (c *command) checkArgs(positional []string) error {
	n := len(positional)
	switch {
	case n < c.minArgs:
		return fmt.Errorf("needs a %s", c.argName)
	case n > c.maxArgs && c.maxArgs == 0:
		return fmt.Errorf("takes no arguments, got %s", countArgs(positional))
	case n > c.maxArgs && c.minArgs == 1:
		return fmt.Errorf("takes one %s, got %s", c.argName, countArgs(positional))
	case n > c.maxArgs:
		return fmt.Errorf("takes at most one %s, got %s", c.argName, countArgs(positional))
	}
	for _, arg := range positional {
		if c.validArg == nil {
			break
		}
		if err := c.validArg(arg); err != nil {
			return err
		}
	}
	return nil
}

// countArgs is "2 arguments (a b)".
func countArgs(args []string) string {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") || !strconv.CanBackquote(a) {
			shown[i] = strconv.Quote(a)
		}
	}
	noun := "arguments"
	if len(args) == 1 {
		noun = "argument"
	}
	return fmt.Sprintf("%d %s (%s)", len(args), noun, strings.Join(shown, " "))
}

// check judges the flags of command together.
func (o *options) check(command string) error {
	if o.offset != "" && o.since != "" {
		return errors.New("--offset and --since are alternatives")
	}
	if o.last.set && (o.offset != "" || o.since != "") {
		return errors.New("--last and --offset or --since are alternatives")
	}
	if o.wait < 0 {
		return fmt.Errorf("--wait %v: want a duration of 0 or more", o.wait)
	}
	if o.wait > messages.MaxWaitMs*time.Millisecond {
		return fmt.Errorf("--wait %v: at most %v, the protocol's limit (--follow keeps waiting for longer)", o.wait, messages.MaxWaitMs*time.Millisecond)
	}
	if command == "replay" {
		if o.print {
			o.waitEnd = true
		}
		if o.deliver == "" && !o.waitEnd {
			return errors.New("--deliver is required without --wait")
		}
		if o.deliver != "" {
			if err := subjectArg(o.deliver); err != nil {
				return fmt.Errorf("--deliver %w", err)
			}
		}
		if o.timeoutOn && !o.waitEnd {
			return errors.New("--timeout is for --wait")
		}
		if o.timeout <= 0 {
			return fmt.Errorf("--timeout %v: want a duration above 0", o.timeout)
		}
	}
	var err error
	if o.startOffset, err = parseOffset(o.offset); err != nil {
		return err
	}
	if o.startTime, err = parseSince(o.since, time.Now()); err != nil {
		return err
	}
	return nil
}

// parseSince reads --since: RFC 3339, or a duration before now.
func parseSince(since string, now time.Time) (int64, error) {
	if since == "" {
		return 0, nil
	}
	if d, err := config.ParseDuration(since); err == nil {
		return now.Add(-d).UnixNano(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, since)
	if err != nil {
		return 0, fmt.Errorf("--since %q: want RFC 3339 (2026-11-25T10:00:00Z) or a duration ago (10m, 7d)", since)
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
