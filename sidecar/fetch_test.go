package sidecar

import (
	"context"
	"fmt"
	"testing"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/messages"
)

// stuckCommit is a group member's visibility that knows of the commit of
// the first committed records of every log and hears of no more: a
// member whose group is changing its leader or in-sync set.
type stuckCommit struct {
	wholeLogs
	committed uint64
	waits     int
}

func (v *stuckCommit) hidden(string) bool { return v.committed == 0 }
func (v *stuckCommit) catchUpSubject(context.Context, string) {
	v.waits++
}

func (v *stuckCommit) end(*logstore.Log) uint64 { return v.committed }
func (v *stuckCommit) lags() bool               { return true }
func (v *stuckCommit) catchUp(context.Context, *logstore.Log, uint64) uint64 {
	v.waits++
	return v.committed
}

// tenRecords is a log of ten records at offsets 0-9.
func tenRecords(t *testing.T) *logstore.Log {
	t.Helper()
	log, err := logstore.OpenLog(t.TempDir(), "orders", logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	for i := range 10 {
		if _, _, err := log.Append(0, nil, fmt.Appendf(nil, "record %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return log
}

func readerAPI(vis visibility) (*api, *request) {
	a := &api{vis: vis, shutdown: context.Background(), working: make(chan struct{}, 1), polls: make(chan struct{}, 1)}
	a.working <- struct{}{}
	return a, &request{slot: a.working}
}

// A member that holds records past the commit it knows, and does not hear
// of their commit while it waits, answers a read from among them 503
// (retry), not 416: another member may have served those offsets, and a
// 416 would tell the reader the log is shorter than it was. Past what it
// holds, and standalone, a read past the end stays a 416.
func TestAReadPastTheKnownCommitOfRecordsHeldHereIs503NotA416(t *testing.T) {
	log := tenRecords(t)
	for _, tc := range []struct {
		offset uint64
		want   int
	}{
		{7, messages.CodeUnavailable},  // held, commit not heard of
		{10, messages.CodeUnavailable}, // the record before it is held
		{11, messages.CodeOutOfRange},  // beyond everything held
	} {
		for _, verb := range []string{"FETCH", "REPLAY"} {
			vis := &stuckCommit{committed: 6}
			a, r := readerAPI(vis)
			offset := tc.offset
			var err *messages.Error
			if verb == "FETCH" {
				_, err = a.fetchFrom(r, log, "orders", messages.FetchRequest{Offset: &offset}, context.Background(), nil)
			} else {
				err = a.replayFrom(nil, log, "orders", messages.ReplayRequest{Offset: &offset, Deliver: "elsewhere"})
			}
			if err == nil || err.Code != tc.want {
				t.Errorf("%s at offset %d, commit known up to 6 of 10 held: %v, want code %d", verb, offset, err, tc.want)
			}
			if vis.waits == 0 {
				t.Errorf("%s at offset %d answered without waiting for news of the commit", verb, offset)
			}
		}
	}
	a, r := readerAPI(wholeLogs{})
	offset := uint64(11)
	if _, err := a.fetchFrom(r, log, "orders", messages.FetchRequest{Offset: &offset}, context.Background(), nil); err == nil || err.Code != messages.CodeOutOfRange {
		t.Errorf("standalone FETCH at offset 11 of a log of 10: %v, want 416", err)
	}
}

// The same for a subject whose first records a member holds and has not
// heard are committed: a 503 to retry, where a subject it holds nothing
// of is a 404.
func TestASubjectHeldHereButNotKnownCommittedIs503NotA404(t *testing.T) {
	store, err := logstore.OpenStore(t.TempDir(), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, _, err := store.Append("orders", []logstore.Entry{{Data: []byte("first")}}); err != nil {
		t.Fatal(err)
	}
	vis := &stuckCommit{}
	a, _ := readerAPI(vis)
	a.store = store
	served := func(*logstore.Log) *messages.Error { return nil }
	if err := a.withLog("orders", served); err == nil || err.Code != messages.CodeUnavailable {
		t.Errorf("a subject held, none of it known committed: %v, want 503", err)
	}
	if vis.waits == 0 {
		t.Error("answered without waiting for news of the commit")
	}
	if err := a.withLog("payments", served); err == nil || err.Code != messages.CodeNotFound {
		t.Errorf("a subject held nowhere here: %v, want 404", err)
	}
}
