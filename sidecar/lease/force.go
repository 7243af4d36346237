package lease

import (
	"context"
	"errors"
	"fmt"
)

// ForceLead is the operator's escape hatch after a group has lost a
// majority of its members for good: it stores a state in which nobody
// leads and m alone is in sync, so that m (and only m) takes the lead at
// its next look, in a new epoch. Records that were committed only on the
// members left out, and not on m, are lost; the members that come back
// follow m and drop what m does not hold. It returns the state it
// replaced.
func ForceLead(ctx context.Context, reg Register, m Member) (State, error) {
	if m.Instance == "" || m.DataDirID == "" {
		return State{}, errors.New("lease: force-lead needs the member's instance and data dir identity")
	}
	next := State{InSync: []Member{m}}.Marshal()
	for range 5 {
		value, rev, err := reg.Get(ctx)
		if errors.Is(err, ErrNotFound) {
			if _, err := reg.Create(ctx, next); err == nil || !errors.Is(err, ErrConflict) {
				return State{}, err
			}
			continue
		}
		if err != nil {
			return State{}, err
		}
		old, err := Unmarshal(value)
		if err != nil {
			old = State{} // replaced all the same: nobody can lead on it
		}
		if _, err := reg.Update(ctx, next, rev); err == nil {
			return old, nil
		} else if !errors.Is(err, ErrConflict) {
			return State{}, err
		}
	}
	return State{}, fmt.Errorf("lease: force-lead: the state kept changing under it; is a leader still writing?")
}
