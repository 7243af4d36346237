package logstore

// Storage benchmarks. Each reports MB/s (b.SetBytes) next to a reference
// that does the same I/O with plain files, measured in the same run, so
// that the ratio means something on any machine:
//
//	BenchmarkAppend/<size>/<policy>    Log.Append, then Log.Sync, vs
//	BenchmarkAppendRotating/<segment size>/<policy>  the same with 1 KiB records in 1 or 8 MiB segments: rotations often
//	BenchmarkAppendReference/<size>    os.File.Write of the same bytes, then fdatasync
//	BenchmarkAppendBatch/<size>        Log.AppendBatch of 64 records at a time, then Log.Sync, vs
//	BenchmarkAppendBatchReference/<size>  one os.File.Write per 64 records, then fdatasync
//	BenchmarkAppendAcked/<size>        64 appenders each waiting WaitDurable (group commit), vs
//	BenchmarkAppendAckedReference/<size>  the same with Write and a leader-based group fdatasync
//	BenchmarkReadSequential/1KiB       Scan of a 256 MiB log, vs .../crc32c-{region,records}-reference: CRC-32C of the same mapped bytes
//	BenchmarkReadRandom/1KiB           one record at a random offset, vs .../reference: CRC of that record in a plain mapping
//	BenchmarkOpenLargeLog/{warm,cold}  OpenLog+Close of a log of -bench.openrecords 64-byte records
//
// Records carry no headers. Bytes per op are the record's framed size,
// recordSize(0, n), for the benchmark and its reference alike.

