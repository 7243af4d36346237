package logstore

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Store is a data directory of logs, one per subject. It knows every
// subject that has a log, and keeps at most Options.MaxOpenLogs of them
// open: a log that nobody holds is closed when the cap is passed (least
// recently used first) and reopened, recovered, on the next Acquire.
type Store struct {
	dir  string
	opts Options

	mu sync.Mutex
	// Guarded by mu.
	subjects map[string]string      // subject → log directory, for every log on disk
	sorted   []string               // subjects sorted bytewise; nil when it must be rebuilt
	open     map[string]*storeEntry // logs open, opening or closing
	// closedClean holds the subjects whose logs an eviction closed with
	// everything synced: reopening them need not sync again. A log that
	// is evicted and reopened often (more active subjects than
	// MaxOpenLogs) would otherwise pay an fdatasync per segment each time.
	closedClean map[string]struct{}
	idle        list.List // open entries nobody holds, most recently used at the front
	closed      bool
	created     chan struct{} // closed (and replaced) when a subject gets its log

	stop chan struct{}
	done chan struct{}
}

// storeEntry is a log in the open map. ready is closed once the log has
// been opened (log or err set); refs counts Acquire calls not yet released.
type storeEntry struct {
	subject string
	dir     string
	ready   chan struct{}
	log     *Log
	err     error
	refs    int
	idleAt  *list.Element // non-nil while in Store.idle
	closing chan struct{} // non-nil while being evicted or deleted; closed when done
	// created is set when this entry made the log (it had none on disk);
	// unused is set by ReleaseUnused. Both set: the last release deletes
	// the log if it still holds no record.
	created, unused bool
}

// OpenStore opens the data directory dir, creating it if needed, and
// learns every subject stored in it. Logs themselves are opened on demand.
func OpenStore(dir string, opts Options) (*Store, error) {
	resolved, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logstore: create data dir: %w", err)
	}
	s := &Store{
		dir:         dir,
		opts:        resolved,
		subjects:    map[string]string{},
		open:        map[string]*storeEntry{},
		closedClean: map[string]struct{}{},
		created:     make(chan struct{}),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	if err := s.loadSubjects(); err != nil {
		return nil, err
	}
	go s.runRetention()
	return s, nil
}

// loadSubjects reads the names of all log directories: a stat of each
// one's subject file (a foreign directory has none), and a read of it only
// for a shortened name. Leftovers of an interrupted createLogDir are removed.
//
// Only a directory without a subject file is plainly not a log. One whose
// subject file cannot be looked at (EACCES, EIO) may be a log that cannot
// be served: when its name spells the subject it is listed, so that
// Acquire opens it and reports what fails instead of ErrNotFound, as if
// nothing had ever been stored. A shortened name does not give the
// subject away, so that directory can only be skipped, loudly.
func (s *Store) loadSubjects() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("logstore: list data dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(s.dir, name)
		if strings.HasPrefix(name, ".new-") {
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("logstore: remove unfinished log dir: %w", err)
			}
			continue
		}
		// A log directory always holds its subject file (createLogDir
		// renames it into place complete). The name spells the subject
		// unless it was shortened; then the file is read.
		subject, ok := subjectFromDirName(name)
		if ok {
			err = s.opts.faults.doLstat(filepath.Join(path, subjectFileName))
		} else {
			subject, err = readSubjectFile(path, s.opts.faults)
		}
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			s.opts.Logger.Warn("logstore: skipping directory that is not a log", "path", path, "err", err)
			continue
		case ok:
			s.opts.Logger.Warn("logstore: cannot look at the subject file of a log directory; listing its subject, so that opening it reports what fails",
				"subject", subject, "path", path, "err", err)
		default:
			s.opts.Logger.Warn("logstore: skipping directory whose subject file cannot be read; a log may be hidden there",
				"path", path, "err", err)
			continue
		}
		s.subjects[subject] = path
	}
	return nil
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Has says whether subject has a log.
func (s *Store) Has(subject string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subjects[subject]
	return ok
}

// Created returns a channel that is closed when the next subject gets a
// log, for waiting on a subject that has none yet: take the channel, check
// Has, then wait on the channel.
func (s *Store) Created() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// Subjects returns every subject with a log, sorted bytewise. The slice is
// shared: do not modify it.
func (s *Store) Subjects() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sorted == nil {
		s.sorted = make([]string, 0, len(s.subjects))
		for subject := range s.subjects {
			s.sorted = append(s.sorted, subject)
		}
		slices.Sort(s.sorted)
	}
	return s.sorted
}

func validSubject(subject string) error {
	if subject == "" || strings.IndexByte(subject, 0) >= 0 {
		return fmt.Errorf("%w: %q", ErrInvalidSubject, subject)
	}
	return nil
}

