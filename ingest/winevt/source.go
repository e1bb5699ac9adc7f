package winevt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Read-from positions of Config.ReadFrom.
const (
	ReadFromEnd       = ingest.ReadFromEnd
	ReadFromBeginning = ingest.ReadFromBeginning
)

// DefaultPollInterval is the default Config.PollInterval.
const DefaultPollInterval = time.Second

// maxRecordAttempts is how many polls a record that cannot be decoded is
// retried (it may be half written) before it is counted and skipped.
const maxRecordAttempts = 3

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
	skipped atomic.Int64 // records given up on
}

// Stats returns the records the source sent (Records) and the damaged
// records it gave up on (BadRecords). Safe for concurrent use.
func (s *Source) Stats() Stats {
	return Stats{Records: s.emitted.Load(), BadRecords: s.skipped.Load()}
}

// wfile is one followed file.
type wfile struct {
	path  string // absolute
	key   string // checkpoint key
	last  uint64 // last EventRecordID sent
	size  int64
	mtime time.Time
	retry bool           // a record failed: read again even if unchanged
	fails map[uint64]int // attempts per failing record
	bad   map[string]bool
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
	timer := time.NewTimer(0)
	defer timer.Stop()
	startup := true
	lastFlush := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		s.poll(ctx, out, startup)
		startup = false
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(lastFlush) >= time.Second {
			s.flush()
			lastFlush = time.Now()
		}
		timer.Reset(s.cfg.PollInterval)
	}
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
	var paths []string
	seen := map[string]bool{}
	for _, p := range s.cfg.Paths {
		m, _ := filepath.Glob(p) // validated in New
		for _, x := range m {
			if abs, err := filepath.Abs(x); err == nil && !seen[abs] {
				seen[abs] = true
				paths = append(paths, abs)
			}
		}
	}
	sort.Strings(paths)
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
	wf := &wfile{path: path, key: "winevt:" + path, fails: map[uint64]int{}, bad: map[string]bool{}}
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
	case startup && s.cfg.ReadFrom == ReadFromEnd:
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
	f, err := openShared(path)
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
		last = max(last, sl.last)
	}
	return last, err
}

// read sends the records of wf after wf.last.
func (s *Source) read(ctx context.Context, wf *wfile, out chan<- ingest.Event) error {
	f, err := openShared(wf.path)
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
	var maxID uint64
	todo := slots[:0:0]
	for _, sl := range slots {
		maxID = max(maxID, sl.last)
		if sl.last > wf.last || sl.last < sl.first {
			todo = append(todo, sl)
		}
	}
	if len(slots) > 0 && maxID < wf.last {
		s.log.Warn("winevt: file has only older records than the checkpoint (cleared or replaced); reading it from the beginning",
			"path", wf.path, "checkpoint", wf.last, "last_in_file", maxID)
		wf.last, todo = 0, slots
		clear(wf.fails)
	}
	wf.retry = false
	stopped := false
	err = decodeSlots(ctx, f, todo, info, name, s.norm, wf.last, func(co *chunkOut) {
		for _, e := range co.stats.Errors {
			if !wf.bad[e] && len(wf.bad) < 10000 {
				wf.bad[e] = true
				s.log.Warn("winevt: damaged record or chunk", "path", wf.path, "where", e)
			}
		}
		for i := range co.recs {
			r := &co.recs[i]
			if stopped || r.id <= wf.last {
				continue
			}
			if r.err != nil {
				wf.fails[r.id]++
				if wf.fails[r.id] < maxRecordAttempts {
					wf.retry, stopped = true, true // maybe half written: try again next poll
					continue
				}
				delete(wf.fails, r.id)
				s.log.Error("winevt: skipping record that cannot be decoded", "path", wf.path, "record", r.id, "error", r.err)
				s.skipped.Add(1)
				wf.last = r.id
				continue
			}
			delete(wf.fails, r.id)
			ev := r.ev
			if cps := s.cfg.Checkpoints; cps != nil {
				key, id := wf.key, r.id
				ev.Commit = func() { _ = cps.Set(key, checkpoint{RecordID: id}) }
			}
			select {
			case out <- ev:
				s.emitted.Add(1)
				wf.last = r.id
			case <-ctx.Done():
				stopped = true
				return
			}
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

var _ ingest.Source = (*Source)(nil)
