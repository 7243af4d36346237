package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/messages"
)

// A log on disk that voik cannot serve, in part or at all, says so the
// same way on every verb: 500 with the reason, never a 404 that would say
// nothing was stored, and it is counted in voik_log_opens_total. Its
// offsets are never given out again: it refuses appends until an operator
// acts (docs/operations.md).
func TestDamagedLogsAnswer500OnEveryVerbAndNeverReuseOffsets(t *testing.T) {
	t.Parallel()
	const records = 40 // 1 KiB each: three 16 KiB segments' worth
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string) // the log's directory
		outcome string                         // of voik_log_opens_total
		older   bool                           // the older segments' records are still served
		says    string                         // what every 500 says
	}{
		{
			name: "first and only segment zeroed, its index holding entries",
			damage: func(t *testing.T, dir string) {
				removeSegmentsAfterFirst(t, dir)
				zeroFile(t, filepath.Join(dir, "00000000000000000000.log"))
			},
			outcome: "corrupt", says: "damaged",
		},
		{
			name: "newest segment zeroed, its index holding entries",
			damage: func(t *testing.T, dir string) {
				zeroFile(t, newestSegment(t, dir))
			},
			outcome: "corrupt", older: true, says: "takes no more records",
		},
		{
			name: "segment file unreadable (a directory in its place)",
			damage: func(t *testing.T, dir string) {
				newest := newestSegment(t, dir)
				if err := os.Remove(newest); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(newest, 0o700); err != nil {
					t.Fatal(err)
				}
			},
			outcome: "failed", says: "cannot be opened",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startWith(t, nil, func(c *configT) { c.SegmentSize = 64 << 10 })
			subject := "damaged.log"
			for i := range records {
				e.appendAcked(subject, nil, append([]byte(fmt.Sprintf("%d;", i)), make([]byte, 4<<10)...))
			}
			e.voik.Stop(t)
			dir := filepath.Join(e.voik.Config.DataDir, subject)
			served := uint64(0)
			if tc.older {
				served = baseOf(t, newestSegment(t, dir)) // what the older segments hold
			}
			tc.damage(t, dir)
			e.restart()

			// SUBJECTS still lists it: it exists.
			if got := e.subjects("damaged.>"); len(got) != 1 || got[0] != subject {
				t.Fatalf("SUBJECTS lists %v, want the damaged log", got)
			}
			// The records before the damage are served; from where it
			// starts, every verb is a 500 that says why.
			if served > 0 {
				if got := e.fetchAll(subject); uint64(len(got)) != served {
					t.Fatalf("%d records served before the damage, want %d", len(got), served)
				}
				info := e.call("INFO."+subject, nil)
				if fmt.Sprint(info["end_offset"]) != fmt.Sprint(served) {
					t.Fatalf("INFO of a log damaged after offset %d: %v", served, info)
				}
			} else {
				descriptionSays(t, wantError(t, "INFO", e.call("INFO."+subject, nil), 500), tc.says)
			}
			descriptionSays(t, wantError(t, "FETCH at the damage", e.call("FETCH."+subject, map[string]any{"offset": served}), 500), tc.says)
			descriptionSays(t, wantError(t, "long poll at the damage", e.call("FETCH."+subject, map[string]any{"offset": served, "wait_ms": 100}), 500), tc.says)
			if served == 0 {
				descriptionSays(t, wantError(t, "REPLAY", e.call("REPLAY."+subject, map[string]any{"deliver": "_INBOX.damaged"}), 500), tc.says)
			}
			// An acked append is refused, and offsets are not given out
			// again, after a restart too.
			for round := range 2 {
				msg := nats.NewMsg(subject)
				msg.Header.Set(messages.HeaderAck, "1")
				msg.Data = []byte("after the damage")
				reply, err := e.nc.RequestMsg(msg, requestTimeout)
				if err != nil {
					t.Fatalf("acked append to a damaged log got no answer: %v", err)
				}
				wantError(t, fmt.Sprintf("ack from a damaged log (round %d)", round), decodeReply(t, reply.Data), 500)
				if round == 0 {
					e.restart()
				}
			}
			if opened := e.metric("voik_log_opens_total", "outcome", tc.outcome); opened < 1 {
				t.Fatalf("voik_log_opens_total{outcome=%q} is %v after the damaged log was opened", tc.outcome, opened)
			}
		})
	}
}

// newestSegment is the path of the newest .log in dir.
func newestSegment(t *testing.T, dir string) string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) < 2 {
		t.Fatalf("want at least two segments in %s, have %v (%v)", dir, logs, err)
	}
	return logs[len(logs)-1] // zero-padded names sort by base offset
}

// baseOf is the base offset in a segment's file name.
func baseOf(t *testing.T, path string) uint64 {
	t.Helper()
	var base uint64
	if _, err := fmt.Sscanf(filepath.Base(path), "%020d.log", &base); err != nil {
		t.Fatal(err)
	}
	return base
}

// removeSegmentsAfterFirst leaves only the first segment of dir.
func removeSegmentsAfterFirst(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "0*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "00000000000000000000.log" && base != "00000000000000000000.idx" {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// zeroFile overwrites a file with zeros, keeping its size.
func zeroFile(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, info.Size()), 0o600); err != nil {
		t.Fatal(err)
	}
}
