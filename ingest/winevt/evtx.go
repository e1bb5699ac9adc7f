package winevt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// EVTX layout (libyal's "Windows XML Event Log (EVTX)" format description).
const (
	fileHeaderSize  = 0x1000  // the file header block; chunks follow
	chunkSize       = 0x10000 // 64 KiB
	chunkHeaderSize = 0x200   // header, string and template tables
	recordHeader    = 24      // magic, size, record id, FILETIME
	fileFlagNoCRC   = 0x4     // header flag: CRC32s are not maintained
)

var (
	fileMagic   = []byte("ElfFile\x00")
	chunkMagic  = []byte("ElfChnk\x00")
	recordMagic = []byte{0x2a, 0x2a, 0x00, 0x00}
	zeroTime    time.Time
)

// ErrNotEVTX is returned by ReadEVTX for a file that is not EVTX at all.
var ErrNotEVTX = errors.New("not an EVTX file (no ElfFile signature)")

// DetectEVTX reports whether head (the first bytes of a file) starts with the
// EVTX file signature "ElfFile\x00".
func DetectEVTX(head []byte) bool { return bytes.HasPrefix(head, fileMagic) }

// slot is one 64 KiB chunk slot of a file.
type slot struct {
	index       int   // slot number (0 = the chunk at 0x1000)
	off         int64 // file offset
	first, last uint64
	avail       int // bytes present (< chunkSize for a cut last slot)
}

// fileInfo is what ReadEVTX and the Source need of a file header.
type fileInfo struct {
	noCRC bool
}

// readFileHeader checks the signature; an unreadable header beyond the
// signature does not matter: chunks are found by scanning the 64 KiB slots.
func readFileHeader(f io.ReaderAt) (fileInfo, error) {
	var h [128]byte
	n, err := f.ReadAt(h[:], 0)
	if n < len(fileMagic) {
		if err == nil || err == io.EOF {
			return fileInfo{}, ErrNotEVTX
		}
		return fileInfo{}, err
	}
	if !DetectEVTX(h[:n]) {
		return fileInfo{}, ErrNotEVTX
	}
	var fi fileInfo
	if n >= 0x7c {
		fi.noCRC = le.Uint32(h[0x78:])&fileFlagNoCRC != 0
	}
	return fi, nil
}

// scanSlots reads the header of every chunk slot of a file of the given
// size and returns the chunks in record order. Empty slots are skipped; slots
// with another signature are counted in st.
func scanSlots(f io.ReaderAt, size int64, name string, st *Stats) ([]slot, error) {
	var out []slot
	var h [0x30]byte
	for i, off := 0, int64(fileHeaderSize); off+int64(len(h)) <= size; i, off = i+1, off+chunkSize {
		if _, err := f.ReadAt(h[:], off); err != nil && err != io.EOF {
			return out, fmt.Errorf("winevt: %s: chunk %d (offset 0x%x): %w", name, i, off, err)
		}
		avail := int(min(int64(chunkSize), size-off))
		if !bytes.Equal(h[:8], chunkMagic) {
			switch {
			case !allZero(h[:]):
				st.BadChunks++
				st.addError(fmt.Sprintf("%s: chunk %d (offset 0x%x): bad chunk signature %q", name, i, off, h[:8]))
			case !zeroSlot(f, off, avail):
				st.BadChunks++
				st.addError(fmt.Sprintf("%s: chunk %d (offset 0x%x): no chunk signature, but the slot holds data", name, i, off))
			}
			continue
		}
		if avail < chunkSize {
			// Like libevtx and python-evtx: a chunk cut by the end of the
			// file is not read.
			st.BadChunks++
			st.addError(fmt.Sprintf("%s: chunk %d (offset 0x%x): cut off at the end of the file (%d of %d bytes)", name, i, off, avail, chunkSize))
			continue
		}
		out = append(out, slot{index: i, off: off, first: le.Uint64(h[0x18:]), last: le.Uint64(h[0x20:]), avail: avail})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].first < out[b].first })
	return out, nil
}

