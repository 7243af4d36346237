package logstore

// Leader epochs: the durable checkpoint a replica keeps of which leader
// epoch began at which offset of a log (Kafka's leader epoch cache,
// KIP-101 and KIP-279). A member that rejoins its group asks the leader
// where its own last epoch ended there, and truncates its log to that
// offset, not to a high watermark: records past it were never committed.
//
// # Epochs file
//
// The whole list, rewritten on every change (it is short: one entry per
// change of leader that this log saw) to a temporary name, fdatasynced,
// renamed into place, and the directory synced, so that a crash leaves
// the list before the change or after it:
//
//	 0               8       10      12      16
//	+---------------+-------+-------+-------+---------------------------------+-------+
//	| magic (8)     | vers. | zero  | count | count × {epoch u64, start u64}  | crc32c|
//	+---------------+-------+-------+-------+---------------------------------+-------+
//
//	magic    "VOIKEPO\n"
//	vers.    uint16, currently 1
//	count    uint32, the entries that follow
//	entries  epochs strictly increasing, start offsets never decreasing
//	crc32c   of every byte before it
//
// Little-endian, like every file of the package.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

var epochsMagic = [8]byte{'V', 'O', 'I', 'K', 'E', 'P', 'O', '\n'}

const (
	epochsVersion    = 1
	epochsHeaderSize = 16
	epochEntrySize   = 16
	// maxEpochEntries bounds what a file may claim before it is read.
	maxEpochEntries = 1 << 20
)

// ErrEpochOrder: an epoch assigned that is not above the latest, or that
// starts below where the latest started. Epochs only move forward; the
// list is unchanged.
var ErrEpochOrder = errors.New("logstore: epoch out of order")

// EpochStart is one leader epoch and the offset of the first record
// written in it.
type EpochStart struct {
	Epoch, Start uint64
}

// Epochs is the durable list of leader epochs of one log. Its methods
// are safe for concurrent use; a change is durable when it returns.
type Epochs struct {
	path    string
	mu      sync.Mutex
	entries []EpochStart
}

// OpenEpochs reads the epochs file at path; a missing file is an empty
// list. A file that fails its checks is a *CorruptionError: the list
// decides what a rejoining member truncates, so it is never guessed.
func OpenEpochs(path string) (*Epochs, error) {
	e := &Epochs{path: path}
	// A temporary file left by a crash before its rename is not the list.
	if err := os.Remove(e.tmpPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("logstore: remove %s: %w", e.tmpPath(), err)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return e, nil
	case err != nil:
		return nil, fmt.Errorf("logstore: read epochs: %w", err)
	}
	if e.entries, err = decodeEpochs(data); err != nil {
		return nil, &CorruptionError{Path: path, Reason: err.Error()}
	}
	return e, nil
}

func (e *Epochs) tmpPath() string { return e.path + ".tmp" }

// decodeEpochs checks and decodes an epochs file.
func decodeEpochs(data []byte) ([]EpochStart, error) {
	if len(data) < epochsHeaderSize+4 {
		return nil, fmt.Errorf("epochs file of %d bytes is shorter than its header", len(data))
	}
	if [8]byte(data[:8]) != epochsMagic {
		return nil, errors.New("not an epochs file (bad magic)")
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("epochs file checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(data[8:]); v != epochsVersion {
		return nil, fmt.Errorf("epochs file version %d, want %d", v, epochsVersion)
	}
	count := binary.LittleEndian.Uint32(data[12:])
	if count > maxEpochEntries || len(body) != epochsHeaderSize+int(count)*epochEntrySize {
		return nil, fmt.Errorf("epochs file claims %d entries in %d bytes", count, len(data))
	}
	entries := make([]EpochStart, count)
	for i := range entries {
		at := epochsHeaderSize + i*epochEntrySize
		entries[i] = EpochStart{Epoch: binary.LittleEndian.Uint64(data[at:]), Start: binary.LittleEndian.Uint64(data[at+8:])}
		if i > 0 && (entries[i].Epoch <= entries[i-1].Epoch || entries[i].Start < entries[i-1].Start) {
			return nil, fmt.Errorf("entry %d (epoch %d at %d) does not follow epoch %d at %d",
				i, entries[i].Epoch, entries[i].Start, entries[i-1].Epoch, entries[i-1].Start)
		}
	}
	return entries, nil
}

// encodeEpochs is the file of entries.
func encodeEpochs(entries []EpochStart) []byte {
	data := make([]byte, epochsHeaderSize, epochsHeaderSize+len(entries)*epochEntrySize+4)
	copy(data, epochsMagic[:])
	binary.LittleEndian.PutUint16(data[8:], epochsVersion)
	binary.LittleEndian.PutUint32(data[12:], uint32(len(entries)))
	for _, en := range entries {
		data = binary.LittleEndian.AppendUint64(data, en.Epoch)
		data = binary.LittleEndian.AppendUint64(data, en.Start)
	}
	return binary.LittleEndian.AppendUint32(data, crc32.Checksum(data, castagnoli))
}

// List is every epoch, oldest first.
func (e *Epochs) List() []EpochStart {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.entries)
}

