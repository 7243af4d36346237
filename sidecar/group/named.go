package group

import (
	"errors"
	"fmt"

	"github.com/voik/voik/logstore"
)

// A record and its pointer are two appends: a member that stops between
// them holds records that no pointer names. A follower heals them as it
// copies (Apply). A member that takes the lead must drop them first: its
// next append to the subject would leave them out of every copy, which
// would then hold the subject's later records at other offsets than it.
//
// Named is what the journal names of each subject: read once when a
// member takes the lead (the base, and the journal after it), then kept
// up to date as pointers are journaled or copied.
type Named struct {
	ends map[string]uint64 // subject -> one past the highest offset named
}

// ReadNamed reads the base and the journal after it.
func ReadNamed(journal *Journal, base *Base) (*Named, error) {
	b, err := base.readJournal(journal, journal.End())
	if err != nil {
		return nil, err
	}
	return &Named{ends: b.Ends}, nil
}

// Note records pointers just journaled or copied. A zero Named is ready
// for use (a data dir that joins a group names its records into one).
func (n *Named) Note(pointers []Pointer) {
	if n.ends == nil {
		n.ends = map[string]uint64{}
	}
	for _, p := range pointers {
		if !p.Start {
			n.ends[p.Subject] = max(n.ends[p.Subject], p.Offset+1)
		}
	}
}

// End is one past the highest offset of subject the journal names, and
// whether it names any.
func (n *Named) End(subject string) (uint64, bool) {
	end, ok := n.ends[subject]
	return end, ok
}

// DropUnnamed drops the records of every subject of store past what the
// journal names, and returns how many it dropped. A subject the journal
// names nothing of holds only records no pointer names: all of them go
// (NameAll names a data dir's records when a group starts on it).
func (n *Named) DropUnnamed(store *logstore.Store) (uint64, error) {
	var dropped uint64
	for _, subject := range store.Subjects() {
		end, named := n.End(subject)
		err := store.View(subject, func(l *logstore.Log) error {
			if !named {
				end = l.FirstOffset()
			}
			if l.EndOffset() <= end {
				return nil
			}
			d, err := l.TruncateTo(end)
			dropped += d
			return err
		})
		if err != nil && !errors.Is(err, logstore.ErrNotFound) {
			return dropped, fmt.Errorf("group: dropping records of %q no pointer names: %w", subject, err)
		}
	}
	return dropped, nil
}

// NameAll journals a pointer for every record of store that the journal
// does not name yet, subject by subject: what a member does when a group
// starts on a data dir that already holds records (a standalone voik's),
// so that they are the group's, and copied.
func (n *Named) NameAll(store *logstore.Store, journal *Journal) (uint64, error) {
	var named uint64
	for _, subject := range store.Subjects() {
		from, _ := n.End(subject)
		var pointers []Pointer
		err := store.View(subject, func(l *logstore.Log) error {
			for offset := max(from, l.FirstOffset()); offset < l.EndOffset(); offset++ {
				pointers = append(pointers, Pointer{Subject: subject, Offset: offset})
			}
			return nil
		})
		if err != nil {
			return named, err
		}
		for len(pointers) > 0 {
			batch := pointers[:min(len(pointers), 4096)]
			if _, err := journal.Append(batch); err != nil {
				return named, err
			}
			n.Note(batch)
			named += uint64(len(batch))
			pointers = pointers[len(batch):]
		}
	}
	return named, nil
}
