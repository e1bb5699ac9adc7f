// Package journald reads the Nomad agent's log from the systemd journal.
// Nomad's Linux packages run the agent under systemd, and without log_file
// it logs only there. The Source follows units (nomad.service) through
// journalctl, as Vector's journald source does, instead of linking
// libsystemd: klaxon stays a static, cross-compiled binary. The MESSAGE of
// each entry is decoded by ingest/nomadlog exactly as the lines of a log
// file are; the node is the entry's _HOSTNAME; the checkpoint is the
// journal cursor, advanced only when the events up to it were committed.
//
// ReadAll and ReadJournal decode recorded journals for replay: journal
// files (through journalctl --file), the export format and journalctl's
// JSON output.
package journald

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/internal/backoff"
)

// Defaults of Config.
const (
	DefaultUnit       = "nomad.service"
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
	DefaultFlushAfter = 500 * time.Millisecond
)

// Config configures a Source.
type Config struct {
	// Units are the systemd units followed (journalctl --unit; globs
	// allowed). Default [nomad.service].
	Units []string
	// Directory is a journal directory (journalctl --directory) instead of
	// the system journal.
	Directory string
	// Files are journal files (journalctl --file; globs allowed) instead
	// of the system journal.
	Files []string
	// ReadFrom is where to start without a checkpoint: "end" (default) or
	// "beginning".
	ReadFrom string
	// Node, when set, is the node of every entry instead of its _HOSTNAME.
	Node string
	// DefaultNode is the node of entries without _HOSTNAME (default: the
	// host name).
	DefaultNode string
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
	// MaxLineBytes caps one line of MESSAGE (default 1 MiB); longer lines
	// are counted and skipped.
	MaxLineBytes int
	// Journalctl is the journalctl command (default: journalctl in PATH).
	Journalctl string
	// Checkpoints stores the cursor; may be nil (no persistence).
	Checkpoints *ingest.Checkpoints
	// MinBackoff and MaxBackoff bound the jittered exponential wait before
	// journalctl is started again after it exited (default 1s and 30s).
	MinBackoff, MaxBackoff time.Duration
	// FlushAfter is how long a unit's last record waits for continuation
	// lines before it is emitted (default 500ms).
	FlushAfter time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// checkpoint is the stored position.
type checkpoint struct {
	// Cursor is the journal cursor of the last entry whose events were
	// all committed.
	Cursor string `json:"cursor,omitempty"`
	// From is "beginning" when the source started on a journal without
	// any entry of its units (before Cursor is first set).
	From string `json:"from,omitempty"`
}

// Source follows systemd units in the journal. It implements ingest.Source.
type Source struct {
	cfg Config
	log *slog.Logger
	j   *journalctl
	key string // checkpoint key

	running atomic.Bool

	mu        sync.Mutex
	stats     Stats
	committed string // cursor of the last committed position
}

// New validates cfg and returns a Source. It fails when journalctl cannot
// be found (and on Windows, which has no journal).
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	errs := cfg.validate()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if runtime.GOOS == "windows" {
		return nil, errors.New("journald: the systemd journal is not available on Windows")
	}
	j, err := lookJournalctl(cfg.Journalctl)
	if err != nil {
		return nil, err
	}
	if cfg.DefaultNode == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.DefaultNode = h
		}
	}
	if cfg.Identity == nil {
		cfg.Identity = ingest.NewIdentity()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Source{cfg: cfg, log: log, j: j}
	s.key = "journald:" + cfg.scopeKey() + ":" + strings.Join(cfg.Units, ",")
	return s, nil
}

