package winevt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// DefaultPollInterval is the default Config.PollInterval.
const DefaultPollInterval = time.Second

// maxRecordAttempts is how many polls a record that may be half written is
// read before it is counted as damaged and skipped. Only the end of the
// newest chunk (the one Windows appends to) can be half written; anything
// else that cannot be decoded is damage at once.
const maxRecordAttempts = 3

// maxPlaces bounds the places of damage a followed file remembers (to log
// and count each once).
const maxPlaces = 10000

// Config configures a Source.
type Config struct {
	// Paths are EVTX file paths and globs (filepath.Glob syntax),
	// re-evaluated every PollInterval.
	Paths []string
	// ReadFrom is where to start in a file found at startup that has no
	// checkpoint: "end" (default) or "beginning". Files that appear later
	// are read from the beginning.
	ReadFrom string
	// Checkpoints stores the last delivered EventRecordID per file (key
	// "winevt:<abs path>"), advanced by the events' Commit; may be nil.
	Checkpoints *ingest.Checkpoints
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
	// PollInterval is how often files are checked (default 1s).
	PollInterval time.Duration
	// Now is the clock against which impossible (future) event times are
	// found; nil means time.Now.
	Now func() time.Time
}

// checkpoint is the position stored per file.
type checkpoint struct {
	RecordID uint64 `json:"record_id"`
}

// Source follows EVTX files as they grow: new records in the current chunk
// and new chunks (also when a circular log wraps). It implements
// ingest.Source.
type Source struct {
	cfg     Config
	log     *slog.Logger
	norm    *normalizer
	running atomic.Bool
	files   map[string]*wfile
	emitted atomic.Int64 // records sent
	skipped atomic.Int64 // damaged records given up on, each once
	chunks  atomic.Int64 // damaged chunks, each once
	times   atomic.Int64 // records sent with a replaced (impossible) time
	parser  atomic.Int64 // records golang-evtx printed parse errors for, each once
	reads   atomic.Int64 // times a file was read and decoded
	polls   atomic.Int64 // polls done
}

// Stats returns the records the source sent (Records), the damaged records
// and chunks it gave up on (BadRecords, BadChunks; each place counted once),
// the records sent with a replaced impossible time (BadTimes) and those
// golang-evtx printed parse errors for (ParserWarnings). Safe for
// concurrent use.
func (s *Source) Stats() Stats {
	return Stats{Records: s.emitted.Load(), BadRecords: s.skipped.Load(), BadChunks: s.chunks.Load(),
		BadTimes: s.times.Load(), ParserWarnings: s.parser.Load()}
}

// wfile is one followed file.
type wfile struct {
	path  string // absolute
	key   string // checkpoint key
	last  uint64 // highest plausible record number sent or given up on
	size  int64
	mtime time.Time
	retry bool            // a record may be half written: read again even if unchanged
	tries map[string]int  // reads per place that may be half written
	seen  map[string]bool // places of damage already logged and counted
}

// New validates cfg and returns a Source.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	errs := ingest.ValidateFollow("winevt", cfg.Paths, &cfg.ReadFrom, cfg.PollInterval)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	return &Source{cfg: cfg, log: log, norm: &normalizer{ident: cfg.Identity}, files: map[string]*wfile{}}, nil
}

// Name identifies the source in logs and metrics.
func (s *Source) Name() string {
	return "winevt:" + fmt.Sprint(s.cfg.Paths)
}

// Run follows the files and sends their records to out until ctx is done.
// It never closes out.
func (s *Source) Run(ctx context.Context, out chan<- ingest.Event) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("winevt: Run called twice")
	}
	defer s.flush()
	ingest.PollLoop(ctx, s.cfg.PollInterval, func(startup bool) {
		s.poll(ctx, out, startup)
		s.polls.Add(1)
	}, s.flush)
	return nil
}

func (s *Source) flush() {
	if s.cfg.Checkpoints == nil {
		return
	}
	if err := s.cfg.Checkpoints.Flush(); err != nil {
		s.log.Error("winevt: writing checkpoints", "error", err)
	}
}

func (s *Source) poll(ctx context.Context, out chan<- ingest.Event, startup bool) {
	paths := ingest.Glob(s.cfg.Paths)
	for _, p := range paths {
		if ctx.Err() != nil {
			return
		}
		wf := s.files[p]
		if wf == nil {
			var err error
			if wf, err = s.start(p, startup); err != nil {
				s.log.Warn("winevt: cannot follow file; will retry", "path", p, "error", err)
				continue
			}
			s.files[p] = wf
		}
		if err := s.read(ctx, wf, out); err != nil {
			s.log.Warn("winevt: read failed; will retry", "path", p, "error", err)
		}
	}
}

