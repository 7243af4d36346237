package logstore

// Writing through the store: appends to a subject's log, a new subject's
// log made with its first records, and the waits for durability.
//
// A subject's directory comes into being with its first record. Its log
// is made under a temporary ".new-" name (makeLogDir), the first records
// appended and synced, and only then is the directory renamed to its
// name and the data directory synced (placeLogDir). Until the rename
// nothing of the subject is visible: not to Has, Subjects or Acquire, not
// to a long poll waiting on Created, and no ack can call a record of it
// durable. If the first record cannot be stored (too large, a full disk),
// the temporary directory is removed and the subject was never there.
// A crash at any point leaves either a ".new-" directory, which OpenStore
// removes, or the subject with its first record durable.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Append appends entries to the log of subject, in order, with the
// results of Log.AppendBatch: the offset of the first, how many were
// stored, and, when that is fewer than len(entries), why entries[n] was
// not (none after it was tried); when all were stored, an error says that
// their sync failed under SyncAlways. It sets each stored entry's
// Timestamp to the one stored. One entry alone goes through the mapping
// as Log.Append writes it; more go with one pwritev.
//
// A subject with no log gets one with these records (see above): a new
// subject's log holds its first records, synced, when Append returns.
// When none of them could be stored, nothing of the subject is left. No
// entries: nothing is done, and no log is made.
func (s *Store) Append(subject string, entries []Entry) (first uint64, n int, err error) {
	return s.append(subject, nil, entries)
}

// AppendAt appends entries to the log of subject as exact copies, the
// first at offset (Log.AppendAt says what that means), and returns how
// many were stored. A subject with no log gets one that starts at offset,
// as Append makes one: a replica that starts copying a log whose front
// retention already deleted holds it from there on. Offsets below it are
// out of range for its readers, as on a log whose front was deleted.
func (s *Store) AppendAt(subject string, offset uint64, entries []Entry) (n int, err error) {
	_, n, err = s.append(subject, &offset, entries)
	return n, err
}

// append is Append (at nil) and AppendAt (the exact offset at).
func (s *Store) append(subject string, at *uint64, entries []Entry) (first uint64, n int, err error) {
	if err := validSubject(subject); err != nil {
		return 0, 0, err
	}
	if len(entries) == 0 {
		return 0, 0, nil
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, 0, ErrClosed
		}
		if _, exists := s.subjects[subject]; exists {
			l := s.holdOpenLocked(subject)
			s.mu.Unlock()
			if l == nil {
				return s.appendExisting(subject, at, entries)
			}
			defer s.release(subject, l)
			return appendEntries(l, at, entries)
		}
		if e := s.open[subject]; e != nil {
			// Another append is making the log: when it is done the
			// subject has one, or it failed and this one tries.
			s.mu.Unlock()
			<-e.ready
			continue
		}
		e := &storeEntry{subject: subject, ready: make(chan struct{}), refs: 1, making: true}
		s.open[subject] = e
		s.mu.Unlock()
		return s.makeLog(e, at, entries)
	}
}

// appendExisting appends entries to the log of subject, which has one.
func (s *Store) appendExisting(subject string, at *uint64, entries []Entry) (uint64, int, error) {
	l, err := s.acquire(subject)
	if err != nil {
		return 0, 0, err
	}
	defer s.release(subject, l)
	return appendEntries(l, at, entries)
}

// appendEntries appends entries to l as Store.Append says (one alone
// through the mapping, Log.Append; more with Log.AppendBatch), or as
// exact copies from *at (Log.AppendAt).
func appendEntries(l *Log, at *uint64, entries []Entry) (uint64, int, error) {
	if at != nil {
		n, err := l.AppendAt(*at, entries)
		return *at, n, err
	}
	if len(entries) > 1 {
		return l.AppendBatch(entries)
	}
	e := &entries[0]
	offset, timestamp, err := l.appendRecord(e.Timestamp, e.Headers, e.Data)
	if err != nil {
		return l.EndOffset(), 0, err
	}
	e.Timestamp = timestamp
	return offset, 1, l.published(offset)
}

// makeLog makes the log of the subject of e, which has none, with entries
// as its first records: in a ".new-" directory, synced, then renamed to
// its name. e is in the open map with making set; the subject becomes
// visible, with e's log open in it, only once the rename is durable.
func (s *Store) makeLog(e *storeEntry, at *uint64, entries []Entry) (first uint64, n int, err error) {
	tmp, err := makeLogDir(s.dir, e.subject, s.opts.faults)
	if err != nil {
		err = asNoSpace(fmt.Sprintf("creating the log directory of subject %q", e.subject), err)
		// Counted like any open that fails (openLog reports the others),
		// so that every attempt has one outcome.
		s.opts.Observer.Recovered(e.subject, Recovery{Err: err})
		s.abandon(e, nil, "", err)
		return 0, 0, err
	}
	base := uint64(0)
	if at != nil {
		base = *at
	}
	l, err := openLog(tmp, e.subject, &s.opts, false, false, base)
	if err != nil {
		err = asNoSpace("opening a log", fmt.Errorf("logstore: open log of %q: %w", e.subject, err))
		s.abandon(e, nil, tmp, err)
		return 0, 0, err
	}
	first, n, err = appendEntries(l, at, entries)
	if n == 0 {
		s.abandon(e, l, tmp, err)
		return first, 0, err
	}
	// Durable before the subject exists, so that no ack can call a record
	// of it durable before its directory is there for good.
	if syncErr := l.Sync(); syncErr != nil {
		s.abandon(e, l, tmp, syncErr)
		return first, 0, syncErr
	}
	final, placeErr := placeLogDir(s.dir, tmp, e.subject, s.opts.faults)
	if placeErr != nil {
		s.abandon(e, l, tmp, placeErr)
		return first, 0, placeErr
	}
	l.writeMu.Lock()
	l.relocateLocked(final)
	l.writeMu.Unlock()

	s.mu.Lock()
	e.dir, e.log, e.making = final, l, false
	s.subjects[e.subject] = final
	s.sorted = nil
	close(s.created)
	s.created = make(chan struct{})
	s.mu.Unlock()
	close(e.ready)
	s.release(e.subject, l)
	return first, n, err
}

