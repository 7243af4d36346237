package logstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// segment is one .log file and its .idx file, both memory-mapped.
//
// The writable segment (the newest of its log) maps its full capacity up
// front, beyond the end of the files, and grows the files underneath with
// fallocate; so the mapping never moves and readers never need a lock to
// use it. Only bytes below logAllocated are ever touched: a page past the
// end of a file would raise SIGBUS.
//
// Fields below the line are owned by the log's writer (Log.writeMu). What
// readers may use is published through atomics, and a reader looks only at
// records below the log's end offset, which the writer stores after the
// record and its index entry are complete. baseOffset is set before the
// segment is published in its log's segment list and never changes after.
type segment struct {
	baseOffset uint64
	// paths is where the files are now: it changes when a segment
	// swapped in by a rotation is committed (rotation.go) and when a new
	// subject's directory is given its name (Store.Append).
	paths atomic.Pointer[segmentPaths]

	logFile   *os.File
	indexFile *os.File
	logMap    mmap.MMap // capacity; valid below logAllocated
	indexMap  mmap.MMap // capacity; valid below indexAllocated

	logAllocated   atomic.Int64 // file size of .log: readers bound their slices by it
	indexAllocated atomic.Int64
	firstTimestamp atomic.Int64 // timestamp of the oldest record, 0 when empty
	lastTimestamp  atomic.Int64 // timestamp of the newest record, 0 when empty
	payloadBytes   atomic.Int64 // data+header bytes of all records
	count          atomic.Uint64

	// refs counts the log's segment list plus every reader in the middle of
	// a read. The files are unmapped and closed when it drops to zero.
	syncGen atomic.Uint64 // counts syncs of the .log: each write-protects its pages again
	refs    atomic.Int32
	deleted atomic.Bool // unlinked by retention; still readable until the last release
	// dropped: a truncation took the segment out of its log, or put a
	// copy of its first records in its place (truncate.go). Readers that
	// hold it finish reading it from its mapping; a sync of it confirms
	// nothing about the records now at its offsets.
	dropped atomic.Bool

	// committed: the files have their <base> names and the .log header is
	// durable. A segment made by createSegment or found by recovery is;
	// one swapped in from the pipeline is not until commit (rotation.go).
	// commitMu makes commits one at a time.
	committed atomic.Bool
	commitMu  sync.Mutex

	// positions is where each record starts, rebuilt from the .log the
	// first time a read finds the .idx pointing elsewhere (an index that
	// passed the cheap checks at open but is wrong inside); from then on
	// reads use it instead of walking the .log each time. nil while the
	// index is trusted. rebuildMu lets one reader walk while others wait.
	positions atomic.Pointer[rebuiltPositions]
	rebuildMu sync.Mutex
	logger    *slog.Logger

	// ---- owned by the writer ----
	writable   bool
	writePos   int64  // where the next record goes
	scratch    []byte // head of a record written with pwritev
	prefaulted int64  // the writable pages below it are mapped (see prefault)
	faultGen   uint64 // syncGen when prefaulted was set
	syncedAt   int64  // the write position when the writer last saw a sync
	// unsynced marks a segment sealed under SyncNone without a sync; the
	// next Sync or Close syncs it.
	unsynced bool
	// prepareAsked: the writer asked the pipeline for the segment to
	// follow this one (rotation.go).
	prepareAsked bool
	faults       *faultHooks
	observer     Observer
	kernel       *kernelFeatures
}

// segmentPaths are the files of a segment.
type segmentPaths struct {
	log, index string
}

// pathsIn are the files of the segment at base in dir.
func pathsIn(dir string, base uint64) segmentPaths {
	return segmentPaths{
		log:   filepath.Join(dir, segmentFileName(base, ".log")),
		index: filepath.Join(dir, segmentFileName(base, ".idx")),
	}
}

func (s *segment) logPath() string   { return s.paths.Load().log }
func (s *segment) indexPath() string { return s.paths.Load().index }

// dir is the directory the segment's files are in.
func (s *segment) dir() string { return filepath.Dir(s.logPath()) }

// kernelFeatures remembers what the running kernel refused, so that it is
// asked once per store (Options.kernel), not on every write.
type kernelFeatures struct {
	prefaultRefused atomic.Bool // MADV_POPULATE_WRITE is not supported
}

// segmentMode says how openSegment opens a segment's files.
type segmentMode int

const (
	segmentCreate   segmentMode = iota // new files, created exclusively, read-write
	segmentWritable                    // existing files, read-write: the newest segment
	segmentSealed                      // existing files, the .log read-only
)

