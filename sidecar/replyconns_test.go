package sidecar

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// (package harness imports this one, so the test runs its own server.)
func TestAcksLeaveOnCapturesConnectionUnlessItIsDown(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	connect := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	capture, api := connect(), connect()
	r := replyConns{capture: capture, api: api}
	if r.conn() != capture {
		t.Fatal("with both connected, acks should leave on capture's connection (echo off)")
	}
	capture.Close()
	if r.conn() != api {
		t.Fatal("with capture's connection down, acks should leave on the API's")
	}
}