// zeroSlot reports whether the slot at off holds only zero bytes.
func zeroSlot(f io.ReaderAt, off int64, avail int) bool {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	b := (*bp)[:avail]
	n, _ := f.ReadAt(b, off)
	return allZero(b[:n])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// rec is one decoded record of a chunk.
type rec struct {
	id      uint64
	ev      ingest.Event
	hasTime bool
	err     error // the record could not be decoded
}

// chunkOut is the result of decoding one chunk.
type chunkOut struct {
	recs  []rec
	stats Stats
	// tailErr is set when decoding stopped early at a bad record boundary
	// (the rest of the chunk could not be walked).
	tailErr bool
}

// decodeChunk decodes the records of a chunk. data holds the slot (padded to
// 64 KiB when the file ends inside it; avail bytes are real).
func decodeChunk(data []byte, s slot, fi fileInfo, name string, n *normalizer, minID uint64) chunkOut {
	var out chunkOut
	st := &out.stats
	place := fmt.Sprintf("%s: chunk %d (offset 0x%x)", name, s.index, s.off)
	st.Chunks++
	free := int(le.Uint32(data[0x30:]))
	limit := free
	if free < chunkHeaderSize || free > chunkSize {
		st.addError(fmt.Sprintf("%s: bad free space offset 0x%x; reading to the first bad record", place, free))
		limit = chunkSize
	}
	if !fi.noCRC {
		hc := crc32.NewIEEE()
		hc.Write(data[:0x78])
		hc.Write(data[0x80:chunkHeaderSize])
		if hc.Sum32() != le.Uint32(data[0x7c:]) {
			st.ChecksumErrors++
			st.addError(fmt.Sprintf("%s: chunk header checksum mismatch (read anyway)", place))
		} else if limit <= s.avail && crc32.ChecksumIEEE(data[chunkHeaderSize:limit]) != le.Uint32(data[0x34:]) {
			st.ChecksumErrors++
			st.addError(fmt.Sprintf("%s: record data checksum mismatch (read anyway)", place))
		}
	}
	cd := newChunkDecoder(data)
	off := chunkHeaderSize
	for off+recordHeader <= limit {
		if !bytes.Equal(data[off:off+4], recordMagic) {
			if limit == chunkSize && allZero(data[off:off+4]) {
				break // end of records in a chunk without a usable free space offset
			}
			st.BadRecords++
			st.addError(fmt.Sprintf("%s: offset 0x%x: bad record signature; rest of the chunk skipped", place, off))
			out.tailErr = true
			break
		}
		size := int(le.Uint32(data[off+4:]))
		id := le.Uint64(data[off+8:])
		if size < recordHeader+4 || off+size > chunkSize {
			st.BadRecords++
			st.addError(fmt.Sprintf("%s: record %d (offset 0x%x): bad record size %d; rest of the chunk skipped", place, id, off, size))
			out.tailErr = true
			break
		}
		if off+size > s.avail {
			st.BadRecords++
			st.addError(fmt.Sprintf("%s: record %d (offset 0x%x): cut off at the end of the file", place, id, off))
			out.tailErr = true
			break
		}
		if id > minID {
			r := decodeRecord(cd, n, off, size, id)
			if r.err != nil {
				st.BadRecords++
				st.addError(fmt.Sprintf("%s: record %d (offset 0x%x): %v", place, id, off, r.err))
			}
			out.recs = append(out.recs, r)
		}
		off += size
	}
	return out
}

// decodeRecord decodes the record at off; a panic of the binary XML parser
// is turned into the record's error.
func decodeRecord(cd *chunkDecoder, n *normalizer, off, size int, id uint64) (r rec) {
	r.id = id
	defer func() {
		if p := recover(); p != nil {
			r.err = fmt.Errorf("binary XML: %v", p)
		}
	}()
	roots, err := cd.fragment(off+recordHeader, off+size-4, 0)
	if err != nil {
		r.err = err
		return r
	}
	var ev *elem
	for _, e := range roots {
		if e.name == "Event" {
			ev = e
			break
		}
	}
	if ev == nil {
		r.err = errors.New("no Event element")
		return r
	}
	r.ev, r.hasTime = n.normalize(ev, fileTime(le.Uint64(cd.data[off+16:])))
	return r
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// readSlot reads a chunk slot into a pooled buffer (zero-padded).
func readSlot(f io.ReaderAt, s slot) (*[]byte, error) {
	bp := chunkPool.Get().(*[]byte)
	b := *bp
	n, err := f.ReadAt(b[:s.avail], s.off)
	if n < s.avail {
		chunkPool.Put(bp)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	clear(b[s.avail:])
	return bp, nil
}

// ReadEVTX reads every readable record of an EVTX file (replay) and emits
// them in record order. Damaged chunks and records are isolated: each is
// counted with its place in Stats and never stops the rest of the file.
// Chunks are found by scanning the 64 KiB slots from the 4 KiB boundary on,
// whatever the file header says, so a file with a damaged or stale header
// is read all the same. Chunks are decoded in parallel (GOMAXPROCS workers).
// The error is only for I/O or a file that is not EVTX at all (ErrNotEVTX).
func ReadEVTX(ctx context.Context, path string, cfg DecoderConfig, emit func(ingest.Event)) (Stats, error) {
	var st Stats
	f, err := openShared(path)
	if err != nil {
		return st, fmt.Errorf("winevt: %w", err)
	}
	defer f.Close()
	name := filepath.Base(path)
	info, err := f.Stat()
	if err != nil {
		return st, fmt.Errorf("winevt: %w", err)
	}
	fi, err := readFileHeader(f)
	if err != nil {
		return st, fmt.Errorf("winevt: %s: %w", path, err)
	}
	slots, err := scanSlots(f, info.Size(), name, &st)
	if err != nil {
		return st, err
	}
	n := &normalizer{ident: cfg.Identity}
	err = decodeSlots(ctx, f, slots, fi, name, n, 0, func(co *chunkOut) {
		for i := range co.recs {
			r := &co.recs[i]
			if r.err != nil {
				continue
			}
			if !r.hasTime {
				co.stats.NoTime++
			}
			co.stats.Records++
			emit(r.ev)
		}
		st.merge(&co.stats)
	})
	if len(st.Errors) > 0 {
		cfg.logger().Warn("winevt: damaged EVTX file; readable records were read", "path", path,
			"bad_chunks", st.BadChunks, "bad_records", st.BadRecords, "checksum_errors", st.ChecksumErrors, "first", st.Errors[0])
	}
	return st, err
}

// decodeSlots decodes the chunks of slots with up to GOMAXPROCS workers and
// hands the results to sink in slot order.
func decodeSlots(ctx context.Context, f io.ReaderAt, slots []slot, fi fileInfo, name string, n *normalizer, minID uint64, sink func(*chunkOut)) error {
	workers := decodeWorkers()
	window := 2 * workers
	results := make([]chan chunkOut, len(slots))
	for i := range results {
		results[i] = make(chan chunkOut, 1)
	}
	sem := make(chan struct{}, window)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i, s := range slots {
			select {
			case sem <- struct{}{}:
			case <-stop:
				return
			}
			go func(i int, s slot) {
				results[i] <- decodeSlot(f, s, fi, name, n, minID)
			}(i, s)
		}
	}()
	for i := range slots {
		var co chunkOut
		select {
		case co = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		sink(&co)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// decodeSlot reads and decodes one chunk; a panic is confined to the chunk.
func decodeSlot(f io.ReaderAt, s slot, fi fileInfo, name string, n *normalizer, minID uint64) (co chunkOut) {
	defer func() {
		if p := recover(); p != nil {
			co = chunkOut{}
			co.stats.BadChunks++
			co.stats.addError(fmt.Sprintf("%s: chunk %d (offset 0x%x): %v", name, s.index, s.off, p))
		}
	}()
	bp, err := readSlot(f, s)
	if err != nil {
		co.stats.BadChunks++
		co.stats.addError(fmt.Sprintf("%s: chunk %d (offset 0x%x): read: %v", name, s.index, s.off, err))
		return co
	}
	defer chunkPool.Put(bp)
	return decodeChunk(*bp, s, fi, name, n, minID)
}

// workersOverride sets the number of decoding workers (tests, benchmarks);
// 0 means GOMAXPROCS.
var workersOverride int

func decodeWorkers() int {
	if workersOverride > 0 {
		return workersOverride
	}
	return runtime.GOMAXPROCS(0)
}
