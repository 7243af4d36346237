package group

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// The journal grows by a record for every record the group stores: each
// member deletes its front, whole segments below the committed offset
// less a margin kept for members catching up (TrimJournal). What those
// pointers said is folded into the base first: below journal offset At,
// per subject, the end of the records they named and the first offset
// the start markers set. Whoever reads the journal to know what it names
// (ReadNamed, the committed view) starts from the base and reads the
// journal from At on.
//
// A member whose journal ends below its leader's first journal offset
// cannot copy the journal: it takes a snapshot instead (Sink.Snapshot),
// copying each subject's log up to where the leader's base and journal
// say it ends at a committed journal offset, and starts its journal
// afresh there with that as its base.

// Base is what the journal no longer holds, below journal offset At.
type Base struct {
	At     uint64            `msgpack:"at"`
	Ends   map[string]uint64 `msgpack:"ends"`
	Starts map[string]uint64 `msgpack:"starts,omitempty"`
}

// fold adds pointers to the base (At is the caller's to move); its maps
// are not nil (clone).
func (b *Base) fold(pointers []Pointer) {
	for _, p := range pointers {
		if p.Start {
			b.Starts[p.Subject] = max(b.Starts[p.Subject], p.Offset)
		} else {
			b.Ends[p.Subject] = max(b.Ends[p.Subject], p.Offset+1)
		}
	}
}

// clone is a copy of b whose maps are never nil.
func (b *Base) clone() *Base {
	c := &Base{At: b.At, Ends: maps.Clone(b.Ends), Starts: maps.Clone(b.Starts)}
	if c.Ends == nil {
		c.Ends = map[string]uint64{}
	}
	if c.Starts == nil {
		c.Starts = map[string]uint64{}
	}
	return c
}

// readJournal folds the journal's pointers from the base's At up to to
// into a copy of the base, whose At becomes to.
func (b *Base) readJournal(journal *Journal, to uint64) (*Base, error) {
	c := b.clone()
	for at := max(b.At, journal.Log().FirstOffset()); at < to; {
		pointers, err := journal.Read(at, int(min(to-at, 4096)))
		if err != nil {
			return nil, err
		}
		if len(pointers) == 0 {
			return nil, fmt.Errorf("group: journal read at %d returned nothing before %d", at, to)
		}
		c.fold(pointers)
		at += uint64(len(pointers))
	}
	c.At = max(c.At, to)
	return c, nil
}

// BaseFile is a member's base, kept in a file of its own (written whole,
// synced, renamed into place).
type BaseFile struct {
	path string
	mu   sync.Mutex
	base *Base
}

// OpenBase reads the base in path; without one, the journal holds
// everything (At 0).
func OpenBase(path string) (*BaseFile, error) {
	f := &BaseFile{path: path, base: &Base{Ends: map[string]uint64{}, Starts: map[string]uint64{}}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	var b Base
	if err := msgpack.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("group: base %s: %w", path, err)
	}
	f.base = b.clone()
	return f, nil
}

// Get is the base now; the caller must not change it.
func (f *BaseFile) Get() *Base {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base
}

// set makes b the base, durably.
func (f *BaseFile) set(b *Base) error {
	raw, err := msgpack.Marshal(b)
	if err != nil {
		return err
	}
	if err := WriteFileSynced(f.path, raw); err != nil {
		return fmt.Errorf("group: writing the base: %w", err)
	}
	f.mu.Lock()
	f.base = b
	f.mu.Unlock()
	return nil
}

// TrimJournal deletes the journal's segments that hold nothing at or
// above keep, after folding their pointers into the base, and returns
// the journal offset it starts at now. The base is durable before any
// segment goes, so that a crash between the two leaves a base a little
// ahead of the journal's first offset, which readers skip to.
func TrimJournal(journal *Journal, base *BaseFile, keep uint64) (uint64, error) {
	cut := journal.Log().SegmentBase(min(keep, journal.End()))
	b := base.Get()
	if cut <= max(b.At, journal.Log().FirstOffset()) {
		return journal.Log().FirstOffset(), nil
	}
	next, err := b.readJournal(journal, cut)
	if err != nil {
		return journal.Log().FirstOffset(), err
	}
	if err := base.set(next); err != nil {
		return journal.Log().FirstOffset(), err
	}
	if _, err := journal.Log().DropBefore(cut); err != nil {
		return journal.Log().FirstOffset(), err
	}
	return journal.Log().FirstOffset(), nil
}

// WriteFileSynced writes path whole, through a temporary file that is
// synced and renamed into place; the directory is synced after.
func WriteFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
