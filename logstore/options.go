package logstore

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// SyncPolicy says when appended records are made durable with fdatasync.
type SyncPolicy int

const (
	// SyncBatch is group commit, the default: a background syncer makes all
	// records appended since the last sync durable with one fdatasync and
	// releases every waiter together. Append does not wait; WaitDurable does,
	// and starts a sync at once. Records nobody waits for are synced within
	// 20 ms of being appended.
	SyncBatch SyncPolicy = iota
	// SyncAlways makes every append durable before Append returns. Appends
	// that arrive while a sync is running share the next one.
	SyncAlways
	// SyncInterval syncs every Options.SyncInterval.
	SyncInterval
	// SyncNone leaves writeback to the kernel; records survive a crash of
	// the process but not of the machine. Close still syncs.
	SyncNone
)

// syncPolicyNames is a constant table; nothing writes it.
var syncPolicyNames = [...]string{SyncBatch: "batch", SyncAlways: "always", SyncInterval: "interval", SyncNone: "none"}

func (p SyncPolicy) String() string {
	if int(p) < len(syncPolicyNames) {
		return syncPolicyNames[p]
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// ParseSyncPolicy reads "always", "batch", "interval" or "none".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	for p, name := range syncPolicyNames {
		if strings.EqualFold(s, name) {
			return SyncPolicy(p), nil
		}
	}
	return 0, fmt.Errorf("%w: sync policy %q: want always, batch, interval or none", ErrInvalidOptions, s)
}

// Observer is told what the store does, for metrics. Its methods are
// called from writers, syncers and recovery, and must be quick and must
// not call back into the store. Options.Observer nil observes nothing.
type Observer interface {
	// Synced reports one fdatasync of a segment file: how long it took and
	// its error, nil when it succeeded.
	Synced(elapsed time.Duration, err error)
	// DiskBytes reports a change of the space the segment files take:
	// positive when a segment is created or grows, negative when one is
	// deleted.
	DiskBytes(delta int64)
	// RetentionDeleted reports segments deleted by retention.
	RetentionDeleted(segments int)
	// Recovered reports what opening a log found: once for every attempt
	// to open one (OpenLog; the store opening a log it does not hold
	// open, or making a new subject's), whether it succeeded or not, so
	// that a log that exists but cannot be served is counted too.
	Recovered(subject string, r Recovery)
}

// Recovery is what opening one log found and repaired.
type Recovery struct {
	TornBytes      int64 // bytes of torn tail cut off the newest segment
	IndexesRebuilt int   // sealed segments whose index was rebuilt
	Corrupt        bool  // corruption found: the log is read-only
	// Err is why the log could not be opened at all (a file that cannot
	// be opened or read, a full disk, a failed sync): no log was returned
	// and nothing of it can be served until an open succeeds. It is nil
	// when the log was opened, corrupt or not; the other fields are then
	// what recovery did before it failed.
	Err error
}

// Outcome names the recovery for a metric label: "clean", "torn_tail",
// "index_rebuilt", "corrupt" or "failed" (the worst that applies).
func (r Recovery) Outcome() string {
	switch {
	case r.Err != nil:
		return "failed"
	case r.Corrupt:
		return "corrupt"
	case r.TornBytes > 0:
		return "torn_tail"
	case r.IndexesRebuilt > 0:
		return "index_rebuilt"
	}
	return "clean"
}

type nopObserver struct{}

func (nopObserver) Synced(time.Duration, error) {}
func (nopObserver) DiskBytes(int64)             {}
func (nopObserver) RetentionDeleted(int)        {}
func (nopObserver) Recovered(string, Recovery)  {}

// Retention limits a log. Whole segments are deleted from the front, oldest
// first, while a limit is exceeded; the segment being written is never
// deleted. Zero means no limit.
type Retention struct {
	MaxAge      time.Duration // delete a segment once its newest record is older than this
	MaxBytes    int64         // data+header bytes per log
	MaxMessages uint64        // records per log
}