// Latest is the newest epoch, and false when there is none.
func (e *Epochs) Latest() (EpochStart, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.entries) == 0 {
		return EpochStart{}, false
	}
	return e.entries[len(e.entries)-1], true
}

// Assign records that epoch began at offset start, durably. Assigning the
// latest epoch again at its own start does nothing (a restart assigns
// what it already had); an epoch not above the latest, or starting below
// it, is ErrEpochOrder.
func (e *Epochs) Assign(epoch, start uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := len(e.entries); n > 0 {
		latest := e.entries[n-1]
		if latest == (EpochStart{epoch, start}) {
			return nil
		}
		if epoch <= latest.Epoch || start < latest.Start {
			return fmt.Errorf("%w: epoch %d at %d after epoch %d at %d", ErrEpochOrder, epoch, start, latest.Epoch, latest.Start)
		}
	}
	return e.writeLocked(append(slices.Clone(e.entries), EpochStart{epoch, start}))
}

// EndOffsetFor answers a rejoining member (KIP-279): for its epoch, the
// latest epoch held here that is not above it, and where that epoch ended
// here, the start of the next epoch, or end (this log's end offset) when
// it is the latest. found is false when every epoch held is above epoch:
// then the member has nothing in common with this log past its start.
func (e *Epochs) EndOffsetFor(epoch, end uint64) (held EpochStart, endOffset uint64, found bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i, _ := slices.BinarySearchFunc(e.entries, epoch+1, func(en EpochStart, target uint64) int {
		return cmp.Compare(en.Epoch, target)
	})
	// entries[:i] have Epoch <= epoch.
	if i == 0 {
		return EpochStart{}, 0, false
	}
	if i == len(e.entries) {
		return e.entries[i-1], end, true
	}
	return e.entries[i-1], e.entries[i].Start, true
}

// TruncateFrom forgets the epochs that begin at or after offset, durably:
// the log was truncated to offset, so nothing of them is left. Call it
// after the log's truncation; a crash between the two leaves epochs that
// begin past the log's end, which the next TruncateFrom removes.
func (e *Epochs) TruncateFrom(offset uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := len(e.entries)
	for keep > 0 && e.entries[keep-1].Start >= offset {
		keep--
	}
	if keep == len(e.entries) {
		return nil
	}
	return e.writeLocked(slices.Clone(e.entries[:keep]))
}

// writeLocked makes entries the list, on disk first: a temporary file,
// synced, renamed over the list, and the directory synced. The caller
// holds mu. On an error the list in memory is unchanged, and the file may
// hold either list: reopen to know which.
func (e *Epochs) writeLocked(entries []EpochStart) error {
	if err := writeFileSync(e.tmpPath(), encodeEpochs(entries)); err != nil {
		return err
	}
	if err := os.Rename(e.tmpPath(), e.path); err != nil {
		return fmt.Errorf("logstore: rename epochs: %w", err)
	}
	if err := syncDir(filepath.Dir(e.path)); err != nil {
		return err
	}
	e.entries = entries
	return nil
}
