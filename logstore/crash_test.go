package logstore

// Crash tests: a child process (this test binary, re-run as TestCrashChild)
// appends to a log until the parent kills it with SIGKILL at a random
// moment; the parent then recovers the log in-process and checks it. Each
// round reuses the same directory, so every round also recovers what the
// rounds before it left behind.
//
// The child tells the parent what it has done over stdout, one line per
// event, each starting with crashLinePrefix (go test's own output is
// ignored):
//
//	voik-crash start <offset>    the log opened; the next append gets <offset>
//	voik-crash first <offset>    the offset the first append returned
//	voik-crash durable <offset>  WaitDurable returned for <offset>
//	voik-crash error <text>      the child found something wrong and stops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var crashKills = flag.Int("crash.kills", 20, "how many times TestCrash* kills the writer")

const (
	crashDirEnv     = "VOIK_CRASH_CHILD_DIR" // set: TestCrashChild writes to the log in this dir
	crashSyncEnv    = "VOIK_CRASH_SYNC"      // the child's sync policy: batch, always, interval or none
	crashSeedEnv    = "VOIK_CRASH_SEED"      // replays a run of the parent
	crashSubject    = "crash.subject"
	crashLinePrefix = "voik-crash "

	crashSegmentBytes = 64 << 10
	crashBaseTime     = int64(1_600_000_000_000_000_000)
	// crashMaxData is the largest data a record without headers can carry
	// in a crash segment: the record then fills the segment exactly.
	crashMaxData = crashSegmentBytes - fileHeaderSize - recordHeaderSize
)

func crashOptions(policy SyncPolicy, logger *slog.Logger) Options {
	return Options{
		SegmentBytes:        crashSegmentBytes,
		InitialSegmentBytes: 4 << 10,
		Sync:                policy,
		SyncInterval:        time.Millisecond,
		Logger:              logger,
	}
}

func crashDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// crashMix is splitmix64: a well-spread hash of x.
func crashMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// crashRecord is the record the writer stores at offset. Everything about
// it follows from the offset, so the parent can check any record byte for
// byte without hearing about it: sizes from empty to a whole segment (about
// one record in 100 is 48 KiB or more, and some of those fill a segment
// exactly, which forces a rotation), and headers on three records in four.
func crashRecord(offset uint64) (timestamp int64, headers Headers, data []byte) {
	r := crashMix(offset)
	var n int
	large := r%100 == 0
	switch {
	case large && (r>>8)%4 == 0:
		n = crashMaxData
	case large:
		n = 48<<10 + int((r>>16)%uint64(crashMaxData-48<<10))
	default:
		n = int((r >> 16) % 512)
	}
	data = make([]byte, n+8)
	state := r
	for i := 0; i < n; i += 8 {
		state = crashMix(state)
		binary.LittleEndian.PutUint64(data[i:], state)
	}
	data = data[:n]
	if !large {
		switch (r >> 40) % 4 {
		case 1:
			headers = Headers{"Nats-Msg-Id": {strconv.FormatUint(offset, 10)}}
		case 2:
			headers = Headers{"Nats-Msg-Id": {strconv.FormatUint(offset, 10)}, "multi": {"b", "a", ""}, "Empty": {}}
		case 3:
			headers = Headers{"k": {strings.Repeat("v", int((r>>48)%64))}, "\x00bin": {string(data[:min(n, 7)])}}
		}
	}
	return crashBaseTime + int64(offset)*1000, headers, data
}

// TestCrashChild is the writer that the crash tests start and kill. Run by
// hand it skips.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("the writer of the crash tests; runs only as their child process")
	}
	report, fail := childReport(t)
	policy, err := ParseSyncPolicy(os.Getenv(crashSyncEnv))
	if err != nil {
		fail("%v", err)
	}
	l, err := OpenLog(dir, crashSubject, crashOptions(policy, crashDiscardLogger()))
	if err != nil {
		fail("open: %v", err)
	}
	defer l.Close()
	next := l.EndOffset()
	start := next
	report("start %d", next)
	// The parent kills the child within a second or so; this bound only
	// keeps an orphaned child from filling the disk.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		batch := 1 + int(crashMix(^next)%4)
		var last uint64
		for range batch {
			ts, headers, data := crashRecord(next)
			offset, gotTs, err := l.Append(ts, headers, data)
			if err != nil {
				fail("append %d: %v", next, err)
			}
			if offset != next || gotTs != ts {
				fail("append got offset %d timestamp %d, want %d %d", offset, gotTs, next, ts)
			}
			if offset == start {
				report("first %d", offset)
			}
			last = offset
			next++
		}
		if err := l.WaitDurable(context.Background(), last); err != nil {
			fail("wait durable %d: %v", last, err)
		}
		report("durable %d", last)
	}
	fail("not killed within a minute")
}

