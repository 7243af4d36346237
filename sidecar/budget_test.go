package sidecar

import (
	"testing"
	"time"

	"github.com/voik/voik/messages"
)

func TestReplyBudgetBoundsTheWholeAndEachRequester(t *testing.T) {
	b := newReplyBudget(100) // a requester may hold 25
	steps := []struct {
		name      string
		requester string
		reserve   int64 // < 0: release that much
		want      overBudget
		used      int64
	}{
		{"a takes its share", "a", 25, withinBudget, 25},
		{"a past its share", "a", 1, shareFull, 25},
		{"b is still served", "b", 25, withinBudget, 50},
		{"c", "c", 25, withinBudget, 75},
		{"d fills the budget", "d", 25, withinBudget, 100},
		{"e finds it full", "e", 1, budgetFull, 100},
		{"a gives back", "a", -25, withinBudget, 75},
		{"e is served again", "e", 10, withinBudget, 85},
	}
	for _, step := range steps {
		if step.reserve < 0 {
			b.release(step.requester, -step.reserve)
		} else if got := b.reserve(step.requester, step.reserve); got != step.want {
			t.Fatalf("%s: reserve %d = %v, want %v", step.name, step.reserve, got, step.want)
		}
		if got := b.inUse(); got != step.used {
			t.Fatalf("%s: %d bytes in use, want %d", step.name, got, step.used)
		}
	}
	if _, held := b.holders["a"]; held {
		t.Fatal("a requester that holds nothing stays in the map")
	}
}

func TestRequesterIsTheReplySubjectWithoutItsLastToken(t *testing.T) {
	for reply, want := range map[string]string{
		"_INBOX.conn123.req7":   "_INBOX.conn123", // nats.go, nats.js, the CLI: one per connection
		"_INBOX.unique456":      "_INBOX.unique456",
		"app.inbox.alice.token": "app.inbox.alice",
		"single":                "single",
	} {
		if got := requesterOf(reply); got != want {
			t.Errorf("requesterOf(%q) = %q, want %q", reply, got, want)
		}
	}
}

func TestPagePoolKeepsUpToItsLimitAndLetsGoWhenIdle(t *testing.T) {
	big := func() *messages.FetchReplyBuilder {
		b := new(messages.FetchReplyBuilder)
		b.Add(0, 0, nil, make([]byte, 40<<10))
		return b
	}
	p := &pagePool{limit: 100 << 10}
	first, second, third := big(), big(), big()
	p.put(first)
	p.put(second)
	p.put(third) // past the limit: left to the collector
	if p.freeBytes > p.limit || len(p.free) != 2 {
		t.Fatalf("pool holds %d builders, %d bytes, limit %d", len(p.free), p.freeBytes, p.limit)
	}
	if got := p.get(); got != second {
		t.Fatal("get should hand out the most recently put builder")
	}
	if dropped := p.trim(time.Now()); dropped != 0 {
		t.Fatalf("trimmed %d bytes right after a get", dropped)
	}
	if dropped := p.trim(time.Now().Add(pagePoolIdle)); dropped == 0 || len(p.free) != 0 || p.freeBytes != 0 {
		t.Fatalf("an idle pool kept %d builders (%d bytes), dropped %d", len(p.free), p.freeBytes, dropped)
	}
}