// validate sets the defaults and checks cfg; errors name the setting.
func (c *Config) validate() []error {
	var errs []error
	if len(c.Units) == 0 {
		c.Units = []string{DefaultUnit}
	}
	for i, u := range c.Units {
		if strings.TrimSpace(u) == "" {
			errs = append(errs, fmt.Errorf("journald: units[%d]: empty", i))
		}
	}
	if c.Directory != "" && len(c.Files) > 0 {
		errs = append(errs, errors.New("journald: directory and files: give one of them (or neither, for the system journal)"))
	}
	for i, f := range c.Files {
		if f == "" {
			errs = append(errs, fmt.Errorf("journald: files[%d]: empty", i))
		}
	}
	switch c.ReadFrom {
	case "":
		c.ReadFrom = ingest.ReadFromEnd
	case ingest.ReadFromEnd, ingest.ReadFromBeginning:
	default:
		errs = append(errs, fmt.Errorf("journald: read_from %q: want %q or %q", c.ReadFrom, ingest.ReadFromEnd, ingest.ReadFromBeginning))
	}
	if c.MaxLineBytes < 0 {
		errs = append(errs, fmt.Errorf("journald: max_line_bytes %d: negative", c.MaxLineBytes))
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = nomadlog.DefaultMaxLineBytes
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || c.FlushAfter < 0 {
		errs = append(errs, errors.New("journald: min_backoff, max_backoff, flush_after: negative"))
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("journald: max_backoff %s: below min_backoff %s", c.MaxBackoff, c.MinBackoff))
	}
	if c.FlushAfter == 0 {
		c.FlushAfter = DefaultFlushAfter
	}
	return errs
}

func (c *Config) scope() scope { return scope{directory: c.Directory, files: c.Files} }

// scopeKey names the journal read in the checkpoint key.
func (c *Config) scopeKey() string {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	switch {
	case c.Directory != "":
		return "dir=" + abs(c.Directory)
	case len(c.Files) > 0:
		fs := make([]string, len(c.Files))
		for i, f := range c.Files {
			fs[i] = abs(f)
		}
		return "files=" + strings.Join(fs, ",")
	}
	return "system"
}

// Name identifies the source in logs and metrics.
func (s *Source) Name() string {
	n := "journald:" + strings.Join(s.cfg.Units, ",")
	switch {
	case s.cfg.Directory != "":
		n += "@" + s.cfg.Directory
	case len(s.cfg.Files) > 0:
		n += "@" + strings.Join(s.cfg.Files, ",")
	}
	return n
}

// Stats returns the counters; safe to call while Run runs.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Cursor returns the cursor of the last committed position ("" before the
// first).
func (s *Source) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed
}

// position is where a journalctl run starts.
type position struct {
	cursor string // after this cursor
	known  bool   // false: read_from end and no cursor yet (ask for the tail)
}

// start returns the position of the checkpoint, or of read_from.
func (s *Source) start() position {
	if cps := s.cfg.Checkpoints; cps != nil {
		var cp checkpoint
		ok, err := cps.Get(s.key, &cp)
		if err != nil {
			s.log.Warn("journald: unreadable checkpoint; ignoring it", "source", s.Name(), "error", err)
		}
		if ok && err == nil && (cp.Cursor != "" || cp.From == ingest.ReadFromBeginning) {
			s.setCommitted(cp.Cursor)
			return position{cursor: cp.Cursor, known: true}
		}
	}
	return position{known: s.cfg.ReadFrom == ingest.ReadFromBeginning}
}

func (s *Source) setCommitted(c string) {
	s.mu.Lock()
	s.committed = c
	s.mu.Unlock()
}

// save records the position at once (the start of a source without a
// checkpoint), so that a crash before the first commit resumes there.
func (s *Source) save(p position) {
	cps := s.cfg.Checkpoints
	if cps == nil {
		return
	}
	cp := checkpoint{Cursor: p.cursor}
	if p.cursor == "" {
		cp.From = ingest.ReadFromBeginning
	}
	if err := cps.Set(s.key, cp); err == nil {
		if err := cps.Flush(); err != nil {
			s.log.Warn("journald: checkpoint not written", "source", s.Name(), "error", err)
		}
	}
}