// openSegment is the one constructor of a segment: it opens the .log and
// .idx at paths as mode says (creating an empty .idx when an existing
// segment has none) and learns their sizes. The files are not mapped.
func openSegment(paths segmentPaths, base uint64, mode segmentMode, opts *Options) (*segment, error) {
	s := &segment{
		baseOffset: base,
		writable:   mode != segmentSealed,
		faults:     opts.faults,
		observer:   opts.Observer,
		logger:     opts.Logger,
		kernel:     opts.kernel,
	}
	s.paths.Store(&paths)
	s.refs.Store(1)
	logFlags, indexFlags, verb := os.O_RDWR, os.O_RDWR|os.O_CREATE, "open"
	switch mode {
	case segmentCreate:
		logFlags, indexFlags, verb = os.O_RDWR|os.O_CREATE|os.O_EXCL, os.O_RDWR|os.O_CREATE|os.O_EXCL, "create"
	case segmentSealed:
		logFlags = os.O_RDONLY
	}
	var err error
	if s.logFile, err = os.OpenFile(paths.log, logFlags, 0o600); err != nil {
		return nil, fmt.Errorf("logstore: %s segment: %w", verb, err)
	}
	if s.indexFile, err = os.OpenFile(paths.index, indexFlags, 0o600); err != nil {
		s.closeFiles()
		if mode == segmentCreate {
			os.Remove(paths.log) // made just now: nothing of it may stay
		}
		return nil, fmt.Errorf("logstore: %s index: %w", verb, err)
	}
	if mode == segmentCreate {
		return s, nil
	}
	logSize, err1 := fileSize(s.logFile)
	indexSize, err2 := fileSize(s.indexFile)
	if err := errors.Join(err1, err2); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.logAllocated.Store(logSize)
	s.indexAllocated.Store(indexSize)
	return s, nil
}

// createSegment makes a new, empty, writable segment at baseOffset: both
// files preallocated, headers written and synced, directory synced.
func createSegment(dir string, baseOffset uint64, opts *Options) (*segment, error) {
	s, err := openSegment(pathsIn(dir, baseOffset), baseOffset, segmentCreate, opts)
	if err != nil {
		return nil, err
	}
	if err := s.allocate(opts, "creating segment"); err != nil {
		s.discard()
		return nil, err
	}
	s.start(baseOffset)
	// The .log header must be durable before any record is: recovery
	// tells an unborn segment (all zeros) from a damaged one by it. The
	// index of the newest segment is rebuilt on recovery, so it is not
	// synced until the segment is sealed. The directory entry is synced
	// so that a record synced later cannot lose its file.
	if err := s.faults.doSync(s.logFile, s.logPath()); err != nil {
		s.discard()
		return nil, fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.logPath(), err)
	}
	if err := syncDir(dir); err != nil {
		s.discard()
		return nil, err
	}
	s.committed.Store(true)
	return s, nil
}

// allocate gives the files of a segment made by openSegment(segmentCreate)
// their first space and maps them writable; what says what for, in an
// error.
func (s *segment) allocate(opts *Options, what string) error {
	initial := min(roundUpPage(opts.InitialSegmentBytes), roundUpPage(opts.SegmentBytes))
	if err := s.grow(s.logFile, 0, initial, what); err != nil {
		return err
	}
	s.logAllocated.Store(initial)
	if err := s.grow(s.indexFile, 0, pageSize, what); err != nil {
		return err
	}
	s.indexAllocated.Store(pageSize)
	return s.mapWritable(roundUpPage(opts.SegmentBytes))
}

// start makes an allocated segment the segment at base: the headers of
// both files, written through the mappings, and the write position after
// them. Nothing is synced.
func (s *segment) start(base uint64) {
	s.baseOffset = base
	encodeFileHeader(s.logMap, logMagic, base)
	encodeFileHeader(s.indexMap, indexMagic, base)
	s.writePos = fileHeaderSize
}

// discard closes and removes the files of a segment that was never
// published (its creation failed, or it was prepared and not used), and
// takes the space back from the observer's count.
func (s *segment) discard() {
	paths := s.paths.Load()
	s.closeFiles()
	freed, _ := removeFiles(paths.log, paths.index)
	s.observer.DiskBytes(-freed)
}

// grow preallocates [offset, offset+length) of f and reports the space.
// what says what the space is for ("creating segment", "growing
// segment", "restoring index"; the file's path is added), so that an
// error says what failed; a full disk, quota or file size limit is
// ErrNoSpace.
func (s *segment) grow(f *os.File, offset, length int64, what string) error {
	if err := s.faults.doPreallocate(f, offset, length); err != nil {
		what = what + " " + f.Name()
		if err := asNoSpace(what, err); errors.Is(err, ErrNoSpace) {
			return err
		}
		return fmt.Errorf("logstore: %s: %w", what, err)
	}
	s.observer.DiskBytes(length)
	return nil
}

