package group

import (
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