import (
	"context"
	"encoding/binary"
	"flag"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

var benchOpenRecords = flag.Int("bench.openrecords", 10_000_000, "records in the log that BenchmarkOpenLargeLog opens")

var benchSizes = []struct {
	name string
	n    int
}{{"128B", 128}, {"1KiB", 1 << 10}, {"16KiB", 16 << 10}}

// benchOptions are the defaults (64 MiB segments, 4 KiB initial) with a
// quiet logger.
func benchOptions(policy SyncPolicy) Options {
	return Options{Sync: policy, Logger: testOptions().Logger}
}

func benchData(n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	return data
}

func benchOpenLog(b *testing.B, opts Options) *Log {
	b.Helper()
	l, err := OpenLog(b.TempDir(), "bench", opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// BenchmarkAppend appends b.N records through Log.Append and then calls
// Log.Sync, all timed: the figure includes making everything durable
// (under SyncNone, Sync also syncs the segments sealed on the way).
func BenchmarkAppend(b *testing.B) {
	for _, size := range benchSizes {
		for _, policy := range []SyncPolicy{SyncNone, SyncBatch} {
			b.Run(size.name+"/"+policy.String(), func(b *testing.B) {
				l := benchOpenLog(b, benchOptions(policy))
				data := benchData(size.n)
				b.SetBytes(int64(recordSize(0, size.n)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, _, err := l.Append(0, nil, data); err != nil {
						b.Fatal(err)
					}
				}
				if err := l.Sync(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(l.Info().Segments), "segments")
			})
		}
	}
}

// BenchmarkAppendRotating is BenchmarkAppend of 1 KiB records with 1 MiB
// and 8 MiB segments (and the initial preallocation of a whole segment,
// so that growth does not count): a rotation every thousand or eight
// thousand records, so that what starting a segment costs the writer
// shows, in the time of an append that rotates (µs/rotating-append). Its
// reference is BenchmarkAppendReference/1KiB.
func BenchmarkAppendRotating(b *testing.B) {
	for _, c := range []struct {
		name     string
		segments int64
		policy   SyncPolicy
	}{{"1MiB/none", 1 << 20, SyncNone}, {"1MiB/batch", 1 << 20, SyncBatch}, {"8MiB/none", 8 << 20, SyncNone}, {"8MiB/batch", 8 << 20, SyncBatch}} {
		b.Run(c.name, func(b *testing.B) {
			opts := benchOptions(c.policy)
			opts.SegmentBytes = c.segments
			opts.InitialSegmentBytes = opts.SegmentBytes
			l := benchOpenLog(b, opts)
			data := benchData(1 << 10)
			b.SetBytes(int64(recordSize(0, len(data))))
			b.ReportAllocs()
			b.ResetTimer()
			// The appends that rotate are timed on their own: the time a
			// writer waits for its next segment.
			var rotating time.Duration
			rotations, segments := 0, len(*l.segments.Load())
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, _, err := l.Append(0, nil, data); err != nil {
					b.Fatal(err)
				}
				if n := len(*l.segments.Load()); n != segments {
					rotating += time.Since(start)
					rotations, segments = rotations+1, n
				}
			}
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(l.Info().Segments), "segments")
			if rotations > 0 {
				b.ReportMetric(float64(rotating.Microseconds())/float64(rotations), "µs/rotating-append")
			}
		})
	}
}

// benchReferenceFile is the plain file a reference benchmark writes.
func benchReferenceFile(b *testing.B) *os.File {
	f, err := os.Create(filepath.Join(b.TempDir(), "reference.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkAppendReference writes the same framed bytes with os.File.Write
// and one fdatasync at the end.
func BenchmarkAppendReference(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			f := benchReferenceFile(b)
			record := benchData(recordSize(0, size.n))
			b.SetBytes(int64(len(record)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.Write(record); err != nil {
					b.Fatal(err)
				}
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
		})
	}
}

// benchBatch is the records per AppendBatch call in BenchmarkAppendBatch.
const benchBatch = 64

// BenchmarkAppendBatch appends b.N records, benchBatch at a time, through
// Log.AppendBatch (what capture does under load) and then calls Log.Sync.
func BenchmarkAppendBatch(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			l := benchOpenLog(b, benchOptions(SyncBatch))
			data := benchData(size.n)
			entries := make([]Entry, benchBatch)
			b.SetBytes(int64(recordSize(0, size.n)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += benchBatch {
				batch := entries[:min(benchBatch, b.N-i)]
				for k := range batch {
					batch[k] = Entry{Data: data}
				}
				if _, _, err := l.AppendBatch(batch); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkAppendBatchReference writes the same framed bytes with one
// os.File.Write per benchBatch records and one fdatasync at the end.
func BenchmarkAppendBatchReference(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			f := benchReferenceFile(b)
			record := benchData(recordSize(0, size.n))
			chunk := make([]byte, 0, benchBatch*len(record))
			for range benchBatch {
				chunk = append(chunk, record...)
			}
			b.SetBytes(int64(len(record)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += benchBatch {
				if _, err := f.Write(chunk[:min(benchBatch, b.N-i)*len(record)]); err != nil {
					b.Fatal(err)
				}
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// benchAckedWriters is how many appenders wait for durability at once.
const benchAckedWriters = 64

// benchRunAcked runs b.N calls of op spread over benchAckedWriters goroutines.
func benchRunAcked(b *testing.B, op func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < benchAckedWriters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkAppendAcked is group commit: 64 appenders under SyncBatch, each
// waiting for its record to be durable before appending the next. It
// reports the fdatasyncs per acked record.
func BenchmarkAppendAcked(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			var syncs atomic.Int64
			opts := benchOptions(SyncBatch)
			opts.faults = &faultHooks{sync: func(string) error { syncs.Add(1); return nil }}
			l := benchOpenLog(b, opts)
			data := benchData(size.n)
			ctx := context.Background()
			b.SetBytes(int64(recordSize(0, size.n)))
			syncs.Store(0)
			b.ResetTimer()
			benchRunAcked(b, func() error {
				offset, _, err := l.Append(0, nil, data)
				if err != nil {
					return err
				}
				return l.WaitDurable(ctx, offset)
			})
			b.StopTimer()
			b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/op")
		})
	}
}

// benchGroupFile is the reference for BenchmarkAppendAcked: a plain file
// with leader-based group commit. A writer whose bytes are not durable
// either becomes the leader and runs one fdatasync covering everything
// written so far, or waits for the leader.
type benchGroupFile struct {
	f                *os.File
	mu               sync.Mutex
	cond             sync.Cond
	written, durable int64
	syncing          bool
	syncs            int64
}

func (g *benchGroupFile) append(record []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.f.Write(record); err != nil {
		return err
	}
	g.written += int64(len(record))
	mine := g.written
	for g.durable < mine {
		if g.syncing {
			g.cond.Wait()
			continue
		}
		g.syncing = true
		target := g.written
		g.mu.Unlock()
		err := unix.Fdatasync(int(g.f.Fd()))
		g.mu.Lock()
		g.syncing = false
		g.syncs++
		if err != nil {
			g.cond.Broadcast()
			return err
		}
		g.durable = target
		g.cond.Broadcast()
	}
	return nil
}

// BenchmarkAppendAckedReference: the same 64 acked appenders on a plain file.
func BenchmarkAppendAckedReference(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			f := benchReferenceFile(b)
			g := &benchGroupFile{f: f}
			g.cond.L = &g.mu
			record := benchData(recordSize(0, size.n))
			b.SetBytes(int64(len(record)))
			b.ResetTimer()
			benchRunAcked(b, func() error { return g.append(record) })
			b.StopTimer()
			b.ReportMetric(float64(g.syncs)/float64(b.N), "syncs/op")
		})
	}
}

// benchReadLog is a log of 1 KiB records built for the read benchmarks,
// reopened (so its sealed segments are mapped as recovery maps them), and
// with its page cache warm.
type benchReadLog struct {
	log        *Log
	records    int
	recordSize int
	// The same .log files mapped again, plainly, for the references.
	maps   []mmap.MMap
	bases  []uint64
	counts []uint64
}

const (
	benchReadLogBytes = 256 << 20
	benchReadDataSize = 1 << 10
)

func buildBenchReadLog(b *testing.B) *benchReadLog {
	b.Helper()
	dir := b.TempDir()
	r := &benchReadLog{recordSize: recordSize(0, benchReadDataSize)}
	r.records = benchReadLogBytes / r.recordSize
	start := time.Now()
	l, err := OpenLog(dir, "bench", benchOptions(SyncNone))
	if err != nil {
		b.Fatal(err)
	}
	data := benchData(benchReadDataSize)
	for i := 0; i < r.records; i++ {
		if _, _, err := l.Append(int64(i+1), nil, data); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	if r.log, err = OpenLog(dir, "bench", benchOptions(SyncNone)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.log.Close() })
	for _, seg := range *r.log.segments.Load() {
		f, err := os.Open(seg.logPath())
		if err != nil {
			b.Fatal(err)
		}
		m, err := mmap.Map(f, mmap.RDONLY, 0)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Unmap() })
		r.maps = append(r.maps, m)
		r.bases = append(r.bases, seg.baseOffset)
		r.counts = append(r.counts, seg.count.Load())
	}
	// Warm the page cache and both sets of page tables.
	if n := r.scanAll(b); n != r.records*benchReadDataSize {
		b.Fatalf("scan read %d bytes, want %d", n, r.records*benchReadDataSize)
	}
	r.crcAll()
	r.crcRecords(b)
	b.Logf("built %d records of %d bytes in %d segments in %v", r.records, benchReadDataSize, len(r.maps), time.Since(start).Round(time.Millisecond))
	return r
}

// scanAll reads the whole log with Scan (which verifies every checksum)
// and returns the data bytes it saw.
func (r *benchReadLog) scanAll(b *testing.B) int {
	total := 0
	next, err := r.log.Scan(0, func(v RecordView) bool {
		total += len(v.Data)
		return true
	})
	if err != nil || next != uint64(r.records) {
		b.Fatalf("scan: next %d, %v", next, err)
	}
	return total
}

// crcAll is the hardware floor of a sequential read as the brief puts it:
// CRC-32C over the record bytes of every segment, one call per segment.
// (Go's CRC-32C is about twice as fast on inputs under 4 KiB as on long
// ones on some CPUs, so crcRecords is the tighter floor.)
func (r *benchReadLog) crcAll() uint32 {
	var sum uint32
	for i, m := range r.maps {
		sum ^= crc32.Checksum(m[fileHeaderSize:fileHeaderSize+int(r.counts[i])*r.recordSize], castagnoli)
	}
	return sum
}

// crcRecords checks every record's checksum where fixed-size records must
// lie in a plain mapping: the least a verifying sequential read can do.
func (r *benchReadLog) crcRecords(b *testing.B) {
	for i, m := range r.maps {
		for at := fileHeaderSize; at < fileHeaderSize+int(r.counts[i])*r.recordSize; at += r.recordSize {
			record := m[at : at+r.recordSize]
			if crc32.Checksum(record[8:], castagnoli) != binary.LittleEndian.Uint32(record[4:8]) {
				b.Fatalf("segment %d byte %d: bad checksum", i, at)
			}
		}
	}
}

// BenchmarkReadSequential scans a 256 MiB log of 1 KiB records from start
// to end, every checksum verified. The references read the same .log
// files through a plain mapping: CRC-32C over each segment's records in
// one call (region) and record by record (records).
func BenchmarkReadSequential(b *testing.B) {
	r := buildBenchReadLog(b)
	bytes := int64(r.records * r.recordSize)
	b.Run("1KiB", func(b *testing.B) {
		b.SetBytes(bytes)
		b.ReportAllocs()
		for b.Loop() {
			r.scanAll(b)
		}
	})
	b.Run("1KiB/crc32c-region-reference", func(b *testing.B) {
		b.SetBytes(bytes)
		for b.Loop() {
			r.crcAll()
		}
	})
	b.Run("1KiB/crc32c-records-reference", func(b *testing.B) {
		b.SetBytes(bytes)
		for b.Loop() {
			r.crcRecords(b)
		}
	})
}

// BenchmarkReadRandom reads one record at a random offset per op with Scan
// (its callback returning false); the reference checks the CRC of the
// record at its known position in a plain mapping.
func BenchmarkReadRandom(b *testing.B) {
	r := buildBenchReadLog(b)
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := make([]uint64, 1<<16)
	for i := range offsets {
		offsets[i] = rng.Uint64N(uint64(r.records))
	}
	b.Run("1KiB", func(b *testing.B) {
		b.SetBytes(int64(r.recordSize))
		b.ReportAllocs()
		var got uint64
		readOne := func(v RecordView) bool {
			got = v.Offset
			return false
		}
		i := 0
		for b.Loop() {
			want := offsets[i&(len(offsets)-1)]
			i++
			if _, err := r.log.Scan(want, readOne); err != nil || got != want {
				b.Fatalf("read %d: got %d, %v", want, got, err)
			}
		}
	})
	b.Run("1KiB/reference", func(b *testing.B) {
		b.SetBytes(int64(r.recordSize))
		i := 0
		for b.Loop() {
			offset := offsets[i&(len(offsets)-1)]
			i++
			s := len(r.bases) - 1
			for r.bases[s] > offset {
				s--
			}
			at := fileHeaderSize + int(offset-r.bases[s])*r.recordSize
			record := r.maps[s][at : at+r.recordSize]
			if crc32.Checksum(record[8:], castagnoli) != binary.LittleEndian.Uint32(record[4:8]) {
				b.Fatalf("record %d: bad checksum", offset)
			}
		}
	})
}

// BenchmarkOpenLargeLog times OpenLog+Close of a log of -bench.openrecords
// records of 64 bytes (10 million: about 920 MB in 14 segments), with the
// page cache warm, and cold (the log's pages dropped with
// posix_fadvise(DONTNEED) before each open, untimed).
func BenchmarkOpenLargeLog(b *testing.B) {
	records := *benchOpenRecords
	dir := b.TempDir()
	opts := benchOptions(SyncBatch) // what a server opens with
	start := time.Now()
	build := benchOptions(SyncNone)
	l, err := OpenLog(dir, "bench", build)
	if err != nil {
		b.Fatal(err)
	}
	data := benchData(64)
	for i := 0; i < records; i++ {
		if _, _, err := l.Append(int64(i+1), nil, data); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	// Make every file durable (SyncNone does not sync sealed segments) so
	// that DONTNEED can drop their pages.
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		b.Fatal(err)
	}
	var diskBytes int64
	for _, path := range files {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if fi, err := f.Stat(); err == nil {
			diskBytes += fi.Size()
		}
		f.Close()
	}
	l, err = OpenLog(dir, "bench", opts)
	if err != nil {
		b.Fatal(err)
	}
	info := l.Info()
	l.Close()
	if info.EndOffset != uint64(records) {
		b.Fatalf("reopened log ends at %d, want %d", info.EndOffset, records)
	}
	b.Logf("built %d records in %d segments (%.0f MB of files) in %v", records, info.Segments, float64(diskBytes)/1e6, built.Round(time.Millisecond))
	logBytes := int64(records) * int64(recordSize(0, len(data)))

	dropCache := func(b *testing.B) {
		for _, path := range files {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(logBytes)
			for b.Loop() {
				if cold {
					b.StopTimer()
					dropCache(b)
					b.StartTimer()
				}
				l, err := OpenLog(dir, "bench", opts)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(info.Segments), "segments")
			b.ReportMetric(float64(records), "records")
		})
	}
}
