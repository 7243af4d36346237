package logstore

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
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
// record and its index entry are complete.
type segment struct {
	baseOffset uint64
	logPath    string
	indexPath  string

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
	faults   *faultHooks
	observer Observer
}

// faultHooks lets tests fail the next preallocation or sync, or a look at
// a path. Production code leaves it nil.
type faultHooks struct {
	preallocate func(f *os.File, offset, length int64) error
	sync        func(f *os.File) error
	// path, when it returns an error, fails the call op ("lstat", "open"
	// or "mkdir") on path with it, as a failing or full disk (EIO,
	// ENOSPC) or a missing permission would; tests run as root, which no
	// permission stops. Only the calls that find logs (the subject file,
	// the listing of a log directory) and make them consult it.
	path func(op, path string) error
}

// fail returns the error the path hook injects for op on path, as the
// *fs.PathError the real call would return, or nil.
func (h *faultHooks) fail(op, path string) error {
	if h != nil && h.path != nil {
		if err := h.path(op, path); err != nil {
			return &fs.PathError{Op: op, Path: path, Err: err}
		}
	}
	return nil
}

// doLstat is os.Lstat, which the path hook can fail, for its error only.
func (h *faultHooks) doLstat(path string) error {
	if err := h.fail("lstat", path); err != nil {
		return err
	}
	_, err := os.Lstat(path)
	return err
}

func (h *faultHooks) doPreallocate(f *os.File, offset, length int64) error {
	if h != nil && h.preallocate != nil {
		if err := h.preallocate(f, offset, length); err != nil {
			return err
		}
	}
	return preallocate(f, offset, length)
}

func (h *faultHooks) doSync(f *os.File) error {
	if h != nil && h.sync != nil {
		if err := h.sync(f); err != nil {
			return err
		}
	}
	return unix.Fdatasync(int(f.Fd()))
}

// preallocate reserves real blocks for [offset, offset+length) and extends
// the file. A sparse ftruncate would defer the out-of-space error to a page
// fault (SIGBUS); fallocate reports it here, as an error. grow says what
// the space was for.
func preallocate(f *os.File, offset, length int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, offset, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = writeZeros(f, offset, length)
	}
	if err != nil {
		return fmt.Errorf("preallocate %d bytes at %d: %w", length, offset, err)
	}
	return nil
}

// writeZeros is preallocation for file systems without fallocate.
func writeZeros(f *os.File, offset, length int64) error {
	zeros := make([]byte, min(length, 1<<16))
	for length > 0 {
		n := min(length, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:n], offset); err != nil {
			return err
		}
		offset += n
		length -= n
	}
	return nil
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

// indexCapacity is the largest index a log of logCapacity bytes can need:
// one entry per smallest possible record.
func indexCapacity(logCapacity int64) int64 {
	return roundUpPage(fileHeaderSize + (logCapacity-fileHeaderSize)/recordHeaderSize*indexEntrySize + indexEntrySize)
}

// syncDir makes a directory's entries (new, renamed or removed files) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("logstore: open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("logstore: sync dir %s: %w", dir, err)
	}
	return nil
}

// createSegment makes a new, empty, writable segment at baseOffset: both
// files preallocated, headers written and synced, directory synced.
func createSegment(dir string, baseOffset uint64, opts *Options) (*segment, error) {
	s := &segment{
		baseOffset: baseOffset,
		logPath:    filepath.Join(dir, segmentFileName(baseOffset, ".log")),
		indexPath:  filepath.Join(dir, segmentFileName(baseOffset, ".idx")),
		writable:   true,
		faults:     opts.faults,
		observer:   opts.Observer,
		logger:     opts.Logger,
	}
	s.refs.Store(1)
	err := s.createFiles(opts)
	if err != nil {
		s.closeFiles()
		var freed int64
		for _, path := range []string{s.logPath, s.indexPath} {
			if fi, statErr := os.Stat(path); statErr == nil {
				freed += fi.Size()
			}
			os.Remove(path)
		}
		s.observer.DiskBytes(-freed)
		return nil, err
	}
	return s, nil
}

