package nomadlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// DefaultPollInterval is the default Config.PollInterval.
const DefaultPollInterval = 250 * time.Millisecond

// fpSize is how many head bytes the fingerprint of a file covers.
const fpSize = 256

// readChunk is the size of one read.
const readChunk = 64 << 10

// Config configures a Tailer.
type Config struct {
	// Paths are file paths and globs (filepath.Glob syntax), re-evaluated
	// every PollInterval.
	Paths []string
	// ReadFrom is where to start in a file found at startup that has no
	// checkpoint: "end" (default) or "beginning". Files that appear later
	// are read from the beginning.
	ReadFrom string
	// DefaultNode is the node of lines that do not name one (default: the
	// host name).
	DefaultNode string
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
	// MaxLineBytes: longer lines are counted, logged and skipped (default 1 MiB).
	MaxLineBytes int
	// PollInterval is how often files are checked (default 250ms).
	PollInterval time.Duration
	// Checkpoints stores the read positions; may be nil (no persistence).
	Checkpoints *ingest.Checkpoints
	// Now is the clock for records without a timestamp (default time.Now).
	Now func() time.Time
}

// TailStats are the counters of a Tailer: totals over all files ever
// followed, and the files followed now.
type TailStats struct {
	// Files are the files followed now, by path.
	Files []FileStats
	// Lines, Records, Oversize and Unparsed are totals (see Stats).
	Lines, Records, Oversize, Unparsed int64
	// Unreadable counts failed attempts to open or stat a matched path.
	Unreadable int64
	// Rotations counts new files found at a path that had another file.
	Rotations int64
	// Truncations counts files that were truncated or rewritten in place.
	Truncations int64
	// Vanished counts files that stopped matching the paths (deleted or
	// renamed away).
	Vanished int64
}

// FileStats are the counters of one followed file.
type FileStats struct {
	// Path is where the file was last seen.
	Path string
	// ID is the Event.ID prefix of the file.
	ID string
	// Offset is how far the file has been read.
	Offset int64
	// Stats are the counters of the file's Decoder.
	Stats Stats
}

// Tailer follows Nomad agent log files and emits their records. It
// implements ingest.Source.
type Tailer struct {
	cfg Config
	log *slog.Logger

	running atomic.Bool

	// Owned by Run.
	files  []*tfile
	byPath map[string]*tfile
	// buf is the read buffer, one for every file: the decoder copies what
	// it keeps (a chunk is read into it again within one file too).
	buf []byte
	// newIDs is set when discover recorded the identity of a new file:
	// the poll writes the checkpoints once, before it reads any file.
	newIDs     bool
	unreadable map[string]bool // paths whose failure was logged
	ctx        context.Context
	out        chan<- ingest.Event
	aborted    bool

	mu     sync.Mutex
	totals TailStats // of forgotten files + counters
	live   []FileStats
}

// ident is the identity of a file: its system ID (device+inode or volume
// serial+file index) and head fingerprint. It is immutable; a new one is made
// when the fingerprint grows.
type ident struct {
	key    string // checkpoint key
	sysID  string
	fp     string // hex sha256 of the first fpLen bytes
	fpLen  int
	prefix string // Event.ID prefix
}

type checkpoint struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	FP     string `json:"fp"`
	FPLen  int    `json:"fp_len"`
	ID     string `json:"id"`
}

type tfile struct {
	path string
	f    *os.File
	fi   os.FileInfo
	id   *ident
	dec  *Decoder
	emit func(ingest.Event)

	readOff   int64 // next byte to read
	lineStart int64 // offset of the first byte of part
	part      []byte
	discard   bool // inside an oversize line
	idle      int  // polls without new data
	seen      bool // matched by a path in this poll
	missed    int  // polls in a row it was not matched in
	vanished  bool // logged as vanished
	forgotten atomic.Bool
}