// abandon gives up making the log of e: it closes the log (if it was
// opened), removes the temporary directory (if it was made), and forgets
// e, so that the next append to the subject tries again. Nothing of the
// subject was ever visible.
func (s *Store) abandon(e *storeEntry, l *Log, tmp string, err error) {
	if l != nil {
		l.Close()
	}
	if tmp != "" {
		var freed int64
		if entries, readErr := os.ReadDir(tmp); readErr == nil {
			for _, entry := range entries {
				if _, _, ok := parseSegmentName(entry.Name()); ok {
					if info, statErr := entry.Info(); statErr == nil {
						freed += info.Size()
					}
				}
			}
		}
		if removeErr := os.RemoveAll(tmp); removeErr != nil {
			// OpenStore removes it: it never became a log.
			s.opts.Logger.Warn("logstore: removing the directory of a log never made", "path", tmp, "err", removeErr)
		} else {
			s.opts.Observer.DiskBytes(-freed)
		}
	}
	s.mu.Lock()
	if s.open[e.subject] == e {
		delete(s.open, e.subject)
	}
	e.err = err
	s.mu.Unlock()
	close(e.ready)
}

// holdOpenLocked takes a hold on the log of subject when it is open and
// ready (not being opened, made or evicted), and returns it; else nil, and
// the caller goes the long way (acquire). The caller holds s.mu.
func (s *Store) holdOpenLocked(subject string) *Log {
	e := s.open[subject]
	if e == nil || e.closing != nil || e.making {
		return nil
	}
	select {
	case <-e.ready:
	default:
		return nil
	}
	if e.log == nil {
		return nil // failed to open: acquire says why
	}
	e.refs++
	if e.idleAt != nil {
		s.idle.Remove(e.idleAt)
		e.idleAt = nil
	}
	return e.log
}

// RequestSync starts a sync of the log of subject now under SyncBatch,
// without waiting for it, when an ack is coming for records just
// appended (see Log.RequestSync). A log that is not open has nothing to
// sync: closing it synced it.
func (s *Store) RequestSync(subject string) {
	var l *Log
	s.mu.Lock()
	if e := s.open[subject]; e != nil && !e.making {
		select {
		case <-e.ready:
			l = e.log
		default:
		}
	}
	s.mu.Unlock()
	if l != nil {
		l.RequestSync() // a log closed meanwhile has synced: the kick is lost harmlessly
	}
}

// WaitDurable waits until the record at offset of subject's log, one that
// Append returned, is durable under the sync policy, or ctx ends, or
// durability can no longer be promised (ErrSyncFailed). The log may have
// been evicted since the append: an eviction closes it with everything
// synced, so a log that was closed cleanly holds the record durably; one
// whose closing failed is opened again, and recovery syncs what it finds
// before it calls anything durable.
func (s *Store) WaitDurable(ctx context.Context, subject string, offset uint64) error {
	for {
		s.mu.Lock()
		e := s.open[subject]
		_, closedClean := s.closedClean[subject]
		var closing chan struct{}
		if e != nil {
			closing = e.closing
		}
		l := s.holdOpenLocked(subject)
		s.mu.Unlock()
		switch {
		case l != nil:
			defer s.release(subject, l)
			return l.WaitDurable(ctx, offset)
		case e == nil && closedClean:
			return nil
		case closing != nil:
			<-closing // being evicted: it is closedClean after, or not
			continue
		}
		return s.View(subject, func(l *Log) error { return l.WaitDurable(ctx, offset) })
	}
}

// makeLogDir makes a new subject's log directory under a temporary
// ".new-" name in root, with the subject file in it, synced. The log is
// made in it, and the directory renamed to its name (placeLogDir) only
// once the log holds its first records; a crash before leaves the
// temporary directory, which OpenStore removes.
func makeLogDir(root, subject string, faults *faultHooks) (string, error) {
	err := faults.fail("mkdir", filepath.Join(root, subjectDirName(subject)))
	var tmp string
	if err == nil {
		tmp, err = os.MkdirTemp(root, ".new-")
	}
	if err != nil {
		return "", fmt.Errorf("logstore: create log dir: %w", err)
	}
	if err := writeFileSync(filepath.Join(tmp, subjectFileName), []byte(subject)); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return tmp, nil
}

// placeLogDir renames a directory made by makeLogDir to the subject's
// directory name and syncs the data directory: from then on, also after a
// crash, the subject has its log. Every file in the directory was synced,
// and its entry with it (createSegment syncs the directory after making
// a segment's files, which comes after the subject file), before.
func placeLogDir(root, tmp, subject string, faults *faultHooks) (string, error) {
	final := filepath.Join(root, subjectDirName(subject))
	if err := faults.doRename(tmp, final); err != nil {
		return "", fmt.Errorf("logstore: create log dir: %w", err)
	}
	if err := syncDir(root); err != nil {
		// Whether the rename is durable is not known: take it back out of
		// sight, under a name that OpenStore removes.
		if backErr := os.Rename(final, tmp); backErr != nil {
			return "", fmt.Errorf("%w (and moving it back to %s: %v)", err, tmp, backErr)
		}
		return "", err
	}
	return final, nil
}
