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
)

// Store is a data directory of logs, one per subject. It knows every
// subject that has a log, and keeps at most Options.MaxOpenLogs of them
// open: a log that nobody holds is closed when the cap is passed (least
// recently used first) and reopened, recovered, when it is needed again.
//
// The store owns the lifetime of its logs. Callers name a subject and
// never open or close a log: Append writes to it (making it, for a new
// subject, with its first records: store_append.go), WaitDurable and
// RequestSync follow its durability, and View (or Acquire and Release)
// reads it while holding it open. A subject has a log from its first
// stored record on, and a log always has a record: there is no empty log
// to see.
type Store struct {
	dir  string
	opts Options

	mu sync.Mutex
	// Guarded by mu.
	subjects map[string]string      // subject → log directory, for every log on disk
	sorted   []string               // subjects sorted bytewise; nil when it must be rebuilt
	open     map[string]*storeEntry // logs open, opening, being made or closing
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
// been opened or made (log or err set); refs counts the holders (Acquire,
// View, Append, WaitDurable) not yet done with it.
type storeEntry struct {
	subject string
	dir     string
	ready   chan struct{}
	log     *Log
	err     error
	refs    int
	idleAt  *list.Element // non-nil while in Store.idle
	closing chan struct{} // non-nil while being evicted; closed when done
	// making: the subject has no log, and this entry's holder is making
	// it with its first records (Store.Append). Until ready, the subject
	// is not in Store.subjects: nothing else can find the log.
	making bool
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
// for a shortened name. Leftovers of a new subject's log that never got
// its first record (makeLogDir) are removed.
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
		if strings.HasPrefix(name, ".") {
			continue // another part's (a group's state): no log is ever named so
		}
		// A log directory always holds its subject file (placeLogDir
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

// View calls fn with the log of subject, held open (never evicted) until
// fn returns, and returns what fn returns: the callback form of Acquire
// and Release, as bbolt's View is of a read transaction. A subject with
// no log is ErrNotFound, and a log that exists but cannot be opened
// returns the error that Acquire does, without calling fn. A log opened
// with corruption is passed to fn; Log.Err reports the corruption.
func (s *Store) View(subject string, fn func(*Log) error) error {
	l, err := s.acquire(subject)
	if err != nil {
		return err
	}
	defer s.release(subject, l)
	return fn(l)
}

// Acquire returns the open log of subject, opening it if needed, for a
// holder that keeps it beyond a callback (View is the same for one). A
// subject with no log is ErrNotFound: logs are made by Append. Every
// successful Acquire must be paired with Release; a held log is never
// evicted. A log opened with corruption is returned (readable, refusing
// appends) with a nil error; Log.Err reports the corruption. A log that
// exists but cannot be opened at all returns the error, naming the
// subject; it is not remembered, so every Acquire tries again and reports
// what it meets.
func (s *Store) Acquire(subject string) (*Log, error) { return s.acquire(subject) }

// Release gives back a log from Acquire.
func (s *Store) Release(l *Log) { s.release(l.subject, l) }

func (s *Store) acquire(subject string) (*Log, error) {
	if err := validSubject(subject); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		dir, exists := s.subjects[subject]
		if !exists {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrNotFound, subject)
		}
		e := s.open[subject]
		if e != nil && e.closing != nil {
			closing := e.closing
			s.mu.Unlock()
			<-closing // an eviction is closing it: open it afresh after
			continue
		}
		if e == nil {
			e = &storeEntry{subject: subject, dir: dir, ready: make(chan struct{}), refs: 1}
			s.open[subject] = e
			s.mu.Unlock()
			s.openEntry(e)
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

// openEntry opens the log of an entry. It runs outside the store lock;
// others acquiring the same subject wait on ready.
func (s *Store) openEntry(e *storeEntry) {
	defer close(e.ready)
	s.mu.Lock()
	_, clean := s.closedClean[e.subject]
	delete(s.closedClean, e.subject)
	s.mu.Unlock()
	log, err := openLog(e.dir, e.subject, &s.opts, clean, true, 0)
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

// release drops a hold on the log of subject (l: the log held; nil for
// an entry that failed to open). The last one makes the log idle, which
// may evict others past MaxOpenLogs.
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
	if s.closed || e.err != nil {
		delete(s.open, subject) // failed to open: forget it, the next Acquire retries
		s.mu.Unlock()
		return
	}
	e.idleAt = s.idle.PushFront(e)
	victims := s.evictLocked()
	s.mu.Unlock()
	s.closeEvicted(victims)
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