// start sets up a newly found file: from its checkpoint, its end (at
// startup with read_from end) or its beginning.
func (s *Source) start(path string, startup bool) (*wfile, error) {
	wf := &wfile{path: path, key: "winevt:" + path, tries: map[string]int{}, seen: map[string]bool{}}
	how := "beginning"
	var cp checkpoint
	found := false
	if s.cfg.Checkpoints != nil {
		ok, err := s.cfg.Checkpoints.Get(wf.key, &cp)
		if err != nil {
			s.log.Warn("winevt: unreadable checkpoint; ignoring it", "path", path, "error", err)
		}
		found = ok && err == nil
	}
	switch {
	case found:
		wf.last, how = cp.RecordID, "checkpoint"
	case startup && s.cfg.ReadFrom == ingest.ReadFromEnd:
		last, err := lastRecordID(path)
		if err != nil {
			return nil, err
		}
		wf.last, how = last, "end"
	}
	s.log.Info("winevt: following EVTX file", "path", path, "after_record", wf.last, "from", how)
	return wf, nil
}

// lastRecordID returns the highest record id the chunk headers of a file announce.
func lastRecordID(path string) (uint64, error) {
	f, err := ingest.OpenShared(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if _, err := readFileHeader(f); err != nil {
		return 0, err
	}
	var st Stats
	slots, err := scanSlots(f, fi.Size(), filepath.Base(path), &st)
	var last uint64
	for _, sl := range slots {
		if sl.trusted() {
			last = max(last, sl.last)
		} else {
			last = max(last, sl.order) // the header's range is damaged: what its records start at
		}
	}
	return last, err
}

// read sends the records of wf after wf.last.
func (s *Source) read(ctx context.Context, wf *wfile, out chan<- ingest.Event) error {
	f, err := ingest.OpenShared(wf.path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == wf.size && fi.ModTime().Equal(wf.mtime) && !wf.retry {
		return nil
	}
	info, err := readFileHeader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", wf.path, err)
	}
	name := filepath.Base(wf.path)
	var st Stats
	slots, err := scanSlots(f, fi.Size(), name, &st)
	if err != nil {
		return err
	}
	for _, e := range st.Errors {
		if !strings.Contains(e, chunkCutOff) && s.firstSeen(wf, e) { // a chunk cut off by the end of a growing file is read when complete
			s.chunks.Add(1)
			s.log.Warn("winevt: damaged chunk skipped", "path", wf.path, "where", e)
		}
	}
	todo := s.plan(f, wf, slots)
	newest := -1 // the chunk Windows appends to: the one with the highest numbers
	if len(slots) > 0 {
		newest = slots[len(slots)-1].index
	}
	wf.retry = false
	s.reads.Add(1)
	d := &decoder{fi: info, name: name, norm: s.norm, minID: wf.last, ceiling: ceiling(slots), now: s.now()}
	stop := false
	err = decodeSlots(ctx, f, todo, d, func(co *chunkOut) {
		if !stop {
			stop = s.deliver(ctx, wf, co, co.slot.index == newest, out)
		}
	})
	if err != nil {
		return err
	}
	if !wf.retry {
		wf.size, wf.mtime = fi.Size(), fi.ModTime()
	}
	return nil
}

func (s *Source) now() time.Time {
	if s.cfg.Now == nil {
		return time.Now()
	}
	return s.cfg.Now()
}

// plan returns the chunks that may hold records after wf.last, in record
// order. A file whose records all lie before wf.last was cleared or
// replaced: it is read from the beginning. The chunk headers tell cheaply;
// when they say so, the records themselves confirm it (wf.last only ever
// moves to a plausible record number, so an unchanged file never looks
// replaced, whatever its headers say).
func (s *Source) plan(f io.ReaderAt, wf *wfile, slots []slot) []slot {
	if len(slots) > 0 && wf.last > 0 && headersMax(slots) < wf.last {
		if fileMax := plausibleMax(f, slots); fileMax < wf.last {
			s.log.Warn("winevt: file has only older records than the checkpoint (cleared or replaced); reading it from the beginning",
				"path", wf.path, "checkpoint", wf.last, "last_in_file", fileMax)
			wf.last = 0
			clear(wf.tries)
		}
	}
	todo := slots[:0:0]
	for _, sl := range slots {
		if sl.maxID() > wf.last {
			todo = append(todo, sl)
		}
	}
	return todo
}

// headersMax is the highest record number the chunk headers announce.
func headersMax(slots []slot) uint64 {
	var m uint64
	for _, sl := range slots {
		m = max(m, sl.maxID())
	}
	return m
}

// plausibleMax is the highest plausible record number of the chunks,
// read from their record headers.
func plausibleMax(f io.ReaderAt, slots []slot) uint64 {
	var m uint64
	c := ceiling(slots)
	for _, sl := range slots {
		bp, err := readSlot(f, sl)
		if err != nil {
			continue
		}
		m = max(m, maxPlausibleID(*bp, sl, c))
		chunkPool.Put(bp)
	}
	return m
}

// deliver sends the new records of one decoded chunk in order; damage is
// logged and counted once per place. It returns true when reading must
// stop: ctx is done, or the growing chunk ends in what may be a record
// being written, which is read again at the next poll.
func (s *Source) deliver(ctx context.Context, wf *wfile, co *chunkOut, growing bool, out chan<- ingest.Event) bool {
	pending := s.pending(wf, co, growing)
	s.chunkErrors(wf, co)
	for i := range co.recs {
		r := &co.recs[i]
		place := placeOf(co, r)
		if len(r.lib) > 0 && place != pending && s.firstSeen(wf, "parser: "+place) {
			s.parser.Add(1)
			logParserWarning(s.log, wf.path, co.slot, r)
		}
		switch {
		case r.err != nil && place == pending:
			return true
		case r.err != nil:
			if s.firstSeen(wf, place) {
				s.skipped.Add(1)
				s.log.Warn("winevt: skipping damaged record", "path", wf.path, "chunk", co.slot.index,
					"chunk_offset", fmt.Sprintf("0x%x", co.slot.off), "record", r.id, "record_offset", fmt.Sprintf("0x%x", r.off), "error", r.err)
			}
			if !r.badID {
				wf.last = max(wf.last, r.id) // a plausible number: nothing before it is still to come
			}
			continue
		case r.id <= wf.last:
			continue
		}
		if !s.send(ctx, wf, r, out) {
			return true
		}
	}
	if co.tail != "" && co.tail == pending {
		return true
	}
	if co.tail != "" && s.firstSeen(wf, co.tail) {
		s.skipped.Add(1)
		s.log.Warn("winevt: skipping damaged record", "path", wf.path, "where", co.tail)
	}
	return false
}

// send sends the record r (ctx permitting) and moves wf.last to it.
func (s *Source) send(ctx context.Context, wf *wfile, r *rec, out chan<- ingest.Event) bool {
	ev := r.ev
	if cps := s.cfg.Checkpoints; cps != nil {
		key, id := wf.key, r.id
		ev.Commit = func() { _ = cps.Set(key, checkpoint{RecordID: id}) }
	}
	select {
	case out <- ev:
	case <-ctx.Done():
		return false
	}
	s.emitted.Add(1)
	if r.badTime {
		s.times.Add(1)
	}
	wf.last = r.id
	return true
}

// placeOf names the place of record r of a chunk.
func placeOf(co *chunkOut, r *rec) string {
	return fmt.Sprintf("chunk %d (offset 0x%x): record %d (offset 0x%x)", co.slot.index, co.slot.off, r.id, r.off)
}

// pending returns the place of the growing chunk's trailing problem (its
// last record undecodable, or a bad record boundary after it) while it may
// still be a record being written, and asks for the file to be read again;
// "" when there is none or it has had its reads.
func (s *Source) pending(wf *wfile, co *chunkOut, growing bool) string {
	if !growing {
		return ""
	}
	p := co.tail
	if n := len(co.recs); n > 0 && co.recs[n-1].err != nil && !co.recs[n-1].badID {
		p = placeOf(co, &co.recs[n-1])
	}
	if p == "" || wf.tries[p] >= maxRecordAttempts-1 {
		return ""
	}
	if len(wf.tries) >= maxPlaces {
		clear(wf.tries)
	}
	wf.tries[p]++
	wf.retry = true
	return p
}

// chunkErrors logs, once each, the problems of a chunk header (checksums,
// a bad free space offset).
func (s *Source) chunkErrors(wf *wfile, co *chunkOut) {
	for _, e := range co.header {
		if s.firstSeen(wf, e) {
			s.log.Warn("winevt: damaged chunk read anyway", "path", wf.path, "where", e)
		}
	}
}

// firstSeen reports whether place is new for wf, and remembers it.
func (s *Source) firstSeen(wf *wfile, place string) bool {
	if wf.seen[place] {
		return false
	}
	if len(wf.seen) >= maxPlaces {
		clear(wf.seen)
	}
	wf.seen[place] = true
	return true
}

var _ ingest.Source = (*Source)(nil)

// Counters implements ingest.Counted.
func (s *Source) Counters() ingest.Counters {
	st := s.Stats()
	return ingest.Counters{ParseErrors: st.BadRecords + st.BadChunks}
}