// Acquire returns the open log of subject, opening it if needed; with
// create it makes the log when there is none, without it a missing log is
// ErrNotFound. Every successful Acquire must be paired with Release. A log
// opened with corruption is returned (readable, refusing appends) with a
// nil error; Log.Err reports the corruption. A log that exists but cannot
// be opened at all returns the error, naming the subject; it is not
// remembered, so every Acquire tries again and reports what it meets.
func (s *Store) Acquire(subject string, create bool) (*Log, error) {
	if err := validSubject(subject); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		e := s.open[subject]
		if e != nil && e.closing != nil {
			closing := e.closing
			s.mu.Unlock()
			<-closing // an eviction is closing it: open it afresh after
			continue
		}
		if e == nil {
			dir, exists := s.subjects[subject]
			if !exists && !create {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: %q", ErrNotFound, subject)
			}
			e = &storeEntry{subject: subject, dir: dir, ready: make(chan struct{})}
			s.open[subject] = e
			e.refs++
			s.mu.Unlock()
			s.openEntry(e, !exists)
		} else {
			e.refs++
			if e.idleAt != nil {
				s.idle.Remove(e.idleAt)
				e.idleAt = nil
			}
			s.mu.Unlock()
			<-e.ready
		}
		if e.err != nil {
			s.release(subject, nil)
			return nil, e.err
		}
		return e.log, nil
	}
}

// openEntry opens (and, when new, creates) the log of an entry. It runs
// outside the store lock; others acquiring the same subject wait on ready.
func (s *Store) openEntry(e *storeEntry, isNew bool) {
	defer close(e.ready)
	if isNew {
		dir, err := createLogDir(s.dir, e.subject, s.opts.faults)
		if err != nil {
			e.err = asNoSpace(fmt.Sprintf("creating the log directory of subject %q", e.subject), err)
			// Counted like any open that fails (openLog reports the
			// others), so that every attempt has one outcome.
			s.opts.Observer.Recovered(e.subject, Recovery{Err: e.err})
			return
		}
		e.dir = dir
		e.created = true
		// Known from now on, even if its first segment cannot be made
		// (a full disk): the next Acquire opens the directory and retries.
		s.mu.Lock()
		s.subjects[e.subject] = e.dir
		s.sorted = nil
		close(s.created)
		s.created = make(chan struct{})
		s.mu.Unlock()
	}
	s.mu.Lock()
	_, clean := s.closedClean[e.subject]
	delete(s.closedClean, e.subject)
	s.mu.Unlock()
	log, err := openLog(e.dir, e.subject, &s.opts, clean)
	var corrupt *CorruptionError
	switch {
	case errors.As(err, &corrupt) && log != nil:
		s.opts.Logger.Error("logstore: log is corrupt; serving the records before it, refusing appends",
			"subject", e.subject, "err", err)
	case err != nil:
		e.err = asNoSpace("opening a log", fmt.Errorf("logstore: open log of %q: %w", e.subject, err))
		return
	}
	e.log = log
}

// Release gives back a log from Acquire.
func (s *Store) Release(l *Log) { s.release(l.subject, l) }

func (s *Store) release(subject string, l *Log) {
	s.mu.Lock()
	e := s.open[subject]
	if e == nil || e.log != l {
		s.mu.Unlock()
		return
	}
	e.refs--
	if e.refs > 0 {
		s.mu.Unlock()
		return
	}
	if s.closed || e.err != nil && !e.created {
		delete(s.open, subject) // failed to open: forget it, the next Acquire retries
		s.mu.Unlock()
		return
	}
	// A log made for a first record that it never got (refused, or its
	// first segment could not be made) is deleted, not left empty.
	if e.err != nil || e.unused && e.log.EndOffset() == 0 {
		// Forgotten under the lock, so that no Acquire finds it.
		e.closing = make(chan struct{})
		delete(s.subjects, subject)
		delete(s.closedClean, subject)
		s.sorted = nil
		s.mu.Unlock()
		s.deleteUnused(e)
		return
	}
	e.unused = false // it took a record after all
	e.idleAt = s.idle.PushFront(e)
	victims := s.evictLocked()
	s.mu.Unlock()
	s.closeEvicted(victims)
}

// ReleaseUnused gives back l like Release, and asks that the log be
// deleted if it is one this store created and it still holds no record
// when the last holder releases it: a subject whose first message could
// not be stored (too large for a segment, a full disk) is not left behind
// as a log with nothing in it, listed by Subjects. A log found on disk is
// never deleted, whatever it holds (a corrupt one may hold nothing
// readable and still hold data).
func (s *Store) ReleaseUnused(l *Log) {
	s.mu.Lock()
	if e := s.open[l.subject]; e != nil && e.log == l && e.created {
		e.unused = true
	}
	s.mu.Unlock()
	s.release(l.subject, l)
}