const pageSize = 4096

func roundUpPage(n int64) int64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// mapWritable maps both files read-write with room for a segment of
// capacity bytes, or the file's current size if that is larger.
func (s *segment) mapWritable(capacity int64) error {
	logCap := max(capacity, s.logAllocated.Load())
	indexCap := max(indexCapacity(logCap), s.indexAllocated.Load())
	var err error
	if s.logMap, err = mmap.MapRegion(s.logFile, int(logCap), mmap.RDWR, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", s.logPath(), err)
	}
	if s.indexMap, err = mmap.MapRegion(s.indexFile, int(indexCap), mmap.RDWR, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", s.indexPath(), err)
	}
	return nil
}

// mapReadOnly maps both files read-only at their sizes (an empty .idx is
// not mapped).
func (s *segment) mapReadOnly() error {
	var err error
	if s.logMap, err = mmap.MapRegion(s.logFile, int(s.logAllocated.Load()), mmap.RDONLY, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", s.logPath(), err)
	}
	if s.indexAllocated.Load() > 0 {
		if s.indexMap, err = mmap.MapRegion(s.indexFile, int(s.indexAllocated.Load()), mmap.RDONLY, 0, 0); err != nil {
			return fmt.Errorf("logstore: map %s: %w", s.indexPath(), err)
		}
	}
	return nil
}

// capacity is the largest the .log file may grow to.
func (s *segment) capacity() int64 { return int64(len(s.logMap)) }

// ensureSpace grows the files so that records of size bytes in all fit
// at writePos and their index entries fit too. Growth doubles, from the
// initial preallocation up to the capacity, so a small log costs a small
// file.
func (s *segment) ensureSpace(size, records int64) error {
	need := s.writePos + size
	if allocated := s.logAllocated.Load(); need > allocated {
		grown := min(max(roundUpPage(need), allocated*2), s.capacity())
		err := s.grow(s.logFile, allocated, grown-allocated, "growing segment")
		if errors.Is(err, ErrNoSpace) && grown > roundUpPage(need) {
			// Doubling does not fit on a nearly full disk; what this
			// record needs may.
			grown = roundUpPage(need)
			err = s.grow(s.logFile, allocated, grown-allocated, "growing segment")
		}
		if err != nil {
			return err
		}
		s.logAllocated.Store(grown)
	}
	needIndex := int64(fileHeaderSize + (s.count.Load()+uint64(records))*indexEntrySize)
	if allocated := s.indexAllocated.Load(); needIndex > allocated {
		grown := min(max(roundUpPage(needIndex), allocated*2), int64(len(s.indexMap)))
		if err := s.grow(s.indexFile, allocated, grown-allocated, "growing segment"); err != nil {
			return err
		}
		s.indexAllocated.Store(grown)
	}
	return nil
}

// writeThroughBytes is the record size from which the writer copies a
// record into the .log with pwritev instead of through the mapping. Every
// page stored to through a writable mapping costs a page fault, and each
// fdatasync write-protects it again with a TLB shootdown per page; for
// large records that costs more than the system call, for small ones less.
const writeThroughBytes = 4096

// prefaultBytes is how far ahead of the writer the mapping is made
// writable in one madvise, instead of one page fault per 4 KiB as records
// are copied in. The pages it dirties ahead of the records are written
// back as zeros at the next sync: at most this much per sync.
const prefaultBytes = 64 << 10

// prefault makes the pages from position on writable in the mapping in
// one system call (MADV_POPULATE_WRITE), when the writer reaches pages not
// yet populated or a sync has write-protected them again. It is only an
// optimisation: a kernel without MADV_POPULATE_WRITE (before Linux 5.14)
// is asked once per store, and records then fault the pages in.
func (s *segment) prefault(position, size int64) {
	if s.kernel.prefaultRefused.Load() {
		return
	}
	gen := s.syncGen.Load()
	if position+size <= s.prefaulted && gen == s.faultGen {
		return
	}
	if gen != s.faultGen {
		s.syncedAt = position
	}
	// Look ahead as far as was written since the last sync, up to
	// prefaultBytes: pages populated ahead are written back as zeros at
	// the next sync, so a log synced every few records (acked appends)
	// looks ahead little, and one synced every 20 ms (capture) a lot.
	ahead := min(roundUpPage(position-s.syncedAt), prefaultBytes)
	from := position &^ (pageSize - 1)
	to := min(roundUpPage(position+size)+ahead, s.logAllocated.Load())
	if to <= from {
		return
	}
	if err := unix.Madvise(s.logMap[from:to], unix.MADV_POPULATE_WRITE); err != nil {
		// EINVAL: this kernel has no MADV_POPULATE_WRITE. Anything else
		// (EINTR from a signal, ENOMEM) may pass; the next call retries.
		if errors.Is(err, unix.EINVAL) {
			s.kernel.prefaultRefused.Store(true)
		}
		s.prefaulted = 0
		return
	}
	s.prefaulted, s.faultGen = to, gen
}

