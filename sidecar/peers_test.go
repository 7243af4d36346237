package sidecar

import (
	"testing"
	"time"
)

// TestPeerBookForgetsThePeersItStopsHearingAndThoseThatSayGoodbye: a peer
// stays in the book presenceForget after it was last heard, and leaves at
// once when it says it is gone; a group is one peer however many members
// announce it.
func TestPeerBookForgetsThePeersItStopsHearingAndThoseThatSayGoodbye(t *testing.T) {
	var b peerBook
	t0 := time.Unix(1000, 0)
	standalone := presence{Peer: "voik host a1", Instance: "host", Filters: []string{"payments.>"}}
	group := presence{Peer: "group orders", Group: "orders", Instance: "voik-0", Filters: []string{"orders.>"}}
	b.note(standalone, t0)
	b.note(group, t0)
	b.note(presence{Peer: "group orders", Group: "orders", Instance: "voik-1"}, t0.Add(time.Second))
	if live := b.live(t0.Add(presenceForget - time.Millisecond)); len(live) != 2 {
		t.Fatalf("just inside presenceForget: %v, want both peers", live)
	}
	live := b.live(t0.Add(presenceForget))
	if _, ok := live["voik host a1"]; ok || len(live) != 1 {
		t.Fatalf("presenceForget after the standalone voik was last heard: %v, want the group alone", live)
	}
	b.note(standalone, t0.Add(2*time.Second))
	gone := standalone
	gone.Gone = true
	b.note(gone, t0.Add(2*time.Second+time.Millisecond))
	if live := b.live(t0.Add(2 * time.Second)); len(live) != 1 {
		t.Fatalf("after its goodbye: %v, want the group alone", live)
	}
}

// SUBJECTS always waits for this voik's own subjects: with nobody in the
// book yet (a request just after a start, before the first
// announcement) it asks this voik alone, not nobody.
func TestSubjectsAsksThisVoikEvenBeforeItAnnouncedItself(t *testing.T) {
	a := &api{self: selfPresence("", "host", []string{">"}), peers: &peerBook{}}
	now := time.Unix(1000, 0)
	if want := a.askWhom(now); len(want) != 1 || want[a.self.Peer].Instance != "host" {
		t.Fatalf("with an empty book: %v, want this voik alone", want)
	}
	other := presence{Peer: "group orders", Group: "orders", Instance: "voik-0"}
	a.peers.note(other, now)
	if want := a.askWhom(now); len(want) != 2 {
		t.Fatalf("with a peer heard: %v, want it and this voik", want)
	}
}