// deleteUnused closes and deletes the log of e, which nobody holds and
// which never took a record (e.log is nil when it failed to open). It runs outside the lock; an Acquire that
// comes meanwhile waits for closing and then creates the log afresh.
func (s *Store) deleteUnused(e *storeEntry) {
	var err error
	if e.log != nil {
		err = e.log.Close()
	}
	if err == nil {
		err = removeLogDir(s.dir, e.dir)
	}
	s.mu.Lock()
	if err != nil {
		// Still on disk: known again, so that the next Acquire opens it
		// instead of failing to create it over the directory.
		s.opts.Logger.Error("logstore: deleting a log that never held a record", "subject", e.subject, "err", err)
		s.subjects[e.subject] = e.dir
		s.sorted = nil
	}
	delete(s.open, e.subject)
	close(e.closing)
	s.mu.Unlock()
}

// evictLocked picks idle logs to close while more than MaxOpenLogs are open.
func (s *Store) evictLocked() []*storeEntry {
	var victims []*storeEntry
	for len(s.open)-len(victims) > s.opts.MaxOpenLogs && s.idle.Len() > 0 {
		e := s.idle.Remove(s.idle.Back()).(*storeEntry)
		e.idleAt = nil
		e.closing = make(chan struct{})
		victims = append(victims, e)
	}
	return victims
}

// closeEvicted closes evicted logs outside the lock, then forgets them.
func (s *Store) closeEvicted(victims []*storeEntry) {
	for _, e := range victims {
		err := e.log.Close()
		if err != nil {
			s.opts.Logger.Error("logstore: closing evicted log", "subject", e.subject, "err", err)
		}
		s.mu.Lock()
		if err == nil && e.log.openErr == nil {
			s.closedClean[e.subject] = struct{}{}
		}
		delete(s.open, e.subject)
		close(e.closing)
		s.mu.Unlock()
	}
}

// Append appends one record to the log of subject, creating the log if
// needed. See Log.Append.
func (s *Store) Append(subject string, timestamp int64, headers Headers, data []byte) (uint64, int64, error) {
	l, err := s.Acquire(subject, true)
	if err != nil {
		return 0, 0, err
	}
	defer s.Release(l)
	return l.Append(timestamp, headers, data)
}

// OpenLogs is how many logs are open now.
func (s *Store) OpenLogs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// DurableLag is how many records the open logs hold that are not durable
// yet: appended, waiting for the syncer. Logs that are closed are durable.
func (s *Store) DurableLag() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lag uint64
	for _, e := range s.open {
		select {
		case <-e.ready:
		default:
			continue // still opening
		}
		if e.log != nil {
			lag += e.log.EndOffset() - e.log.DurableOffset()
		}
	}
	return lag
}

// runRetention applies MaxAge to every log now and then, so that a subject
// that stopped receiving still loses its old segments.
func (s *Store) runRetention() {
	defer close(s.done)
	if s.opts.Retention == (Retention{}) {
		<-s.stop
		return
	}
	ticker := time.NewTicker(s.opts.RetentionCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
			s.ApplyRetention()
		}
	}
}

// ApplyRetention applies the retention limits to every log that has more
// than one segment (only those can lose any) and returns how many
// segments it deleted.
func (s *Store) ApplyRetention() int {
	deleted := 0
	for _, subject := range s.Subjects() {
		s.mu.Lock()
		dir := s.subjects[subject]
		_, isOpen := s.open[subject]
		s.mu.Unlock()
		if !isOpen && countSegmentFiles(dir) < 2 {
			continue
		}
		l, err := s.Acquire(subject, false)
		if err != nil {
			continue
		}
		deleted += l.ApplyRetention()
		s.Release(l)
	}
	return deleted
}

func countSegmentFiles(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if _, ext, ok := parseSegmentName(e.Name()); ok && ext == ".log" {
			n++
		}
	}
	return n
}

// Close closes every log, making everything durable. Logs still acquired
// are closed too; their holders see ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	entries := make([]*storeEntry, 0, len(s.open))
	for _, e := range s.open {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.done

	var errs []error
	for _, e := range entries {
		if e.closing != nil {
			<-e.closing
			continue
		}
		<-e.ready
		if e.log != nil {
			errs = append(errs, e.log.Close())
		}
	}
	return errors.Join(errs...)
}

// asNoSpace marks an error of a full disk, a quota or the file size limit,
// met while doing what, as ErrNoSpace, saying what failed: making a new log
// fails the way growing a segment does (a caller may retry once space is
// freed), and the message tells which. An error already marked is kept as
// it is; any other error is returned unchanged.
func asNoSpace(what string, err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("%w: %s: %w", ErrNoSpace, what, err)
	}
	return err
}