// Options configure a Store and its logs. The zero value is usable: every
// zero field takes the default documented on it.
type Options struct {
	// SegmentBytes is the size at which a segment is sealed and a new one
	// started; the largest record must fit in one. Default 64 MiB, at most 4 GiB-1.
	SegmentBytes int64
	// InitialSegmentBytes is the first preallocation of a new segment; it
	// doubles as records arrive, up to SegmentBytes. Default 4 KiB, so that a quiet subject costs little disk.
	InitialSegmentBytes int64

	Sync         SyncPolicy
	SyncInterval time.Duration // for SyncInterval; default 100ms

	Retention Retention
	// RetentionCheckInterval is how often the store applies MaxAge to logs
	// that are not being written. Default 1 minute.
	RetentionCheckInterval time.Duration
	// HoldRetention starts the store with retention held: nothing is
	// deleted by the limits until Store.HoldRetention(false). The members
	// of a replication group hold it: the leader proposes where each log
	// starts (OnRetention), and every member deletes (Log.DropBefore)
	// once the group has agreed, so that all logs start at the same
	// offset.
	HoldRetention bool
	// OnRetention, if set, is told where a log starts by the limits: with
	// retention held, each time a check finds segments past a limit (on
	// a rotation, and every RetentionCheckInterval), the first offset the
	// log would have, nothing deleted; otherwise the first offset it has
	// after retention deleted segments. It is called with the log's
	// writer lock held: it must not call into that log, and should only
	// hand the news on.
	OnRetention func(subject string, first uint64)

	// MaxOpenLogs bounds the logs held open (file descriptors and mappings);
	// the least recently used idle log is closed past it, and reopened on
	// demand. Default 1000.
	MaxOpenLogs int

	Logger   *slog.Logger     // default slog.Default()
	Now      func() time.Time // record timestamps; default time.Now
	Observer Observer         // metrics; default none

	faults *faultHooks     // tests only
	kernel *kernelFeatures // what the kernel refused; one per store (withDefaults)
	held   *atomic.Bool    // retention held (HoldRetention); one per store (withDefaults)
}

// Limits and defaults of Options that a caller's own settings check
// against (voik's VOIK_SEGMENT_SIZE): one place for them.
const (
	// MinSegmentBytes and MaxSegmentBytes bound Options.SegmentBytes.
	MinSegmentBytes = 4 << 10
	MaxSegmentBytes = maxSegmentBytes
	// DefaultSegmentBytes is Options.SegmentBytes when it is zero.
	DefaultSegmentBytes = 64 << 20
	// DefaultMaxOpenLogs is Options.MaxOpenLogs when it is zero.
	DefaultMaxOpenLogs = 1000

	defaultInitialSegmentBytes = 4 << 10
)

// withDefaults returns a copy of o with defaults filled in, or an error
// naming the first field out of range.
func (o Options) withDefaults() (Options, error) {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.SegmentBytes < MinSegmentBytes || o.SegmentBytes > MaxSegmentBytes {
		return o, fmt.Errorf("%w: segment size %d outside [%d, %d]", ErrInvalidOptions, o.SegmentBytes, MinSegmentBytes, int64(MaxSegmentBytes))
	}
	if o.InitialSegmentBytes == 0 {
		o.InitialSegmentBytes = defaultInitialSegmentBytes
	}
	if o.InitialSegmentBytes < 0 {
		return o, fmt.Errorf("%w: initial segment size %d is negative", ErrInvalidOptions, o.InitialSegmentBytes)
	}
	o.InitialSegmentBytes = min(o.InitialSegmentBytes, o.SegmentBytes)
	if o.Sync < SyncBatch || o.Sync > SyncNone {
		return o, fmt.Errorf("%w: %v", ErrInvalidOptions, o.Sync)
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = 100 * time.Millisecond
	}
	if o.SyncInterval < 0 {
		return o, fmt.Errorf("%w: sync interval %v is negative", ErrInvalidOptions, o.SyncInterval)
	}
	if o.Retention.MaxAge < 0 || o.Retention.MaxBytes < 0 {
		return o, fmt.Errorf("%w: negative retention limit", ErrInvalidOptions)
	}
	if o.RetentionCheckInterval == 0 {
		o.RetentionCheckInterval = time.Minute
	}
	if o.MaxOpenLogs == 0 {
		o.MaxOpenLogs = DefaultMaxOpenLogs
	}
	if o.MaxOpenLogs < 0 {
		return o, fmt.Errorf("%w: max open logs %d is negative", ErrInvalidOptions, o.MaxOpenLogs)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.kernel == nil {
		o.kernel = new(kernelFeatures)
	}
	if o.held == nil {
		o.held = new(atomic.Bool)
		o.held.Store(o.HoldRetention)
	}
	return o, nil
}

// maxRecordSize is the largest record, framing included, a segment can hold.
func (o *Options) maxRecordSize() int64 {
	return roundUpPage(o.SegmentBytes) - fileHeaderSize
}