// New validates cfg and returns a Tailer. A bad glob is an error naming it.
func New(cfg Config, log *slog.Logger) (*Tailer, error) {
	if log == nil {
		log = slog.Default()
	}
	errs := ingest.ValidateFollow("nomadlog", cfg.Paths, &cfg.ReadFrom, cfg.PollInterval)
	if cfg.MaxLineBytes < 0 {
		errs = append(errs, fmt.Errorf("nomadlog: max_line_bytes %d: negative", cfg.MaxLineBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultNode == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.DefaultNode = h
		}
	}
	if cfg.Identity == nil {
		cfg.Identity = ingest.NewIdentity()
	}
	return &Tailer{cfg: cfg, log: log, byPath: map[string]*tfile{}, unreadable: map[string]bool{}}, nil
}

// Name identifies the source in logs and metrics.
func (t *Tailer) Name() string {
	return "nomadlog:" + strings.Join(t.cfg.Paths, ",")
}

// Stats returns the counters; safe to call while Run runs.
func (t *Tailer) Stats() TailStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.totals
	s.Files = append([]FileStats(nil), t.live...)
	for _, f := range s.Files {
		s.add(f.Stats)
	}
	return s
}

// add adds the counters of a file's Decoder to the totals.
func (s *TailStats) add(st Stats) {
	s.Lines += st.Lines
	s.Records += st.Records
	s.Oversize += st.Oversize
	s.Unparsed += st.Unparsed
}

func (t *Tailer) count(fn func(s *TailStats)) {
	t.mu.Lock()
	fn(&t.totals)
	t.mu.Unlock()
}

// Run follows the files and sends their records to out until ctx is done.
// It never closes out. Pending records are not sent on return; their lines
// are read again after a restart (the checkpoints only cover sent records
// that were committed).
func (t *Tailer) Run(ctx context.Context, out chan<- ingest.Event) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("nomadlog: Run called twice")
	}
	t.ctx, t.out = ctx, out
	defer t.shutdown()
	ingest.PollLoop(ctx, t.cfg.PollInterval, t.poll, t.flushCheckpoints)
	return nil
}

func (t *Tailer) flushCheckpoints() {
	if t.cfg.Checkpoints == nil {
		return
	}
	if err := t.cfg.Checkpoints.Flush(); err != nil {
		t.log.Error("nomadlog: writing checkpoints", "error", err)
	}
}

func (t *Tailer) shutdown() {
	for _, tf := range t.files {
		tf.f.Close()
	}
	t.flushCheckpoints()
}

func (t *Tailer) poll(startup bool) {
	for _, tf := range t.files {
		tf.seen = false
	}
	for _, path := range ingest.Glob(t.cfg.Paths) {
		t.discover(path, startup)
	}
	if t.newIDs {
		// Once per poll, not per file: 10,000 new files would otherwise
		// rewrite (and sync) the growing checkpoint file 10,000 times.
		t.newIDs = false
		if err := t.cfg.Checkpoints.Flush(); err != nil {
			t.log.Warn("nomadlog: checkpoint not written", "err", err)
		}
	}
	// Read every followed file, in discovery order: a file rotated away is
	// read to its end before the new file at its path.
	keep := t.files[:0]
	for _, tf := range t.files {
		if t.ctx.Err() == nil {
			t.readFile(tf)
		}
		// Unmatched in two polls in a row: one may have caught a rename
		// half-way, listing the old name and finding the new file there
		// (a rotated file's new name, matched too, shows in the next).
		if tf.seen {
			tf.missed = 0
		} else {
			tf.missed++
		}
		if tf.missed >= 2 && !tf.vanished {
			tf.vanished = true
			t.count(func(s *TailStats) { s.Vanished++ })
			t.log.Info("nomadlog: file no longer matched (rotated away or deleted); reading it to its end", "path", tf.path)
		}
		if tf.missed >= 2 && tf.idle >= 2 && !tf.dec.hasPending() {
			t.forget(tf)
			continue
		}
		keep = append(keep, tf)
	}
	for i := len(keep); i < len(t.files); i++ {
		t.files[i] = nil
	}
	t.files = keep
	t.snapshot()
}

func (t *Tailer) snapshot() {
	live := make([]FileStats, 0, len(t.files))
	for _, tf := range t.files {
		live = append(live, FileStats{Path: tf.path, ID: tf.id.prefix, Offset: tf.readOff, Stats: tf.dec.Stats()})
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Path < live[j].Path })
	t.mu.Lock()
	t.live = live
	t.mu.Unlock()
}

