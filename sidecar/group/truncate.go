package group

import (
	"errors"

	"github.com/voik/voik/logstore"
)

// TruncationPoint is where a member that rejoins its group cuts its
// journal before it copies again: Kafka's KIP-101, by leader epoch, with
// KIP-279's rule for epochs the leader never had. The member asked the
// leader where its latest epoch ended there; the leader answered with the
// latest epoch it holds that is not above the member's (leaderHeld, from
// logstore.Epochs.EndOffsetFor, found false when it holds none) and where
// that epoch ended on the leader (leaderEnd).
//
//   - Same epoch: the member keeps what it holds below leaderEnd; past it
//     are records of that epoch that the leader never had, so were never
//     committed.
//   - An older one: the member had later epochs the leader never saw (it
//     led, or followed a leader, that the rest of the group passed by).
//     It keeps no more than where that older epoch ended on each side.
//   - None: nothing in common past the start; ok is false, and the member
//     starts its copy afresh from the leader.
//
// A high watermark is no substitute: it can keep a record that the new
// leader wrote differently at the same offset.
func TruncationPoint(local *logstore.Epochs, localEnd uint64, leaderHeld logstore.EpochStart, leaderEnd uint64, found bool) (offset uint64, ok bool) {
	if !found {
		return 0, false
	}
	point := min(leaderEnd, localEnd)
	latest, any := local.Latest()
	if !any || leaderHeld.Epoch >= latest.Epoch {
		return point, true
	}
	_, ownEnd, ownFound := local.EndOffsetFor(leaderHeld.Epoch, localEnd)
	if !ownFound {
		return 0, false
	}
	return min(point, ownEnd), true
}

// Truncate cuts a follower back to journal offset point (a
// DivergedError's): the records its journal points at from point on,
// subject by subject, then the journal, then the epochs that begin
// there. It returns how many records of subjects it dropped. Each step
// is one that can be done twice: a follower that stops in the middle
// pulls, is told the same point, and finishes.
func (k *Sink) Truncate(point uint64) (dropped uint64, err error) {
	// Batches still syncing count only once durable: let them finish
	// before what they hold is cut, so that none marks past the cut.
	k.dropAhead()
	k.Settle()
	if end := k.Journal.End(); point < end {
		pointers, err := k.Journal.Read(point, int(end-point))
		if err != nil {
			return 0, err
		}
		lowest := map[string]uint64{} // per subject, the lowest offset pointed at
		for _, p := range pointers {
			if o, ok := lowest[p.Subject]; !p.Start && (!ok || p.Offset < o) {
				lowest[p.Subject] = p.Offset
			}
		}
		for subject, offset := range lowest {
			// A pointer below the log's first offset names a record the
			// leader's retention deleted: what follows it goes.
			n, err := k.Store.TruncateTo(subject, max(offset, k.firstOffset(subject)))
			dropped += n
			if err != nil && !errors.Is(err, logstore.ErrNotFound) {
				return dropped, err
			}
		}
		if _, err := k.Journal.Log().TruncateTo(point); err != nil {
			return dropped, err
		}
	}
	k.mu.Lock()
	k.durable = min(k.durable, point)
	k.mu.Unlock()
	return dropped, k.Epochs.TruncateFrom(point)
}

// firstOffset is the first offset of subject's log here (0 without one).
func (k *Sink) firstOffset(subject string) uint64 {
	var first uint64
	k.Store.View(subject, func(l *logstore.Log) error { first = l.FirstOffset(); return nil })
	return first
}