// writeRecord writes a record at position: through the mapping when it is
// small, with one pwritev when it is large (see writeThroughBytes). Both
// land in the same page cache, which readers see through the mapping.
func (s *segment) writeRecord(position, size int64, offset uint64, timestamp int64, headers Headers, headersLen int, data []byte) error {
	if size < writeThroughBytes {
		s.prefault(position, size)
		encodeRecord(s.logMap[position:position+size], offset, timestamp, headers, headersLen, data)
		return nil
	}
	head := recordHeaderSize + headersLen
	if cap(s.scratch) < head {
		s.scratch = make([]byte, head)
	}
	buf := s.scratch[:head]
	encodeRecordHead(buf, offset, timestamp, headers, headersLen, data)
	return s.writeVectors([][]byte{buf, data}, position, size)
}

// writeVectors writes pieces, size bytes in all, at position with pwritev,
// as often as the kernel takes less than all of it. On an error it clears
// the whole range again, so that recovery finds no partial record there.
func (s *segment) writeVectors(pieces [][]byte, position, size int64) error {
	at := position
	for {
		for len(pieces) > 0 && len(pieces[0]) == 0 {
			pieces = pieces[1:] // empty data: nothing to write, and pwritev would return 0
		}
		if len(pieces) == 0 {
			return nil
		}
		n, err := unix.Pwritev(int(s.logFile.Fd()), pieces, at)
		if err != nil {
			clear(s.logMap[position : position+size])
			return fmt.Errorf("logstore: write %s: %w", s.logPath(), err)
		}
		at += int64(n)
		for n > 0 && len(pieces) > 0 {
			if n < len(pieces[0]) {
				pieces[0] = pieces[0][n:]
				n = 0
			} else {
				n -= len(pieces[0])
				pieces = pieces[1:]
			}
		}
	}
}

// syncData makes the .log durable: fdatasync writes back the pages
// dirtied through the mapping and the size grown by fallocate.
func (s *segment) syncData() error {
	err := timedSync(s.logFile, s.syncPath(), s.faults, s.observer)
	s.syncGen.Add(1)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.logPath(), err)
	}
	return nil
}

// syncIndex makes the .idx durable. The index is derived data, so it is
// synced only when a segment is sealed or closed; recovery rebuilds the
// newest segment's index from its .log.
func (s *segment) syncIndex() error {
	if err := s.faults.doSync(s.indexFile, s.indexPath()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.indexPath(), err)
	}
	return nil
}

// syncPath names the .log for the sync hook: the path it has, or for a
// segment swapped in and not yet committed, the one it is being given.
func (s *segment) syncPath() string {
	if s.faults == nil || s.committed.Load() {
		return s.logPath()
	}
	return pathsIn(s.dir(), s.baseOffset).log
}

// acquire takes a reader's reference. It fails once the segment has been
// released for good, so a reader that loses the race with retention
// reloads the segment list instead of touching an unmapped file.
func (s *segment) acquire() bool {
	for {
		n := s.refs.Load()
		if n <= 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one unmaps and closes the files.
func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		s.closeFiles()
	}
}

func (s *segment) closeFiles() {
	if s.logMap != nil {
		s.logMap.Unmap()
		s.logMap = nil
	}
	if s.indexMap != nil {
		s.indexMap.Unmap()
		s.indexMap = nil
	}
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
	if s.indexFile != nil {
		s.indexFile.Close()
		s.indexFile = nil
	}
}

// removeFiles unlinks the segment's files; the mapping stays valid.
func (s *segment) removeFiles() error {
	paths := s.paths.Load()
	if err := os.Remove(paths.log); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: delete segment: %w", err)
	}
	if err := os.Remove(paths.index); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: delete index: %w", err)
	}
	return nil
}

// fileMapping is the path of the file whose mapping holds addr, or "":
// only faults on the segment's own files are turned into errors, and the
// error names the file.
func (s *segment) fileMapping(addr uintptr) string {
	paths := s.paths.Load()
	for _, m := range []struct {
		data mmap.MMap
		path string
	}{{s.logMap, paths.log}, {s.indexMap, paths.index}} {
		if len(m.data) > 0 {
			start := uintptr(unsafe.Pointer(&m.data[0]))
			if addr >= start && addr < start+uintptr(len(m.data)) {
				return m.path
			}
		}
	}
	return ""
}

// logBytes is what readers may look at: the mapped, allocated part of the .log.
func (s *segment) logBytes() []byte {
	return s.logMap[:s.logAllocated.Load()]
}