// Run follows the units and sends their records to out until ctx is done.
// It never closes out. journalctl is restarted with a jittered exponential
// back-off when it exits; the run after resumes after the last entry read.
// Records not yet sent when Run returns are read again after a restart
// (the checkpoint covers only committed records).
func (s *Source) Run(ctx context.Context, out chan<- ingest.Event) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("journald: Run called twice")
	}
	defer s.flushCheckpoints()
	d := s.newDecoder()
	aborted := false
	emit := func(ev ingest.Event) {
		if aborted {
			return
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			aborted = true
		}
	}
	pos := s.start()
	if pos.known {
		s.log.Info("journald: following", "source", s.Name(), "after_cursor", pos.cursor)
		if pos.cursor == "" {
			s.save(pos)
		}
	}
	bo := backoff.New(s.cfg.MinBackoff, s.cfg.MaxBackoff)
	catchUp := true // only without --merge: see catchUpRun
	runs := 0
	for ctx.Err() == nil {
		if !pos.known {
			c, err := s.tail(ctx)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				wait := bo.Next()
				s.log.Error("journald: cannot find the end of the journal; will retry", "source", s.Name(), "error", err, "retry_in", wait)
				if !backoff.Sleep(ctx, wait) {
					break
				}
				continue
			}
			pos = position{cursor: c, known: true}
			s.save(pos)
			s.log.Info("journald: following from the end", "source", s.Name(), "after_cursor", c)
		}
		follow := !(s.j.noMerge && catchUp)
		if runs > 0 {
			s.count(func(st *Stats) { st.Restarts++ })
		}
		runs++
		began := s.cfg.Now()
		before := d.stats.Entries
		stderr, err := s.follow(ctx, d, &pos, follow, emit)
		s.snapshot(d)
		if ctx.Err() != nil || aborted {
			break
		}
		read := d.stats.Entries - before
		if read == 0 && err != nil && s.adjust(stderr, err, &pos) {
			continue
		}
		if !follow && err == nil {
			catchUp = false // the backlog is read: follow now
			continue
		}
		catchUp = true
		if read > 0 || s.cfg.Now().Sub(began) > time.Minute {
			bo.Reset()
		}
		wait := bo.Next()
		if err == nil {
			err = errors.New("journalctl exited")
		}
		s.log.Error("journald: journalctl stopped; restarting it", "source", s.Name(), "error", err, "entries", read, "retry_in", wait)
		if !backoff.Sleep(ctx, wait) {
			break
		}
	}
	return nil
}

// newDecoder returns the decoder of a run, committing to the checkpoint.
func (s *Source) newDecoder() *decoder {
	tr := &tracker{advance: func(c string) {
		if s.cfg.Checkpoints != nil {
			_ = s.cfg.Checkpoints.Set(s.key, checkpoint{Cursor: c})
		}
		s.setCommitted(c)
	}}
	return newDecoder(decoderConfig{
		Node: s.cfg.Node, DefaultNode: s.cfg.DefaultNode, Identity: s.cfg.Identity,
		MaxLineBytes: s.cfg.MaxLineBytes, IDPrefix: "journald", Now: s.cfg.Now,
	}, tr)
}

// adjust answers a journalctl that failed before printing an entry
// (stderr, err) by running it differently, and reports whether it did: an
// option this journalctl does not take is left out, a checkpoint cursor it
// rejects is dropped (pos starts over as without a checkpoint).
func (s *Source) adjust(stderr string, err error, pos *position) bool {
	if opt, ok := s.j.adapt(stderr); ok {
		s.log.Warn("journald: journalctl does not take "+opt+"; running it without", "source", s.Name(), "journalctl", s.j.path)
		if opt == "--merge" {
			s.log.Warn("journald: without --merge, journalctl --follow shows only the latest boot: the source reads what came after its cursor first, then follows; of a directory with the journals of several hosts, only one host is followed", "source", s.Name())
		}
		return true
	}
	if strings.Contains(stderr, "seek to cursor") {
		s.log.Error("journald: journalctl rejects the checkpoint cursor; starting as without a checkpoint", "source", s.Name(), "cursor", pos.cursor, "read_from", s.cfg.ReadFrom, "error", err)
		*pos = position{known: s.cfg.ReadFrom == ingest.ReadFromBeginning}
		if pos.known {
			s.save(*pos)
		}
		return true
	}
	return false
}