func (t *Tailer) forget(tf *tfile) {
	tf.forgotten.Store(true)
	tf.f.Close()
	if t.byPath[tf.path] == tf {
		delete(t.byPath, tf.path)
	}
	if t.cfg.Checkpoints != nil {
		t.cfg.Checkpoints.Delete(tf.id.key)
	}
	st := tf.dec.Stats()
	t.count(func(s *TailStats) { s.add(st) })
	t.log.Info("nomadlog: stopped following file", "path", tf.path, "offset", tf.readOff)
}

// discover looks at one matched path: a file followed already (perhaps
// under another name), or a new file to follow.
func (t *Tailer) discover(path string, startup bool) {
	fi, err := os.Stat(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) { // permissions, a symlink loop, ...
			t.unreadableFile(path, err)
		}
		return
	}
	if !fi.Mode().IsRegular() {
		return
	}
	prev := t.byPath[path]
	if prev != nil && os.SameFile(fi, prev.fi) {
		prev.seen = true
		return
	}
	for _, tf := range t.files {
		if os.SameFile(fi, tf.fi) { // renamed (e.g. Nomad's own rotation)
			if t.byPath[tf.path] == tf {
				delete(t.byPath, tf.path)
			}
			tf.path, tf.seen = path, true
			t.byPath[path] = tf
			return
		}
	}
	f, err := ingest.OpenShared(path)
	if err != nil {
		t.unreadableFile(path, err)
		return
	}
	ffi, err := f.Stat()
	if err != nil {
		f.Close()
		t.unreadableFile(path, err)
		return
	}
	for _, tf := range t.files {
		if os.SameFile(ffi, tf.fi) { // swapped between Stat and Open
			f.Close()
			return
		}
	}
	if t.unreadable[path] {
		delete(t.unreadable, path)
		t.log.Info("nomadlog: file readable again", "path", path)
	}
	tf := &tfile{path: path, f: f, fi: ffi, seen: true}
	sysID, _ := fileID(f, ffi)
	id, err := t.identify(f, sysID, ffi.Size())
	if err != nil {
		f.Close()
		t.unreadableFile(path, err)
		return
	}
	tf.id = id
	start, how := t.startOffset(f, path, id, ffi.Size(), startup)
	tf.readOff, tf.lineStart = start, start
	t.attachDecoder(tf)
	if prev != nil {
		t.count(func(s *TailStats) { s.Rotations++ })
		t.log.Info("nomadlog: new file at path (rotation)", "path", path, "id", id.prefix)
	}
	t.byPath[path] = tf
	t.files = append(t.files, tf)
	t.log.Info("nomadlog: following file", "path", path, "id", id.prefix, "offset", start, "from", how)
}

// startOffset is where following a new file starts, and why: its
// checkpoint when one matches the file, the end of the last line when
// klaxon starts and reads from the end, else the beginning. id.prefix
// takes the checkpoint's. A file without a checkpoint gets one at once.
func (t *Tailer) startOffset(f *os.File, path string, id *ident, size int64, startup bool) (int64, string) {
	start, how := int64(0), "beginning"
	var cp checkpoint
	found := false
	if t.cfg.Checkpoints != nil {
		ok, err := t.cfg.Checkpoints.Get(id.key, &cp)
		if err != nil {
			t.log.Warn("nomadlog: unreadable checkpoint; ignoring it", "path", path, "error", err)
		}
		found = ok && err == nil
	}
	if found {
		if fp, err := headHash(f, cp.FPLen); err == nil && fp == cp.FP && cp.Offset <= size {
			start, how = cp.Offset, "checkpoint"
			if cp.ID != "" {
				id.prefix = cp.ID // IDs stay what they were before the restart
			}
		} else {
			found = false
		}
	}
	if !found && startup && t.cfg.ReadFrom == ingest.ReadFromEnd {
		start, how = lastLineEnd(f, size), "end"
	}
	if !found && t.cfg.Checkpoints != nil {
		// Record the file's identity at once: a file first seen shorter
		// than the fingerprint would otherwise get another ID prefix after
		// a crash before its first acknowledged event, and its events would
		// be published again under new IDs (not dropped as duplicates).
		cps := t.cfg.Checkpoints
		// The poll writes it before reading any file.
		if err := cps.Set(id.key, checkpoint{Path: path, Offset: start, FP: id.fp, FPLen: id.fpLen, ID: id.prefix}); err == nil {
			t.newIDs = true
		}
	}
	return start, how
}

