// Package logstore is voik's storage engine: an append-only, crash-safe log
// of records per subject, in memory-mapped segment files. It knows nothing
// of NATS.
//
// # Layout
//
// A Store is a data directory with one directory per subject (see
// subjectdir.go for how a subject becomes a safe directory name). A
// subject's Log is a sequence of segments; segment N is the pair
// N.log (records) and N.idx (a fixed-width index), N being the offset of
// its first record in 20 digits. format.go defines both files byte by byte.
//
// The Store owns the lifetime of its logs: callers name a subject, and
// Store.Append, Store.WaitDurable and Store.View open, make and hold the
// log for them. A subject's directory comes into being with its first
// record: the log is made under a temporary name, its first records
// appended and synced, and the directory renamed into place before the
// subject is visible to anyone (store_append.go). There is no empty log,
// and a subject whose first record is refused leaves nothing behind.
//
// # Writing
//
// One writer appends to a log at a time. A record is copied into the
// newest segment (through the mapping, or with pwritev when it is 4 KiB or
// more; Log.AppendBatch copies many records with one pwritev), its index
// entry written, and only then is
// the log's end offset raised; readers read below the end offset without
// taking any lock. Segments grow by fallocate, from
// Options.InitialSegmentBytes to Options.SegmentBytes, and a full segment
// is synced (under SyncNone: marked, and synced by the next Sync or Close)
// and sealed before the next takes its place. The next segment is made
// ahead, in the background, while the active one fills, and committed
// (its header synced, its files renamed to their names, the directory
// synced) in the background after the rotation swaps it in; rotation.go
// draws its states.
//
// Store.AppendAt and Log.AppendAt write exact copies of another log's
// records (a replica's): at a given offset, which must be the end, with
// the timestamps given, never raised; a new subject's log may start at
// any offset.
//
// # Durability
//
// Options.Sync chooses when records are made durable: SyncAlways (before
// Append returns), SyncBatch (group commit by a background syncer; the
// default), SyncInterval or SyncNone. Log.DurableOffset is the durable
// watermark and Log.WaitDurable waits for a record to pass it. A failed
// fdatasync is never retried: the log stops taking appends and confirming
// durability until it is reopened.
//
// # Recovery
//
// Opening a log trusts nothing on disk until its checksum matches, but
// reads only what it must: the index of each sealed segment is checked
// cheaply (order, bounds, its last record, zeros after it) and rebuilt
// from the .log only when a check fails; the newest segment, the only one
// that can have a torn tail, is verified record by record. The steps are
// written out on recoverSegments. In short:
//
//   - zeros or garbage after the last good record of the newest segment is
//     a torn tail: it is zeroed, and a warning says how many bytes; so is a
//     page lost in a power cut before later pages that reached the disk;
//   - a bad record with a valid one after it, or a bad record in a sealed
//     segment, is corruption: OpenLog returns a *CorruptionError together
//     with a log that serves the records before it and refuses appends;
//     nothing is truncated;
//   - a segment whose creation was interrupted, an index without its log,
//     and an index that is short or ahead of its log are repaired;
//   - a segment prepared ahead of a rotation is deleted, unless the
//     rotation had swapped it in (it has a header): then it is given the
//     name its commit would have given it;
//   - a newest segment whose .log is all zeros while its index holds
//     entries had records: it is corruption at its base offset, not an
//     interrupted creation, and is never deleted, so that its offsets are
//     not given out again;
//   - the next offset follows the last good record, and everything found
//     is fdatasynced before it is called durable.
//
// A bad record inside a sealed segment that the cheap checks do not touch
// is found when it is read: Scan returns a *CorruptionError for it.
//
// # Truncation
//
// Log.TruncateTo drops the records at and above an offset (a replica whose
// tail its group never committed): the segment holding the offset is
// copied up to it, a durable intent file decides the truncation, the
// newer segments are deleted and the copy renamed in; opening a log
// finishes a truncation that a crash cut short (recovery step 0).
// truncate.go writes the steps out. Readers that hold a segment keep
// reading it from its mapping.
//
// # Retention
//
// Options.Retention bounds each log by age, bytes and record count. Whole
// segments are deleted from the front, never the one being written; the
// first offset advances and offsets are never reused. A reader in the
// middle of a deleted segment finishes reading it from its mapping.
package logstore
