package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLeaderReadsRebindsAHandleBoundWhileDirectGetsWereOn: a member that
// opened the bucket just after another created it, and before that one
// turned direct gets off, holds a handle that sends its Gets to the
// direct-get subject. leaderReads must give back a handle that reads from
// the leader, or every Get of that member gets "no responders" for good.
func TestLeaderReadsRebindsAHandleBoundWhileDirectGetsWereOn(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	early, err := createBucket(ctx, js, 1) // direct gets on, as created
	if err != nil {
		t.Fatal(err)
	}
	if _, err := early.Create(ctx, "g", []byte("state")); err != nil {
		t.Fatal(err)
	}
	// The creator turns them off (its own leaderReads).
	if _, err := leaderReads(ctx, js, early); err != nil {
		t.Fatal(err)
	}
	if _, err := early.Get(ctx, "g"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("Get through the handle bound while direct gets were on: %v; want no responders (else this test shows nothing)", err)
	}
	kv, err := leaderReads(ctx, js, early)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "g")
	if err != nil || string(e.Value()) != "state" {
		t.Fatalf("Get through leaderReads' handle: %v, %v; want the stored state", e, err)
	}
}