// attachDecoder gives a new file its decoder, sending to the tailer's
// output and committing to its checkpoint.
func (t *Tailer) attachDecoder(tf *tfile) {
	tf.dec = NewDecoder(DecoderConfig{
		IDPrefix:     tf.id.prefix,
		DefaultNode:  t.cfg.DefaultNode,
		Identity:     t.cfg.Identity,
		MaxLineBytes: t.cfg.MaxLineBytes,
		Fallback:     t.cfg.Now,
	})
	tf.emit = func(ev ingest.Event) {
		if t.aborted {
			return
		}
		select {
		case t.out <- ev:
		case <-t.ctx.Done():
			t.aborted = true
		}
	}
	if cps := t.cfg.Checkpoints; cps != nil {
		tf.dec.commit = func(end int64) func() {
			id, p := tf.id, tf.path
			return func() {
				if tf.forgotten.Load() {
					return
				}
				_ = cps.Set(id.key, checkpoint{Path: p, Offset: end, FP: id.fp, FPLen: id.fpLen, ID: id.prefix})
			}
		}
	}
}

func (t *Tailer) unreadableFile(path string, err error) {
	t.count(func(s *TailStats) { s.Unreadable++ })
	if !t.unreadable[path] {
		t.unreadable[path] = true
		t.log.Error("nomadlog: cannot read file; will retry", "path", path, "error", err)
	}
}

// identify computes the identity of an open file of the given size.
func (t *Tailer) identify(f *os.File, sysID string, size int64) (*ident, error) {
	n := int(min(size, fpSize))
	fp, err := headHash(f, n)
	if err != nil {
		return nil, err
	}
	id := &ident{sysID: sysID, fp: fp, fpLen: n}
	if sysID != "" {
		id.key = "nomadlog:" + sysID
	} else {
		id.key = "nomadlog:fp:" + fp
	}
	sum := sha256.Sum256([]byte(sysID + "\x00" + fp))
	id.prefix = hex.EncodeToString(sum[:8])
	return id, nil
}

// headHash hashes the first n bytes of f.
func headHash(f *os.File, n int) (string, error) {
	if n < 0 || n > fpSize {
		return "", fmt.Errorf("bad fingerprint length %d", n)
	}
	buf := make([]byte, n)
	if n > 0 {
		if _, err := f.ReadAt(buf, 0); err != nil {
			return "", err
		}
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), nil
}

// lastLineEnd returns the offset after the last newline before size, so that
// reading from the end starts at a line boundary (size when the last 64 KiB
// hold no newline).
func lastLineEnd(f *os.File, size int64) int64 {
	if size == 0 {
		return 0
	}
	from := max(0, size-readChunk)
	buf := make([]byte, size-from)
	n, _ := f.ReadAt(buf, from)
	if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
		return from + int64(i) + 1
	}
	if from == 0 {
		return 0
	}
	return size
}

// readFile reads what was appended to tf and feeds the decoder.
func (t *Tailer) readFile(tf *tfile) {
	fi, err := tf.f.Stat()
	if err != nil {
		t.log.Warn("nomadlog: stat of open file failed", "path", tf.path, "error", err)
		tf.idle++
		return
	}
	size := fi.Size()
	if t.truncated(tf, size) {
		t.restart(tf)
	}
	if tf.id.fpLen < fpSize && size > int64(tf.id.fpLen) {
		t.growFingerprint(tf, size)
	}
	if tf.readOff >= size {
		tf.idle++
		if tf.idle >= 2 && tf.dec.hasPending() {
			tf.dec.Flush(tf.emit)
		}
		return
	}
	tf.idle = 0
	if t.buf == nil {
		t.buf = make([]byte, readChunk) // not one per file and poll: 10,000 files made 64 KB each
	}
	buf := t.buf
	for tf.readOff < size && !t.aborted {
		n, err := tf.f.ReadAt(buf[:min(int64(len(buf)), size-tf.readOff)], tf.readOff)
		if n > 0 {
			t.feed(tf, buf[:n])
		}
		if err != nil {
			if err != io.EOF {
				t.log.Warn("nomadlog: read failed", "path", tf.path, "offset", tf.readOff, "error", err)
			}
			return
		}
	}
}