// crashRound is what the parent saw of one child's life.
type crashRound struct {
	started    bool
	start      uint64 // the child's EndOffset after it opened the log
	appended   bool
	first      uint64 // the offset of the child's first append
	acks       int
	maxDurable uint64 // highest offset reported durable; valid when acks > 0
	childErr   string
	stderr     string
}

// runCrashRound starts a writer with the given policy on dir, lets it run
// until it has reported minAcks durable records plus delay, kills it with
// SIGKILL and returns what it reported.
func runCrashRound(t *testing.T, dir string, policy SyncPolicy, minAcks int, delay time.Duration) crashRound {
	t.Helper()
	return runCrashChild(t, "TestCrashChild", crashDirEnv+"="+dir, policy, minAcks, delay)
}

// runCrashChild is runCrashRound for the child test child, given its
// directory as dirEnv ("NAME=dir").
func runCrashChild(t *testing.T, child, dirEnv string, policy SyncPolicy, minAcks int, delay time.Duration) crashRound {
	t.Helper()
	var round crashRound
	round.stderr = runKilledChild(t, child, []string{dirEnv, crashSyncEnv + "=" + policy.String()}, delay,
		func(line string) (armed bool, err error) {
			kind, rest, _ := strings.Cut(line, " ")
			var value uint64
			if kind == "start" || kind == "first" || kind == "durable" {
				if value, err = strconv.ParseUint(rest, 10, 64); err != nil {
					return false, fmt.Errorf("bad line %q", line)
				}
			}
			switch kind {
			case "start":
				round.started, round.start = true, value
			case "first":
				round.appended, round.first = true, value
			case "durable":
				round.acks++
				round.maxDurable = max(round.maxDurable, value)
			case "error":
				round.childErr = rest
				return false, errors.New(rest)
			}
			return round.acks >= minAcks, nil
		})
	return round
}

// crashChild is this test binary run again as one of its child tests,
// which report on stdout in lines that start with crashLinePrefix.
type crashChild struct {
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	lines   chan string // the report lines, prefix cut; closed at EOF
	wg      sync.WaitGroup
	readErr error
}

// startCrashChild starts the child test named child with env added to
// this process's environment.
func startCrashChild(t *testing.T, child string, env ...string) *crashChild {
	t.Helper()
	c := &crashChild{lines: make(chan string, 256)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(c.lines)
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if line, ok := strings.CutPrefix(scanner.Text(), crashLinePrefix); ok {
				c.lines <- line // anything else is go test's own output
			}
		}
		c.readErr = scanner.Err()
	}()
	return c
}

// wait reads what is left of the child's report (every line it wrote
// before it died is in the pipe: read to EOF before Wait closes it), with
// apply, then waits for it.
func (c *crashChild) wait(apply func(string)) error {
	for line := range c.lines {
		if apply != nil {
			apply(line)
		}
	}
	c.wg.Wait()
	return c.cmd.Wait()
}