// follow runs journalctl once from pos (following the journal, or reading
// to its end) and feeds what it prints to d, advancing pos as entries are
// read.
func (s *Source) follow(ctx context.Context, d *decoder, pos *position, follow bool, emit func(ingest.Event)) (string, error) {
	var extra []string
	if !s.j.noMerge {
		// --follow alone implies --boot (systemd 250+): after a reboot the
		// entries of the previous boot after the cursor would be skipped.
		extra = append(extra, "--merge")
	}
	if follow {
		extra = append(extra, "--follow")
	}
	// --lines=all also with a cursor: --follow implies --lines=10, and
	// journalctl 252 then prints only 10 entries after the cursor before it
	// jumps to the end.
	extra = append(extra, "--lines=all")
	if pos.cursor != "" {
		extra = append(extra, "--after-cursor="+pos.cursor)
	}
	args := s.j.args(s.cfg.scope(), s.cfg.Units, extra...)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	// Entries are parsed as journalctl prints them and handed over here,
	// where the ticker flushes what waited long enough.
	entries := make(chan *Entry, 256)
	type result struct {
		stderr  string
		err     error
		skipped int64
	}
	done := make(chan result, 1)
	go func() {
		var skipped int64
		stderr, err := s.j.run(rctx, args, func(r io.Reader) error {
			x := newExportReader(r, maxField(s.cfg.MaxLineBytes))
			defer func() { skipped = x.skipped }()
			for {
				e, err := x.next()
				if err != nil {
					return err
				}
				select {
				case entries <- &e:
				case <-rctx.Done():
					return rctx.Err()
				}
			}
		})
		close(entries)
		done <- result{stderr, err, skipped}
	}()
	tick := time.NewTicker(min(s.cfg.FlushAfter/2, 250*time.Millisecond))
	defer tick.Stop()
	lastFlush := s.cfg.Now()
	for {
		select {
		case e, ok := <-entries:
			if !ok {
				r := <-done
				d.stats.Oversize += r.skipped
				d.flushIdle(0, emit) // what is held is complete: journalctl ended
				return r.stderr, r.err
			}
			d.feed(e, emit)
			if e.Cursor != "" {
				pos.cursor = e.Cursor
			}
		case <-tick.C:
			d.flushIdle(s.cfg.FlushAfter, emit)
			s.snapshot(d)
			if now := s.cfg.Now(); now.Sub(lastFlush) >= time.Second {
				s.flushCheckpoints()
				lastFlush = now
			}
		case <-ctx.Done():
			stop()
			r := <-done
			return r.stderr, r.err
		}
	}
}

// tail returns the cursor of the last entry of the units ("" when there is
// none).
func (s *Source) tail(ctx context.Context) (string, error) {
	var extra []string
	if !s.j.noMerge {
		extra = append(extra, "--merge")
	}
	extra = append(extra, "--lines=1")
	for {
		cursor := ""
		stderr, err := s.j.run(ctx, s.j.args(s.cfg.scope(), s.cfg.Units, extra...), func(r io.Reader) error {
			x := newExportReader(r, maxField(s.cfg.MaxLineBytes))
			for {
				e, err := x.next()
				if err != nil {
					return err
				}
				if e.Cursor != "" {
					cursor = e.Cursor
				}
			}
		})
		if err != nil {
			if opt, ok := s.j.adapt(stderr); ok {
				if opt == "--merge" {
					extra = slices.DeleteFunc(extra, func(a string) bool { return a == "--merge" })
				}
				continue
			}
			return "", err
		}
		return cursor, nil
	}
}

func (s *Source) snapshot(d *decoder) {
	st := d.Stats()
	s.mu.Lock()
	st.Restarts = s.stats.Restarts
	s.stats = st
	s.mu.Unlock()
}

func (s *Source) count(fn func(*Stats)) {
	s.mu.Lock()
	fn(&s.stats)
	s.mu.Unlock()
}

func (s *Source) flushCheckpoints() {
	if s.cfg.Checkpoints == nil {
		return
	}
	if err := s.cfg.Checkpoints.Flush(); err != nil {
		s.log.Error("journald: writing checkpoints", "error", err)
	}
}

// Counters implements ingest.Counted.
func (s *Source) Counters() ingest.Counters {
	st := s.Stats()
	return ingest.Counters{ParseErrors: st.Unparsed + st.Oversize + st.Malformed}
}
