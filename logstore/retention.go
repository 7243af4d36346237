package logstore

// Retention: whole segments deleted from the front of a log while a limit
// of Options.Retention is exceeded, on rotation and, for logs that are not
// being written, by the store now and then.

import (
	"os"
	"slices"
	"time"
)

// ApplyRetention deletes the oldest segments while a retention limit is
// exceeded and returns how many it deleted.
func (l *Log) ApplyRetention() int {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.closed || l.openErr != nil {
		return 0
	}
	return l.applyRetentionLocked()
}

// applyRetentionLocked is ApplyRetention; the caller holds writeMu.
func (l *Log) applyRetentionLocked() int {
	limits := l.opts.Retention
	held := l.opts.held != nil && l.opts.held.Load()
	if limits == (Retention{}) || (held && l.opts.OnRetention == nil) {
		return 0
	}
	segments := *l.segments.Load()
	drop := l.expiredLocked(segments)
	if drop == 0 {
		return 0
	}
	if held {
		// Deleting is someone else's call: say where the log would
		// start (DropBefore deletes, when it is made).
		l.opts.OnRetention(l.subject, segments[drop].baseOffset)
		return 0
	}
	l.dropFrontLocked(segments, drop)
	l.opts.Observer.RetentionDeleted(drop)
	if l.opts.OnRetention != nil {
		l.opts.OnRetention(l.subject, l.firstOffset.Load())
	}
	return drop
}

// dropFrontLocked deletes the first drop segments of segments (the log's
// list), oldest first, so that a crash part way leaves a contiguous
// suffix behind. Readers in them finish from their mappings. The caller
// holds writeMu, and drop is below len(segments).
func (l *Log) dropFrontLocked(segments []*segment, drop int) {
	kept := slices.Clone(segments[drop:])
	l.segments.Store(&kept)
	l.firstOffset.Store(kept[0].baseOffset)
	for _, s := range segments[:drop] {
		s.deleted.Store(true)
		if err := s.removeFiles(); err != nil {
			l.opts.Logger.Error("logstore: deleting a segment", "subject", l.subject, "err", err)
		} else {
			l.opts.Observer.DiskBytes(-(s.logAllocated.Load() + s.indexAllocated.Load()))
		}
		s.release()
	}
	if err := syncDir(l.dir); err != nil {
		l.opts.Logger.Error("logstore: deleting a segment", "subject", l.subject, "err", err)
	}
	l.opts.Logger.Debug("logstore: deleted segments from the front", "subject", l.subject, "segments", drop, "first_offset", kept[0].baseOffset)
}

// expiredLocked is how many segments from the front of segments are past
// a limit. A segment goes when every record in it is past a limit: older
// than MaxAge, or with at least MaxBytes / MaxMessages newer than it. So a
// log keeps at least its newest MaxMessages records and MaxBytes bytes,
// and at most one segment more. The active segment never goes. The
// caller holds writeMu.
func (l *Log) expiredLocked(segments []*segment) int {
	limits := l.opts.Retention
	var totalBytes int64
	for _, s := range segments {
		totalBytes += s.payloadBytes.Load()
	}
	end := l.endOffset.Load()
	now := l.opts.Now().UnixNano()
	drop := 0
	for i, s := range segments[:len(segments)-1] { // never the active segment
		newerBytes := totalBytes - s.payloadBytes.Load()
		newerMessages := end - segments[i+1].baseOffset
		expired := limits.MaxAge > 0 && s.lastTimestamp.Load() < now-int64(limits.MaxAge)
		tooBig := limits.MaxBytes > 0 && newerBytes >= limits.MaxBytes
		tooMany := limits.MaxMessages > 0 && newerMessages >= limits.MaxMessages
		if !expired && !tooBig && !tooMany {
			break
		}
		totalBytes = newerBytes
		drop++
	}
	return drop
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

// HoldRetention holds retention (nothing is deleted by the limits; with
// OnRetention set, it is told where each log would start) or lets it go
// on, for every log of the store (Options.HoldRetention).
func (s *Store) HoldRetention(hold bool) { s.opts.held.Store(hold) }

// ApplyRetention applies the retention limits to every log that has more
// than one segment (only those can lose any) and returns how many
// segments it deleted.
func (s *Store) ApplyRetention() int {
	if s.opts.held.Load() && s.opts.OnRetention == nil {
		return 0
	}
	deleted := 0
	for _, subject := range s.Subjects() {
		s.mu.Lock()
		dir := s.subjects[subject]
		_, isOpen := s.open[subject]
		s.mu.Unlock()
		if !isOpen && len(segmentFileBases(dir)) < 2 {
			continue
		}
		s.View(subject, func(l *Log) error {
			deleted += l.ApplyRetention()
			return nil
		})
	}
	return deleted
}

// segmentFileBases is the base offsets of the .log files in dir, lowest
// first, read from their names alone (nothing is opened or changed).
func segmentFileBases(dir string) []uint64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var bases []uint64
	for _, e := range entries {
		if base, ext, ok := parseSegmentName(e.Name()); ok && ext == ".log" {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	return bases
}