func (s *segment) createFiles(opts *Options) error {
	var err error
	if s.logFile, err = os.OpenFile(s.logPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
		return fmt.Errorf("logstore: create segment: %w", err)
	}
	if s.indexFile, err = os.OpenFile(s.indexPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
		return fmt.Errorf("logstore: create index: %w", err)
	}
	initial := min(roundUpPage(opts.InitialSegmentBytes), roundUpPage(opts.SegmentBytes))
	if err := s.grow(s.logFile, 0, initial, "creating segment"); err != nil {
		return err
	}
	if err := s.grow(s.indexFile, 0, pageSize, "creating segment"); err != nil {
		return err
	}
	s.logAllocated.Store(initial)
	s.indexAllocated.Store(pageSize)
	if err := s.mapWritable(roundUpPage(opts.SegmentBytes)); err != nil {
		return err
	}
	encodeFileHeader(s.logMap, logMagic, s.baseOffset)
	encodeFileHeader(s.indexMap, indexMagic, s.baseOffset)
	s.writePos = fileHeaderSize
	// The .log header must be durable before any record is: recovery
	// tells an unborn segment (all zeros) from a damaged one by it. The
	// index of the newest segment is rebuilt on recovery, so it is not
	// synced until the segment is sealed. The directory entry is synced
	// so that a record synced later cannot lose its file.
	if err := s.faults.doSync(s.logFile); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.logPath, err)
	}
	return syncDir(filepath.Dir(s.logPath))
}

// mapWritable maps both files read-write with room for a segment of
// capacity bytes, or the file's current size if that is larger.
func (s *segment) mapWritable(capacity int64) error {
	logCap := max(capacity, s.logAllocated.Load())
	indexCap := max(indexCapacity(logCap), s.indexAllocated.Load())
	var err error
	if s.logMap, err = mmap.MapRegion(s.logFile, int(logCap), mmap.RDWR, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", s.logPath, err)
	}
	if s.indexMap, err = mmap.MapRegion(s.indexFile, int(indexCap), mmap.RDWR, 0, 0); err != nil {
		return fmt.Errorf("logstore: map %s: %w", s.indexPath, err)
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

// prefaultRefused is set once the kernel has refused a prefault.
var prefaultRefused atomic.Bool

// prefault makes the pages from position on writable in the mapping in
// one system call (MADV_POPULATE_WRITE), when the writer reaches pages not
// yet populated or a sync has write-protected them again. It is only an
// optimisation: a kernel without MADV_POPULATE_WRITE (before Linux 5.14)
// is asked once, and records then fault the pages in.
func (s *segment) prefault(position, size int64) {
	if prefaultRefused.Load() {
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
			prefaultRefused.Store(true)
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
			return fmt.Errorf("logstore: write %s: %w", s.logPath, err)
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

// indexEntryAt returns the index entry of the i-th record of the segment.
func (s *segment) indexEntryAt(i uint64) indexEntry {
	at := fileHeaderSize + i*indexEntrySize
	return readIndexEntry(s.indexMap[at : at+indexEntrySize])
}

// indexLocked records the record at offset, of size bytes framed and
// payload bytes of headers and data, just written at writePos: its index
// entry, and the segment's counts. The log's writer lock is held.
func (s *segment) indexLocked(offset uint64, timestamp int64, payload int, size int64) {
	s.putIndexEntry(offset-s.baseOffset, indexEntry{position: uint32(s.writePos), size: uint32(payload), timestamp: timestamp})
	s.writePos += size
	s.payloadBytes.Add(int64(payload))
	if offset == s.baseOffset {
		s.firstTimestamp.Store(timestamp)
	}
}

func (s *segment) putIndexEntry(i uint64, e indexEntry) {
	at := fileHeaderSize + i*indexEntrySize
	putIndexEntry(s.indexMap[at:at+indexEntrySize], e)
}

// syncData makes the .log durable: fdatasync writes back the pages
// dirtied through the mapping and the size grown by fallocate.
func (s *segment) syncData() error {
	start := time.Now()
	err := s.faults.doSync(s.logFile)
	s.syncGen.Add(1)
	s.observer.Synced(time.Since(start), err)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.logPath, err)
	}
	return nil
}

// syncIndex makes the .idx durable. The index is derived data, so it is
// synced only when a segment is sealed or closed; recovery rebuilds the
// newest segment's index from its .log.
func (s *segment) syncIndex() error {
	if err := s.faults.doSync(s.indexFile); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSyncFailed, s.indexPath, err)
	}
	return nil
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

// fileMapping is the path of the file whose mapping holds addr, or "":
// only faults on the segment's own files are turned into errors, and the
// error names the file.
func (s *segment) fileMapping(addr uintptr) string {
	for _, m := range []struct {
		data mmap.MMap
		path string
	}{{s.logMap, s.logPath}, {s.indexMap, s.indexPath}} {
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
