package group

import (
	"context"
	"fmt"
	"testing"

	"github.com/voik/voik/logstore"
)

// BenchmarkCopy measures a follower's side of the copy (Collect on the
// leader, Apply on the follower) against the reference in the same run:
// the leader's own appends of the same records. ns/op is per record.
func BenchmarkCopy(b *testing.B) {
	for _, subjects := range []int{1, 16} {
		b.Run(fmt.Sprintf("subjects=%d/leader-appends", subjects), func(b *testing.B) {
			leader := newBenchMember(b)
			b.SetBytes(1024)
			b.ResetTimer()
			leadBench(b, leader, b.N, subjects)
		})
		b.Run(fmt.Sprintf("subjects=%d/follower-copies", subjects), func(b *testing.B) {
			leader, follower := newBenchMember(b), newBenchMember(b)
			leadBench(b, leader, b.N, subjects)
			b.SetBytes(1024)
			b.ResetTimer()
			for follower.journal.End() < leader.journal.End() {
				entries, err := Collect(leader.store, leader.journal, follower.journal.End(), 1000, 1<<20)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Apply(follower.store, follower.journal, entries); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// leadBench appends n records of 1 KiB round-robin over subjects, each
// with its pointer, as a leader does one at a time.
func leadBench(b *testing.B, leader *member, n, subjects int) {
	data := make([]byte, 1024)
	for i := 0; i < n; i++ {
		subject := fmt.Sprintf("s.%d", i%subjects)
		first, _, err := leader.store.Append(subject, []logstore.Entry{{Data: data}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := leader.journal.Append([]Pointer{{Subject: subject, Offset: first}}); err != nil {
			b.Fatal(err)
		}
	}
}

func newBenchMember(b *testing.B) *member {
	b.Helper()
	opts := testOptions()
	opts.SegmentBytes = 64 << 20
	opts.Sync = logstore.SyncNone
	dir := b.TempDir()
	store, err := logstore.OpenStore(dir+"/data", opts)
	if err != nil {
		b.Fatal(err)
	}
	journal, err := OpenJournal(dir+"/journal", opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { journal.Close(); store.Close() })
	return &member{store: store, journal: journal}
}

// BenchmarkPull measures the whole copy over NATS (one server, in
// process): the leader's Collect and encoding, the transfer, the
// follower's decoding and Apply, one pull in flight, against the
// reference in the same run, the leader's own appends. ns/op is per
// record of 1 KiB.
func BenchmarkPull(b *testing.B) {
	b.Run("leader-appends", func(b *testing.B) {
		leader := newBenchMember(b)
		b.SetBytes(1024)
		b.ResetTimer()
		leadBench(b, leader, b.N, 16)
	})
	b.Run("follower-pulls", func(b *testing.B) {
		nc := startNATS(b, 1<<20)
		leader, follower := newBenchMember(b), newBenchMember(b)
		leaderEpochs, err := logstore.OpenEpochs(b.TempDir() + "/epochs")
		if err != nil {
			b.Fatal(err)
		}
		leaderEpochs.Assign(1, 0)
		source := &Source{Store: leader.store, Journal: leader.journal, Epochs: leaderEpochs, MaxPayload: int(nc.MaxPayload()),
			Leading: func() (uint64, bool) { return 1, true },
			Report:  func(string, uint64) (uint64, bool) { return 0, true }}
		sub, err := source.Serve(nc, PullSubject("g", "leader"))
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		followerEpochs, err := logstore.OpenEpochs(b.TempDir() + "/epochs")
		if err != nil {
			b.Fatal(err)
		}
		sink := NewSink(follower.store, follower.journal, followerEpochs, "follower")
		defer sink.Close()
		leadBench(b, leader, b.N, 16)
		b.SetBytes(1024)
		b.ResetTimer()
		for follower.journal.End() < leader.journal.End() {
			if _, _, err := sink.Pull(context.Background(), nc, PullSubject("g", "leader"), 1<<20, 0); err != nil {
				b.Fatal(err)
			}
		}
		sink.Settle()
	})
}
