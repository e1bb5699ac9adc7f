package winevt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
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

// chunkCutOff says that a chunk slot ends with the file: not damage while
// the file grows.
const chunkCutOff = "cut off at the end of the file"

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
	avail       int    // bytes present (< chunkSize for a cut last slot)
	order       uint64 // the record number it starts at (chunkOrder)
}

// sane reports whether the header's record range is possible.
func (s slot) sane() bool { return saneRange(s.first, s.last) }

// trusted reports whether the header's record range is possible and agrees
// with the chunk's records.
func (s slot) trusted() bool { return s.sane() && s.order == s.first }

// maxID is the highest record number the chunk header announces: its last
// one, or as many as a chunk can hold after order when its range is damaged.
// (A chunk's records can go beyond it: see maxPlausibleID.)
func (s slot) maxID() uint64 {
	if s.trusted() {
		return s.last
	}
	if s.order > math.MaxUint64-maxChunkRecords {
		return math.MaxUint64
	}
	return s.order + maxChunkRecords - 1
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
	var h [chunkHeaderSize + recordHeader]byte // the header and the first record's
	for i, off := 0, int64(fileHeaderSize); off+0x30 <= size; i, off = i+1, off+chunkSize {
		clear(h[:])
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
			st.addError(fmt.Sprintf("%s: chunk %d (offset 0x%x): %s (%d of %d bytes)", name, i, off, chunkCutOff, avail, chunkSize))
			continue
		}
		s := slot{index: i, off: off, first: le.Uint64(h[0x18:]), last: le.Uint64(h[0x20:]), avail: avail}
		s.order = chunkOrder(f, s, h[chunkHeaderSize:])
		out = append(out, s)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].order < out[b].order })
	return out, nil
}

// chunkOrder returns the record number chunk s starts at, so that chunks
// are read in record order even when a damaged header says otherwise: the
// header's first number when its first record (rec0, its header) agrees;
// else that record's number when the next record continues it; else the
// header's when its range is sane; else what most records count from.
func chunkOrder(f io.ReaderAt, s slot, rec0 []byte) uint64 {
	if bytes.Equal(rec0[:4], recordMagic) {
		id0 := le.Uint64(rec0[8:])
		if s.sane() && id0 == s.first {
			return s.first
		}
		var rec1 [16]byte
		next := int64(chunkHeaderSize) + int64(le.Uint32(rec0[4:]))
		if next >= chunkHeaderSize+minRecordSize && next+int64(len(rec1)) <= chunkSize {
			if _, err := f.ReadAt(rec1[:], s.off+next); err == nil && bytes.Equal(rec1[:4], recordMagic) && le.Uint64(rec1[8:]) == id0+1 {
				return id0
			}
		}
	}
	if s.sane() {
		return s.first
	}
	return inferOrder(f, s)
}

// inferOrder returns the number the records of a chunk whose header range
// is damaged count from, read from the records themselves.
func inferOrder(f io.ReaderAt, s slot) uint64 {
	bp, err := readSlot(f, s)
	if err != nil {
		return s.first
	}
	defer chunkPool.Put(bp)
	heads, _ := walkRecords(*bp, s.avail, recordsLimit(*bp))
	if len(heads) == 0 {
		return s.first
	}
	return idBase(heads)
}

