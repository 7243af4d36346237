package logstore

// Crash tests of TruncateTo: a child process (this test binary, re-run as
// TestCrashTruncateChild) appends chained records (trChainData) to a log
// and truncates it, again and again, until the parent kills it with
// SIGKILL, most often in the middle of a truncation; the parent then
// recovers the log in-process and checks it. Each round reuses the same
// directory, as TestCrashKeepsEveryDurableRecordAndContiguousOffsets does.
//
// The child speaks crash_test.go's protocol, with two more events:
//
//	voik-crash start <offset>               the log opened; the next append gets <offset>
//	voik-crash durable <offset>             WaitDurable returned for <offset>
//	voik-crash truncating <target> <end>    TruncateTo(target) is called on a log ending at <end>
//	voik-crash truncated <target> <micros>  it returned, after <micros> µs
//	voik-crash error <text>                 the child found something wrong and stops

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	crashTruncateDirEnv   = "VOIK_CRASH_TRUNCATE_DIR"   // set: TestCrashTruncateChild writes to the log in this dir
	crashTruncateRoundEnv = "VOIK_CRASH_TRUNCATE_ROUND" // the round: the child's generations are round<<20 + i
)

// crashTruncateGen is the generation of the records a child appends in
// round after its truncations-th truncation.
func crashTruncateGen(round, truncations uint64) uint64 { return round<<20 + truncations }

// TestCrashTruncateChild is the writer that TestCrashDuringTruncateTo
// starts and kills. Run by hand it skips.
func TestCrashTruncateChild(t *testing.T) {
	dir := os.Getenv(crashTruncateDirEnv)
	if dir == "" {
		t.Skip("the writer of TestCrashDuringTruncateToEndsBeforeOrAfter; runs only as its child process")
	}
	report, fail := childReport(t)
	round, err := strconv.ParseUint(os.Getenv(crashTruncateRoundEnv), 10, 64)
	if err != nil {
		fail("%s: %v", crashTruncateRoundEnv, err)
	}
	policy, err := ParseSyncPolicy(os.Getenv(crashSyncEnv))
	if err != nil {
		fail("%v", err)
	}
	l, err := OpenLog(dir, crashSubject, crashOptions(policy, crashDiscardLogger()))
	if err != nil {
		fail("open: %v", err)
	}
	defer l.Close()
	w := &trChainWriter{l: l, gen: crashTruncateGen(round, 0), large: 20 << 10}
	w.gens = make([]uint64, l.EndOffset())
	if _, err := l.Scan(l.FirstOffset(), func(v RecordView) bool {
		_, gen, _, _ := trParseChain(v.Data)
		w.gens[v.Offset] = gen
		return true
	}); err != nil {
		fail("read the log: %v", err)
	}
	report("start %d", l.EndOffset())
	rng := rand.New(rand.NewPCG(round, 99))
	// The parent kills the child within a second or so; this bound only
	// keeps an orphaned child from running on.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		w.append(t, 30+rng.IntN(60)) // more than a truncation drops, mostly: the log grows over segments
		if t.Failed() {
			fail("append failed")
		}
		last := l.EndOffset() - 1
		if err := l.WaitDurable(context.Background(), last); err != nil {
			fail("wait durable %d: %v", last, err)
		}
		report("durable %d", last)
		end, target := l.EndOffset(), w.pick(rng)
		report("truncating %d %d", target, end)
		start := time.Now()
		dropped, err := l.TruncateTo(target)
		if err != nil || dropped != end-target || l.EndOffset() != target || l.DurableOffset() != target {
			fail("TruncateTo(%d) of a log ending at %d: %d dropped, %v; end %d durable %d", target, end, dropped, err, l.EndOffset(), l.DurableOffset())
		}
		report("truncated %d %d", target, time.Since(start).Microseconds())
		w.truncated(target)
	}
	fail("not killed within a minute")
}

// crashTruncateRound is what the parent saw of one child's life.
type crashTruncateRound struct {
	start       uint64
	truncations uint64 // TruncateTo calls that returned
	// pending: killed inside TruncateTo(target) of a log ending at end.
	pending     bool
	target, end uint64
	lastTarget  uint64 // the target of the last truncation that returned
	durable     uint64 // highest offset reported durable since then, +1; 0 for none
	longest     time.Duration
}

// runCrashTruncateRound starts a writer on dir for round, with policy,
// and kills it delay after it reports its killAt-th call of TruncateTo.
func runCrashTruncateRound(t *testing.T, dir string, round uint64, policy SyncPolicy, killAt int, delay time.Duration) crashTruncateRound {
	t.Helper()
	env := []string{crashTruncateDirEnv + "=" + dir, crashSyncEnv + "=" + policy.String(),
		crashTruncateRoundEnv + "=" + strconv.FormatUint(round, 10)}
	var r crashTruncateRound
	started, calls := false, 0
	runKilledChild(t, "TestCrashTruncateChild", env, delay, func(line string) (bool, error) {
		kind, rest, _ := strings.Cut(line, " ")
		var a, b uint64
		fmt.Sscan(rest, &a, &b)
		switch kind {
		case "start":
			started, r.start = true, a
		case "durable":
			r.durable = max(r.durable, a+1)
		case "truncating":
			r.pending, r.target, r.end = true, a, b
			calls++
		case "truncated":
			r.pending, r.lastTarget, r.durable = false, a, 0
			r.truncations++
			r.longest = max(r.longest, time.Duration(b)*time.Microsecond)
		case "error":
			return false, fmt.Errorf("round %d: %s", round, rest)
		}
		return calls >= killAt, nil
	})
	if !started {
		t.Fatalf("round %d: the writer never reported its start", round)
	}
	return r
}

