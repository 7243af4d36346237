package lease

import (
	"context"
	"testing"
	"time"
)

// TestForceLeadMakesTheNamedMemberAloneLead: after ForceLead, the member
// named takes the lead at its next look, in a newer epoch, alone in sync;
// another member of the old set cannot.
func TestForceLeadMakesTheNamedMemberAloneLead(t *testing.T) {
	s, a, others := group(t, "b", "c")
	b, c := others[0], others[1]
	before := epochOf(t, a, s.clk.Now())
	old, err := ForceLead(context.Background(), s.fake, c.m)
	if err != nil {
		t.Fatal(err)
	}
	if old.Leader != "a" || len(old.InSync) != 3 {
		t.Fatalf("replaced %+v, want a leading three", old)
	}
	s.round(a) // a's renewal finds the state changed: it steps down
	if a.held(s.clk.Now()) {
		t.Fatal("a still leads after force-lead")
	}
	s.round(b)
	if b.held(s.clk.Now()) {
		t.Fatal("b took the lead: only c is in sync")
	}
	s.round(c)
	if ep := epochOf(t, c, s.clk.Now()); ep <= before {
		t.Fatalf("c leads in epoch %d, not above %d", ep, before)
	}
	st, _ := s.fake.Load()
	if len(st.InSync) != 1 || st.InSync[0] != c.m {
		t.Fatalf("in sync after force-lead: %v", st.InSync)
	}
	s.clk.Advance(time.Second)
	s.round(b)
	if b.held(s.clk.Now()) {
		t.Fatal("b leads beside c")
	}
}

func TestForceLeadOnAnEmptyRegisterCreatesTheState(t *testing.T) {
	f := NewFake()
	if _, err := ForceLead(context.Background(), f, Member{"x", "d"}); err != nil {
		t.Fatal(err)
	}
	if st, rev := f.Load(); rev == 0 || st.Leader != "" || len(st.InSync) != 1 {
		t.Fatalf("state %+v at %d", st, rev)
	}
}