// runKilledChild runs child until it is killed: apply takes each report
// line, and once it says armed, the child gets SIGKILL delay later. A
// child that reports an error (apply's), or ends by itself, fails the
// test; so does one that did not die of the SIGKILL, or whose stderr
// shows a race, a panic or a fatal error. It returns the child's stderr.
func runKilledChild(t *testing.T, child string, env []string, delay time.Duration, apply func(line string) (armed bool, err error)) string {
	t.Helper()
	c := startCrashChild(t, child, env...)
	var timer <-chan time.Time
	for killed := false; !killed; {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.wait(nil)
				t.Fatalf("%s exited before it was killed (%v, read: %v); stderr:\n%s", child, c.cmd.ProcessState, c.readErr, c.stderr.String())
			}
			armed, err := apply(line)
			if err != nil {
				c.cmd.Process.Kill()
				c.wait(nil)
				t.Fatalf("%s failed: %v; stderr:\n%s", child, err, c.stderr.String())
			}
			if armed && timer == nil {
				timer = time.After(delay)
			}
		case <-timer:
			if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill: %v", err)
			}
			killed = true
		}
	}
	var lateErr error
	err := c.wait(func(line string) {
		if _, err := apply(line); err != nil && lateErr == nil {
			lateErr = err
		}
	})
	stderr := c.stderr.String()
	if c.readErr != nil {
		t.Fatalf("reading %s's output: %v", child, c.readErr)
	}
	if status, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !status.Signaled() || status.Signal() != syscall.SIGKILL {
		t.Fatalf("%s did not die of SIGKILL: %v; stderr:\n%s", child, err, stderr)
	}
	for _, bad := range []string{"DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(stderr, bad) {
			t.Fatalf("%s's stderr reports %q:\n%s", child, bad, stderr)
		}
	}
	if lateErr != nil {
		t.Fatalf("%s failed: %v", child, lateErr)
	}
	return stderr
}

// childReport returns the report and fail functions of a child test: a
// line on stdout each (os.Stdout is unbuffered: one write per line, in
// the pipe as soon as it returns, so a kill right after it loses
// nothing); fail also reports an error line and fails the child.
func childReport(t *testing.T) (report, fail func(format string, args ...any)) {
	report = func(format string, args ...any) {
		fmt.Fprintf(os.Stdout, crashLinePrefix+format+"\n", args...)
	}
	fail = func(format string, args ...any) {
		report("error "+format, args...)
		t.Fatalf(format, args...)
	}
	return report, fail
}