// recordsLimit is where the records of a chunk end: its free space offset,
// or the chunk's end when that offset is unusable.
func recordsLimit(data []byte) int {
	free := int(le.Uint32(data[0x30:]))
	if free < chunkHeaderSize || free > chunkSize {
		return chunkSize
	}
	return free
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

// rec is one record of a chunk: decoded, or damaged (err).
type rec struct {
	id      uint64
	off     int // offset in the chunk
	ev      ingest.Event
	hasTime bool
	hdrTime time.Time // the record header's time
	err     error     // the record could not be decoded, or its number is implausible
	badID   bool      // its number is implausible
	badTime bool      // its time was impossible and has been replaced
	rawTime string    // TimeCreated when it could not be parsed
	lib     []string  // what golang-evtx logged while decoding it
}

// chunkOut is the result of decoding one chunk.
type chunkOut struct {
	slot  slot
	recs  []rec
	stats Stats
	// tail is set when decoding stopped early at a bad record boundary
	// (the rest of the chunk could not be walked): where and why.
	tail string
	// header lists the problems of the chunk header (checksums, free
	// space offset), which do not stop its records from being read.
	header []string
}

// decoder holds what decoding the chunks of one read of a file needs.
type decoder struct {
	fi      fileInfo
	name    string // file name, for places
	norm    *normalizer
	minID   uint64    // records numbered up to minID are not decoded
	ceiling uint64    // the highest plausible record number (ceiling)
	now     time.Time // the reader's clock, for impossible times
}

// place names a chunk in errors.
func (d *decoder) place(s slot) string {
	return fmt.Sprintf("%s: chunk %d (offset 0x%x)", d.name, s.index, s.off)
}

// recPlace names a record in errors.
func (d *decoder) recPlace(s slot, id uint64, off int) string {
	return fmt.Sprintf("%s: record %d (offset 0x%x)", d.place(s), id, off)
}

// chunk decodes the records of a chunk. data holds the slot (padded to
// 64 KiB when the file ends inside it; s.avail bytes are real).
func (d *decoder) chunk(data []byte, s slot) chunkOut {
	out := chunkOut{slot: s}
	st := &out.stats
	st.Chunks++
	limit := d.checkHeader(data, s, &out)
	heads, tail := walkRecords(data, s.avail, limit)
	if tail != "" {
		out.tail = d.place(s) + ": " + tail
		st.BadRecords++
		st.addError(out.tail)
	}
	plausible := plausibleIDs(s, heads, d.ceiling)
	cd := newChunkDecoder(data)
	for i, h := range heads {
		if !plausible[i] {
			r := rec{id: h.id, off: h.off, badID: true,
				err: fmt.Errorf("implausible record number (the chunk header says %d to %d; not consecutive with a neighbour)", s.first, s.last)}
			d.addRec(&out, r)
			continue
		}
		if h.id > d.minID {
			d.addRec(&out, decodeRecord(cd, d.norm, h.off, h.size, h.id))
		}
	}
	checkTimes(out.recs, d.now, st)
	return out
}

// addRec appends r to out and counts it when it is damaged.
func (d *decoder) addRec(out *chunkOut, r rec) {
	if r.err != nil {
		out.stats.BadRecords++
		out.stats.addError(fmt.Sprintf("%s: %v", d.recPlace(out.slot, r.id, r.off), r.err))
	}
	if len(r.lib) > 0 {
		out.stats.ParserWarnings++
	}
	out.recs = append(out.recs, r)
}

// checkHeader checks a chunk's free space offset and CRC32s, noting what
// is wrong in out; it returns where the records end.
func (d *decoder) checkHeader(data []byte, s slot, out *chunkOut) (limit int) {
	problem := func(what string) {
		e := d.place(s) + ": " + what
		out.header = append(out.header, e)
		out.stats.addError(e)
	}
	limit = recordsLimit(data)
	if limit == chunkSize && int(le.Uint32(data[0x30:])) != chunkSize {
		problem(fmt.Sprintf("bad free space offset 0x%x; reading to the first bad record", le.Uint32(data[0x30:])))
	}
	if d.fi.noCRC {
		return limit
	}
	hc := crc32.NewIEEE()
	hc.Write(data[:0x78])
	hc.Write(data[0x80:chunkHeaderSize])
	switch {
	case hc.Sum32() != le.Uint32(data[0x7c:]):
		out.stats.ChecksumErrors++
		problem("chunk header checksum mismatch (read anyway)")
	case limit <= s.avail && crc32.ChecksumIEEE(data[chunkHeaderSize:limit]) != le.Uint32(data[0x34:]):
		out.stats.ChecksumErrors++
		problem("record data checksum mismatch (read anyway)")
	}
	return limit
}

// decodeRecord decodes the record at off; a panic of the binary XML parser
// is turned into the record's error.
func decodeRecord(cd *chunkDecoder, n *normalizer, off, size int, id uint64) (r rec) {
	r.id, r.off = id, off
	r.hdrTime = fileTime(le.Uint64(cd.data[off+16:]))
	defer func() {
		if p := recover(); p != nil {
			r.err = fmt.Errorf("binary XML: %v", p)
		}
		r.lib = cd.takeLib()
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
	r.ev, r.hasTime = n.normalize(ev, r.hdrTime)
	if raw := strings.TrimSpace(ev.child("System").child("TimeCreated").attr("SystemTime")); raw != "" {
		if _, ok := parseSystemTime(raw); !ok {
			r.rawTime = raw // damaged: the header time stands in, see checkTimes
		}
	}
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

// ReadEVTXFile reads the EVTX file at path as ReadEVTX does (opened
// shared with the Event Log service on Windows).
func ReadEVTXFile(ctx context.Context, path string, cfg DecoderConfig, emit func(ingest.Event)) (Stats, error) {
	f, err := ingest.OpenShared(path)
	if err != nil {
		return Stats{}, fmt.Errorf("winevt: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return Stats{}, fmt.Errorf("winevt: %w", err)
	}
	return ReadEVTX(ctx, f, info.Size(), path, cfg, emit)
}

// ReadEVTX reads every readable record of an EVTX file (replay) and emits
// them in record order. Damaged chunks and records are isolated: each is
// counted with its place in Stats and never stops the rest of the file.
// Chunks are found by scanning the 64 KiB slots from the 4 KiB boundary on,
// whatever the file header says, so a file with a damaged or stale header
// is read all the same. Chunks are decoded in parallel (GOMAXPROCS workers).
// The error is only for I/O or a file that is not EVTX at all (ErrNotEVTX).
//
// r holds the file's size bytes; path names it in logs and errors, and its
// base name makes the events' IDs.
func ReadEVTX(ctx context.Context, r io.ReaderAt, size int64, path string, cfg DecoderConfig, emit func(ingest.Event)) (Stats, error) {
	var st Stats
	f := r
	name := filepath.Base(path)
	fi, err := readFileHeader(f)
	if err != nil {
		return st, fmt.Errorf("winevt: %s: %w", path, err)
	}
	slots, err := scanSlots(f, size, name, &st)
	if err != nil {
		return st, err
	}
	d := &decoder{fi: fi, name: name, norm: &normalizer{ident: cfg.Identity}, ceiling: ceiling(slots), now: cfg.now()}
	log := cfg.logger()
	warned := 0
	err = decodeSlots(ctx, f, slots, d, func(co *chunkOut) {
		for i := range co.recs {
			r := &co.recs[i]
			if len(r.lib) > 0 && warned < maxParserWarnings {
				warned++
				logParserWarning(log, path, co.slot, r)
			}
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
	if len(st.Errors) > 0 || st.BadTimes > 0 || st.ParserWarnings > 0 {
		first := ""
		if len(st.Errors) > 0 {
			first = st.Errors[0]
		}
		log.Warn("winevt: damaged EVTX file; readable records were read", "path", path,
			"bad_chunks", st.BadChunks, "bad_records", st.BadRecords, "checksum_errors", st.ChecksumErrors,
			"bad_times", st.BadTimes, "parser_warnings", st.ParserWarnings, "first", first)
	}
	return st, err
}

// maxParserWarnings bounds the parser warnings ReadEVTX logs per file; the
// rest are only counted (Stats.ParserWarnings).
const maxParserWarnings = maxErrors

// logParserWarning logs, as one warning, what golang-evtx printed while
// decoding record r of chunk s.
func logParserWarning(log *slog.Logger, path string, s slot, r *rec) {
	args := []any{"path", path, "chunk", s.index, "chunk_offset", fmt.Sprintf("0x%x", s.off),
		"record", r.id, "record_offset", fmt.Sprintf("0x%x", r.off), "messages", len(r.lib), "message", r.lib[0]}
	if r.err != nil {
		args = append(args, "error", r.err.Error())
	}
	log.Warn("winevt: golang-evtx could not parse a record", args...)
}

// decodeSlots decodes the chunks of slots with up to GOMAXPROCS workers and
// hands the results to sink in slot order.
func decodeSlots(ctx context.Context, f io.ReaderAt, slots []slot, d *decoder, sink func(*chunkOut)) error {
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
				results[i] <- d.slot(f, s)
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

// slot reads and decodes one chunk; a panic is confined to the chunk.
func (d *decoder) slot(f io.ReaderAt, s slot) (co chunkOut) {
	defer func() {
		if p := recover(); p != nil {
			co = chunkOut{slot: s}
			co.stats.BadChunks++
			co.stats.addError(fmt.Sprintf("%s: %v", d.place(s), p))
		}
	}()
	bp, err := readSlot(f, s)
	if err != nil {
		co.slot = s
		co.stats.BadChunks++
		co.stats.addError(fmt.Sprintf("%s: read: %v", d.place(s), err))
		return co
	}
	defer chunkPool.Put(bp)
	return d.chunk(*bp, s)
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