// TestCrashDuringTruncateToEndsBeforeOrAfter kills a writer that appends
// and truncates, most often in the middle of a truncation, at a moment
// drawn from how long its truncations take. After each kill the log
// recovers without an error; a truncation the kill cut short left the log
// as it was before it or as it is after it, never anything between; one
// that returned holds; every record reported durable since is there; the
// records chain (no record of the log before a truncation after one of
// the log after it); and nothing of a truncation is left in the
// directory. -crash.kills sets the rounds (a quarter of it, 5 at least).
func TestCrashDuringTruncateToEndsBeforeOrAfter(t *testing.T) {
	if os.Getenv(crashTruncateDirEnv) != "" || os.Getenv(crashDirEnv) != "" || os.Getenv(crashStoreDirEnv) != "" || os.Getenv(crashPipelineDirEnv) != "" {
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
	rng := rand.New(rand.NewPCG(seed, seed^0x7a11))
	dir := t.TempDir()
	var end uint64
	longest := 5 * time.Millisecond
	var inside, before, after int
	for round := range uint64(max(*crashKills/4, 5)) {
		policy := []SyncPolicy{SyncBatch, SyncBatch, SyncAlways, SyncNone, SyncInterval}[rng.IntN(5)]
		killAt := 1 + rng.IntN(3)
		delay := time.Duration(rng.Int64N(int64(longest) * 5 / 4))
		r := runCrashTruncateRound(t, dir, round, policy, killAt, delay)
		if r.start != end {
			t.Fatalf("round %d: the writer started at offset %d, the log ended at %d before it", round, r.start, end)
		}
		longest = max(longest, r.longest)

		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		l, err := OpenLog(dir, crashSubject, crashOptions(SyncBatch, logger))
		if err != nil {
			t.Fatalf("round %d: OpenLog after the kill: %v\nrecovery log:\n%s", round, err, logs.String())
		}
		newEnd := l.EndOffset()
		var records []RecordView
		if _, err := l.Scan(l.FirstOffset(), func(v RecordView) bool {
			v.Data = slices.Clone(v.Data)
			records = append(records, v)
			return true
		}); err != nil {
			t.Fatalf("round %d: scan after the kill: %v", round, err)
		}
		if err := trCheckChain(records); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if uint64(len(records)) != newEnd-l.FirstOffset() || l.Err() != nil {
			t.Fatalf("round %d: %d records for offsets %d..%d, err %v", round, len(records), l.FirstOffset(), newEnd, l.Err())
		}
		genAt := func(offset uint64) uint64 {
			_, gen, _, _ := trParseChain(records[offset-l.FirstOffset()].Data)
			return gen
		}
		what := "during appends"
		switch {
		case r.pending:
			inside++
			switch newEnd {
			case r.end:
				before++
				what = fmt.Sprintf("inside TruncateTo(%d) of %d: the log before it", r.target, r.end)
				if newEnd > r.target && genAt(newEnd-1) != crashTruncateGen(round, r.truncations) {
					t.Fatalf("round %d: record %d is of generation %d, not the one before the truncation", round, newEnd-1, genAt(newEnd-1))
				}
			case r.target:
				after++
				what = fmt.Sprintf("inside TruncateTo(%d) of %d: the log after it", r.target, r.end)
			default:
				t.Fatalf("round %d: killed inside TruncateTo(%d) of a log ending at %d, the log ends at %d after recovery", round, r.target, r.end, newEnd)
			}
		case r.truncations > 0:
			gen := crashTruncateGen(round, r.truncations)
			if newEnd < r.lastTarget || (newEnd > r.lastTarget && genAt(newEnd-1) != gen) {
				t.Fatalf("round %d: after TruncateTo(%d) returned and records of generation %d were appended, the log ends at %d, not with one of them",
					round, r.lastTarget, gen, newEnd)
			}
		}
		if !r.pending && newEnd < r.durable {
			t.Fatalf("round %d: the log ends at %d, record %d was reported durable", round, newEnd, r.durable-1)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		trNoTruncationFiles(t, dir)
		if left := preparedFiles(t, dir); len(left) != 0 {
			t.Fatalf("round %d: %v left after recovery and close", round, left)
		}
		t.Logf("round %d: %-8v killed %5.2fms after call %d of TruncateTo (%d returned), %s; records %d..%d in %d segments",
			round, policy, float64(delay.Microseconds())/1000, killAt, r.truncations, what, l.FirstOffset(), newEnd, l.Info().Segments)
		end = newEnd
	}
	t.Logf("%d kills, %d inside TruncateTo: %d left the log before it, %d after it; longest truncation %v",
		max(*crashKills/4, 5), inside, before, after, longest)

	l, err := OpenLog(dir, crashSubject, crashOptions(SyncAlways, crashDiscardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if offset, _, err := l.Append(0, nil, []byte("after the last kill")); err != nil || offset != end {
		t.Fatalf("append after the last kill: offset %d (want %d), %v", offset, end, err)
	}
}