// crashCheckLog opens the log the writer left behind and checks every
// record in it against crashRecord. It returns the end offset and whether
// recovery cut a torn tail.
func crashCheckLog(t *testing.T, dir string) (end uint64, tornTail bool, segments int) {
	t.Helper()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := OpenLog(dir, crashSubject, crashOptions(SyncBatch, logger))
	if err != nil {
		t.Fatalf("OpenLog after kill: %v\nrecovery log:\n%s", err, logs.String())
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if first := l.FirstOffset(); first != 0 {
		t.Fatalf("first offset %d after kill, want 0 (no retention)", first)
	}
	end = l.EndOffset()
	want := uint64(0)
	next, err := l.Scan(0, func(v RecordView) bool {
		if v.Offset != want {
			t.Fatalf("record at offset %d, want %d: offsets are not contiguous", v.Offset, want)
		}
		ts, headers, data := crashRecord(v.Offset)
		if v.Timestamp != ts {
			t.Fatalf("record %d: timestamp %d, want %d", v.Offset, v.Timestamp, ts)
		}
		if !bytes.Equal(v.Data, data) {
			t.Fatalf("record %d: data differs (%d bytes, want %d)", v.Offset, len(v.Data), len(data))
		}
		if enc := encodeHeaders(nil, headers); !bytes.Equal(v.headers, enc) {
			t.Fatalf("record %d: header bytes %q, want %q", v.Offset, v.headers, enc)
		}
		got, err := v.Headers()
		if err != nil || !reflect.DeepEqual(got, headers) {
			t.Fatalf("record %d: headers %v (%v), want %v", v.Offset, got, err, headers)
		}
		want++
		return true
	})
	if err != nil {
		t.Fatalf("scan after kill: %v", err)
	}
	if next != end || want != end {
		t.Fatalf("scan ended at %d after %d records, end offset %d", next, want, end)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("recovered log reports %v", err)
	}
	return end, strings.Contains(logs.String(), "torn tail"), l.Info().Segments
}

func TestCrashKeepsEveryDurableRecordAndContiguousOffsets(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("inside a crash child")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", crashSeedEnv, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	kills := *crashKills
	if kills < 1 {
		t.Fatalf("-crash.kills=%d", kills)
	}

	dir := t.TempDir()
	var end uint64
	policies := map[SyncPolicy]int{}
	torn := 0
	started := time.Now()
	for round := range kills {
		var policy SyncPolicy
		switch p := rng.IntN(8); {
		case p < 4:
			policy = SyncBatch
		case p < 6:
			policy = SyncAlways
		case p < 7:
			policy = SyncNone
		default:
			policy = SyncInterval
		}
		policies[policy]++
		minAcks := 3 + rng.IntN(5)
		delay := time.Duration(rng.Int64N(int64(30 * time.Millisecond)))

		r := runCrashRound(t, dir, policy, minAcks, delay)
		if !r.started {
			t.Fatalf("round %d: the writer never reported its start", round)
		}
		if r.start != end {
			t.Fatalf("round %d: the writer started at offset %d, the log ended at %d before it", round, r.start, end)
		}
		if !r.appended || r.first != end {
			t.Fatalf("round %d: the writer's first append got offset %d (reported %v), the log ended at %d before it", round, r.first, r.appended, end)
		}
		if r.acks < minAcks || r.maxDurable < r.start {
			t.Fatalf("round %d: %d acks, highest %d, start %d", round, r.acks, r.maxDurable, r.start)
		}

		newEnd, tornTail, segments := crashCheckLog(t, dir)
		if left := preparedFiles(t, dir); len(left) != 0 {
			t.Fatalf("round %d: %v left after recovery and close", round, left)
		}
		if newEnd <= r.maxDurable {
			t.Fatalf("round %d (%v, killed %v after ack %d): end offset %d lost record %d, which was reported durable",
				round, policy, delay, minAcks, newEnd, r.maxDurable)
		}
		if tornTail {
			torn++
		}
		t.Logf("round %d: %-8v killed %5.1fms after %d acks: records %d..%d, %d acked, %d segments, torn tail %v",
			round, policy, float64(delay.Microseconds())/1000, minAcks, r.start, newEnd, r.maxDurable+1-r.start, segments, tornTail)
		end = newEnd
	}
	t.Logf("%d kills in %v: %d records, policies %v, %d recoveries cut a torn tail",
		kills, time.Since(started).Round(time.Millisecond), end, policies, torn)

	// After all that the log still takes appends at the next offset.
	l, err := OpenLog(dir, crashSubject, crashOptions(SyncAlways, crashDiscardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ts, headers, data := crashRecord(end)
	if offset, _, err := l.Append(ts, headers, data); err != nil || offset != end {
		t.Fatalf("append after the last kill: offset %d (want %d), %v", offset, end, err)
	}
	records, err := l.Read(end, 1)
	if err != nil || len(records) != 1 || !bytes.Equal(records[0].Data, data) {
		t.Fatalf("read back the record appended after the last kill: %v", err)
	}
}

// ---- A kill while the pipeline holds a segment (rotation.go) ----

const (
	crashPipelineDirEnv  = "VOIK_CRASH_PIPELINE_DIR"  // set: TestCrashPipelineChild writes to the log in this dir
	crashPipelineModeEnv = "VOIK_CRASH_PIPELINE_MODE" // "prepared" or "swapped"
)

// TestCrashPipelineChild appends under SyncNone until the pipeline has the
// next segment prepared; with "swapped" it then stops commits forever (a
// sync that never returns) and appends until that segment is swapped in
// and holds a record. It reports "<mode> <end offset>" and waits to be
// killed.
func TestCrashPipelineChild(t *testing.T) {
	dir := os.Getenv(crashPipelineDirEnv)
	if dir == "" {
		t.Skip("the writer of TestCrashWhilePipelineHoldsASegment; runs only as its child process")
	}
	mode := os.Getenv(crashPipelineModeEnv)
	var stall atomic.Bool
	opts := crashOptions(SyncNone, crashDiscardLogger())
	opts.faults = &faultHooks{sync: func(string) error {
		if stall.Load() {
			select {} // the commit of the swapped-in segment never ends
		}
		return nil
	}}
	l, err := OpenLog(dir, crashSubject, opts)
	if err != nil {
		t.Fatal(err)
	}
	next := l.EndOffset()
	appendNext := func() {
		ts, headers, data := crashRecord(next)
		if _, _, err := l.Append(ts, headers, data); err != nil {
			fmt.Fprintf(os.Stdout, crashLinePrefix+"error append %d: %v\n", next, err)
			t.Fatal(err)
		}
		next++
	}
	for deadline := time.Now().Add(time.Minute); !pipelineReady(l); {
		if time.Now().After(deadline) {
			t.Fatal("no segment prepared within a minute")
		}
		appendNext()
		time.Sleep(100 * time.Microsecond) // give the pipeline time to prepare
	}
	if mode == "swapped" {
		stall.Store(true)
		for segments := l.Info().Segments; l.Info().Segments == segments; {
			appendNext()
		}
		appendNext()
	}
	fmt.Fprintf(os.Stdout, crashLinePrefix+"%s %d\n", mode, next)
	time.Sleep(time.Minute)
	t.Fatal("not killed within a minute")
}

// TestCrashWhilePipelineHoldsASegment kills a writer while the next
// segment is prepared (files without a header), and while a swapped-in
// segment is not committed yet (still under its prepared name, with
// records in it). Recovery deletes the first and names the second, and
// every record appended is there: under SyncNone a kill of the process
// loses nothing.
func TestCrashWhilePipelineHoldsASegment(t *testing.T) {
	if os.Getenv(crashPipelineDirEnv) != "" || os.Getenv(crashDirEnv) != "" {
		t.Skip("inside a crash child")
	}
	for _, c := range []struct {
		mode   string
		before []string // prepared files at the kill
		says   string   // what recovery logs
	}{
		{"prepared", []string{preparedLogName, preparedIndexName}, "removing a segment prepared ahead of a rotation"},
		{"swapped", []string{preparedLogName, preparedIndexName}, "naming a segment that a rotation swapped in"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			for round := 0; round < 3; round++ {
				dir := t.TempDir()
				end := crashRunUntilReport(t, dir, c.mode)
				if got := preparedFiles(t, dir); !slices.Equal(got, c.before) {
					t.Fatalf("round %d: prepared files %v at the kill, want %v", round, got, c.before)
				}
				var logs bytes.Buffer
				logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
				l, err := OpenLog(dir, crashSubject, crashOptions(SyncBatch, logger))
				if err != nil {
					t.Fatalf("round %d: OpenLog after the kill: %v", round, err)
				}
				if got := l.EndOffset(); got != end {
					t.Fatalf("round %d: end offset %d after the kill, the writer had appended up to %d", round, got, end)
				}
				if !strings.Contains(logs.String(), c.says) {
					t.Fatalf("round %d: recovery did not say %q:\n%s", round, c.says, logs.String())
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				if got, _, _ := crashCheckLog(t, dir); got != end {
					t.Fatalf("round %d: end offset %d on reopening, want %d", round, got, end)
				}
				if left := preparedFiles(t, dir); len(left) != 0 {
					t.Fatalf("round %d: %v left after recovery", round, left)
				}
			}
		})
	}
}

// crashRunUntilReport runs TestCrashPipelineChild on dir in mode, kills it
// with SIGKILL as soon as it reports, and returns the end offset it
// reported.
func crashRunUntilReport(t *testing.T, dir, mode string) uint64 {
	t.Helper()
	c := startCrashChild(t, "TestCrashPipelineChild", crashPipelineDirEnv+"="+dir, crashPipelineModeEnv+"="+mode)
	defer c.wait(nil)
	defer c.cmd.Process.Kill()
	for line := range c.lines {
		kind, value, _ := strings.Cut(line, " ")
		if kind != mode {
			t.Fatalf("writer: %s", line)
		}
		end, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		return end
	}
	c.wait(nil)
	t.Fatalf("the writer ended without reporting (%v); stderr:\n%s", c.cmd.ProcessState, c.stderr.String())
	return 0
}

// ---- A kill while new subjects get their logs (store_append.go) ----

const crashStoreDirEnv = "VOIK_CRASH_STORE_DIR" // set: TestCrashNewSubjectsChild makes subjects in the store in this dir

func crashNewSubject(i uint64) string { return fmt.Sprintf("new.%06d", i) }

// TestCrashNewSubjectsChild makes one new subject after another in a
// store, each with its first record, speaking the protocol of
// TestCrashChild with subject numbers for offsets: "start" the number of
// the first subject it makes, "durable" the number of one whose first
// record WaitDurable returned for.
func TestCrashNewSubjectsChild(t *testing.T) {
	dir := os.Getenv(crashStoreDirEnv)
	if dir == "" {
		t.Skip("the writer of TestCrashNewSubjectKeepsItsFirstRecordOrNothing; runs only as its child process")
	}
	policy, err := ParseSyncPolicy(os.Getenv(crashSyncEnv))
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(dir, crashOptions(policy, crashDiscardLogger()))
	if err != nil {
		fmt.Fprintf(os.Stdout, crashLinePrefix+"error open: %v\n", err)
		t.Fatal(err)
	}
	next := uint64(len(s.Subjects()))
	fmt.Fprintf(os.Stdout, crashLinePrefix+"start %d\n", next)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); next++ {
		subject := crashNewSubject(next)
		ts, headers, data := crashRecord(next)
		entries := []Entry{{Timestamp: ts, Headers: headers, Data: data}}
		if _, n, err := s.Append(subject, entries); n != 1 || err != nil {
			fmt.Fprintf(os.Stdout, crashLinePrefix+"error append to %s: %v\n", subject, err)
			t.Fatal(err)
		}
		if err := s.WaitDurable(context.Background(), subject, 0); err != nil {
			fmt.Fprintf(os.Stdout, crashLinePrefix+"error wait durable %s: %v\n", subject, err)
			t.Fatal(err)
		}
		fmt.Fprintf(os.Stdout, crashLinePrefix+"durable %d\n", next)
	}
	t.Fatal("not killed within a minute")
}

// TestCrashNewSubjectKeepsItsFirstRecordOrNothing kills a writer that
// makes new subjects at random moments (most of them inside the making of
// a subject's log: several fsyncs and a rename). After each kill, every
// subject the store lists has its first record, whole, every subject whose
// first record was reported durable is listed, the subjects are the
// writer's in order with none missing between, and nothing half-made is
// left in the data directory.
func TestCrashNewSubjectKeepsItsFirstRecordOrNothing(t *testing.T) {
	if os.Getenv(crashStoreDirEnv) != "" || os.Getenv(crashDirEnv) != "" || os.Getenv(crashPipelineDirEnv) != "" {
		t.Skip("inside a crash child")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	dir := t.TempDir()
	var made uint64
	for round := range max(*crashKills/2, 5) {
		policy := []SyncPolicy{SyncBatch, SyncAlways, SyncNone, SyncInterval}[rng.IntN(4)]
		minAcks := 1 + rng.IntN(4)
		delay := time.Duration(rng.Int64N(int64(5 * time.Millisecond)))
		r := runCrashChild(t, "TestCrashNewSubjectsChild", crashStoreDirEnv+"="+dir, policy, minAcks, delay)
		if !r.started || r.start != made {
			t.Fatalf("round %d: the writer started at subject %d (reported %v), %d were made before", round, r.start, r.started, made)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		halfMade := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".new-") {
				halfMade++
			}
		}
		s, err := OpenStore(dir, crashOptions(SyncBatch, crashDiscardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		subjects := s.Subjects()
		for i, subject := range subjects {
			if subject != crashNewSubject(uint64(i)) {
				t.Fatalf("round %d: subject %d is %q: subjects missing before it", round, i, subject)
			}
			ts, headers, data := crashRecord(uint64(i))
			err := s.View(subject, func(l *Log) error {
				records, err := l.Read(0, 2)
				switch {
				case err != nil:
					return err
				case len(records) != 1:
					return fmt.Errorf("%d records, want its first only", len(records))
				case records[0].Timestamp != ts || !bytes.Equal(records[0].Data, data) || !reflect.DeepEqual(records[0].Headers, headers):
					return fmt.Errorf("record 0 is not the one appended")
				}
				return nil
			})
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, subject, err)
			}
		}
		if r.acks > 0 && uint64(len(subjects)) <= r.maxDurable {
			t.Fatalf("round %d: %d subjects after the kill, but subject %d was reported durable", round, len(subjects), r.maxDurable)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != len(subjects) {
			t.Fatalf("round %d: %d entries in the data dir for %d subjects", round, len(entries), len(subjects))
		}
		t.Logf("round %d: %-8v killed %.1fms after %d acks: subjects %d..%d, %d reported durable, %d half made at the kill",
			round, policy, float64(delay.Microseconds())/1000, minAcks, made, len(subjects), r.maxDurable+1-made, halfMade)
		made = uint64(len(subjects))
	}
}