// truncated reports whether the file was truncated (copytruncate) or
// rewritten in place since it was last read.
func (t *Tailer) truncated(tf *tfile, size int64) bool {
	if size < tf.readOff {
		return true
	}
	if size < int64(tf.id.fpLen) {
		return true
	}
	if tf.id.fpLen == 0 {
		return false
	}
	fp, err := headHash(tf.f, tf.id.fpLen)
	return err == nil && fp != tf.id.fp
}

// restart starts a truncated file over at 0 under a new identity.
func (t *Tailer) restart(tf *tfile) {
	tf.dec.Flush(tf.emit)
	size := int64(0)
	if fi, err := tf.f.Stat(); err == nil {
		size = fi.Size()
	}
	id, err := t.identify(tf.f, tf.id.sysID, size)
	if err != nil {
		t.log.Warn("nomadlog: fingerprint failed", "path", tf.path, "error", err)
		return
	}
	t.count(func(s *TailStats) { s.Truncations++ })
	t.log.Info("nomadlog: file truncated; reading it from the start", "path", tf.path, "old_offset", tf.readOff, "id", id.prefix)
	tf.id = id
	tf.readOff, tf.lineStart, tf.part, tf.discard = 0, 0, tf.part[:0], false
	tf.dec.setPrefix(id.prefix)
}

// growFingerprint extends the fingerprint of a file shorter than fpSize
// bytes when it grew (the ID prefix stays).
func (t *Tailer) growFingerprint(tf *tfile, size int64) {
	n := int(min(size, fpSize))
	fp, err := headHash(tf.f, n)
	if err != nil {
		return
	}
	id := *tf.id
	id.fp, id.fpLen = fp, n
	tf.id = &id
}

// feed splits data into lines; lines longer than MaxLineBytes are skipped
// without being held in memory.
func (t *Tailer) feed(tf *tfile, data []byte) {
	max := t.cfg.MaxLineBytes
	base := tf.readOff
	tf.readOff += int64(len(data))
	pos := 0
	for pos < len(data) {
		i := bytes.IndexByte(data[pos:], '\n')
		if i < 0 {
			rest := data[pos:]
			switch {
			case tf.discard:
			case len(tf.part)+len(rest) > max:
				t.oversize(tf)
			default:
				tf.part = append(tf.part, rest...)
			}
			return
		}
		seg := data[pos : pos+i]
		end := base + int64(pos+i+1)
		switch {
		case tf.discard:
			tf.discard = false
		case len(tf.part) > 0:
			if len(tf.part)+len(seg) > max {
				t.oversize(tf)
				tf.discard = false
			} else {
				tf.part = append(tf.part, seg...)
				tf.dec.Line(tf.part, tf.lineStart, end, tf.emit)
			}
		case len(seg) > max:
			t.oversize(tf)
			tf.discard = false
		default:
			tf.dec.Line(seg, tf.lineStart, end, tf.emit)
		}
		tf.part = tf.part[:0]
		if cap(tf.part) > 4*readChunk {
			tf.part = nil // do not keep a big buffer after a long line
		}
		tf.lineStart = end
		pos += i + 1
	}
}

func (t *Tailer) oversize(tf *tfile) {
	tf.discard = true
	tf.part = nil
	tf.dec.oversize()
	t.log.Warn("nomadlog: line too long; skipped", "path", tf.path, "offset", tf.lineStart, "max_line_bytes", t.cfg.MaxLineBytes)
}

// Counters implements ingest.Counted.
func (t *Tailer) Counters() ingest.Counters {
	st := t.Stats()
	return ingest.Counters{ParseErrors: st.Unparsed + st.Oversize}
}
