package app

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald"
	"github.com/klaxon-dev/klaxon/ingest/nomadalloc"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/ingest/winevt"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks/stdout"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// Rules is the rule set to run (required unless Events is set).
	Rules *rules.Set
	// Format is stdout.FormatText or stdout.FormatJSON.
	Format string
	// Node names the node for inputs that do not carry one.
	Node string
	// Events prints the normalised events as JSON lines instead of incidents.
	Events bool
	// Out receives the output.
	Out io.Writer
	// Log receives diagnostics.
	Log *slog.Logger
	// MaxLineBytes caps one input line (default 1 MiB).
	MaxLineBytes int
	// Progress, when set, counts the input bytes read and the events
	// replayed while Replay runs (for a progress display).
	Progress *ReplayProgress
}

// ReplayProgress is what Replay has done so far; safe to read while it runs.
type ReplayProgress struct {
	// Bytes is the input read (EVTX files count when they are done).
	Bytes atomic.Int64
	// Events is the events replayed.
	Events atomic.Int64
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// ReplayStats sums up a replay.
type ReplayStats struct {
	Files     int
	Lines     int64
	Events    uint64
	Oversize  int64
	Unparsed  int64
	Incidents uint64
}

// batchSize is how many events a reader hands over at once.
const batchSize = 256

// Replay pushes recorded inputs through the rules and the correlator (the
// same code the live pipeline runs) and writes incident changes, or the
// normalised events, to opts.Out. Inputs are merged in event time.
func Replay(ctx context.Context, files []string, opts ReplayOptions) (ReplayStats, error) {
	var st ReplayStats
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Rules == nil && !opts.Events {
		return st, errors.New("replay: no rules")
	}
	if opts.Format == "" {
		opts.Format = stdout.FormatText
	}
	// Replay is a batch job whose live heap is small (windows and
	// incidents) while it allocates per line: trading memory for less
	// collection work speeds it up by about a quarter (see the README).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	ident := ingest.NewIdentity()
	inputs := make([]*replayInput, 0, len(files))
	for _, f := range files {
		in, err := openInput(f)
		if err != nil {
			for _, o := range inputs {
				o.f.Close()
			}
			return st, err
		}
		inputs = append(inputs, in)
	}
	st.Files = len(inputs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, in := range inputs {
		in.start(ctx, opts, ident)
	}

	w := bufio.NewWriterSize(opts.Out, 64<<10)
	var writeErr error
	write := func(b []byte) {
		if writeErr == nil {
			_, writeErr = w.Write(b)
		}
	}
	var corr *correlate.Correlator
	emit := func(in correlate.Incident) {
		st.Incidents++
		b, err := stdout.Format(in, opts.Format)
		if err != nil {
			writeErr = err
			return
		}
		write(b)
	}
	if !opts.Events {
		corr = correlate.New(opts.Rules, correlate.Options{})
	}
	feed := &feeder{corr: corr}
	allocs := nomadalloc.New(nomadalloc.Config{Log: opts.Log})
	h := &inputHeap{}
	for _, in := range inputs {
		if in.next() {
			heap.Push(h, in)
		}
	}
	enc := json.NewEncoder(w)
	for h.Len() > 0 && writeErr == nil {
		in := (*h)[0]
		ev := in.head()
		st.Events++
		// Inputs are decoded ahead of this loop, so a node ID may have been
		// named (by another input) after its event was decoded.
		if ev.NodeID != "" {
			if n, ok := ident.NameOf(ev.NodeID); ok {
				ev.Node = n
			}
		}
		// Log lines name an allocation, not its job: the stream's events
		// of it, earlier in time, did.
		allocs.Observe(ctx, ev)
		if opts.Events {
			if err := enc.Encode(ev); err != nil {
				writeErr = err
			}
		} else {
			feed.process(ev, emit)
		}
		if opts.Progress != nil && st.Events%256 == 0 {
			opts.Progress.Events.Store(int64(st.Events))
		}
		if in.next() {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	if opts.Progress != nil {
		opts.Progress.Events.Store(int64(st.Events))
	}
	if corr != nil && writeErr == nil && ctx.Err() == nil {
		feed.finish(emit)
	}
	if err := w.Flush(); err != nil && writeErr == nil {
		writeErr = err
	}
	cancel()
	var errs []error
	for _, in := range inputs {
		in.wait()
		st.Lines += in.stats.Lines
		st.Oversize += in.stats.Oversize
		st.Unparsed += in.stats.Unparsed
		if in.err != nil && !errors.Is(in.err, context.Canceled) {
			errs = append(errs, in.err)
		}
	}
	if writeErr != nil {
		errs = append(errs, writeErr)
	}
	return st, errors.Join(errs...)
}

// replayInput is one input file decoded in its own goroutine.
type replayInput struct {
	name    string
	f       *os.File
	kind    string
	batches chan []ingest.Event
	cur     []ingest.Event
	pos     int
	done    chan struct{}
	stats   inputStats
	err     error
}

// Input kinds replay auto-detects.
const (
	kindLog      = "nomad agent log"
	kindEvents   = "nomad event stream"
	kindEVTX     = "evtx"
	kindEventXML = "event xml"
	// The systemd journal: a journal file (read through journalctl), its
	// export format, journalctl -o json.
	kindJournal       = "journal file"
	kindJournalExport = "journal export"
	kindJournalJSON   = "journal json"
)

// inputStats are the counters replay sums over inputs of every kind:
// lines (log lines, stream frames, Windows records) and the ones that
// could not be used.
type inputStats struct {
	Lines, Oversize, Unparsed int64
}

func openInput(name string) (*replayInput, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	head, err := readHead(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("replay: %s: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("replay: %s: %w", name, err)
	}
	in := &replayInput{name: name, f: f, batches: make(chan []ingest.Event, 16), done: make(chan struct{})}
	in.kind = detectKind(head)
	if in.kind == "" {
		f.Close()
		return nil, fmt.Errorf("replay: %s: unknown input format (expected a Nomad agent log (text or JSON), a Nomad event-stream recording (NDJSON), an EVTX file, rendered event XML, a systemd journal file or journal export/JSON)", name)
	}
	return in, nil
}

// detectKind tells the kind of input from its first bytes ("" when it is
// none that replay reads).
func detectKind(head []byte) string {
	switch journald.Detect(head) {
	case journald.FormatJournal:
		return kindJournal
	case journald.FormatExport:
		return kindJournalExport
	case journald.FormatJSON:
		return kindJournalJSON
	}
	switch {
	case winevt.DetectEVTX(head):
		return kindEVTX
	case nomadevents.Detect(head):
		return kindEvents
	case winevt.DetectXML(head):
		return kindEventXML
	case len(head) == 0 || nomadlog.Detect(head):
		return kindLog
	}
	return ""
}

// ExpandInputs replaces every directory among paths by the files in it
// (not below it) that replay can read, in name order; other files of a
// directory (job files, notes) are skipped. A directory without any input
// is an error; files named on their own are kept as they are.
func ExpandInputs(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			out = append(out, p) // Replay reports what is wrong with it
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		n := len(out)
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			name := filepath.Join(p, e.Name())
			f, err := os.Open(name)
			if err != nil {
				return nil, fmt.Errorf("replay: %w", err)
			}
			head, err := readHead(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("replay: %s: %w", name, err)
			}
			if len(head) > 0 && detectKind(head) != "" {
				out = append(out, name)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("replay: %s: no input replay can read in this directory", p)
		}
	}
	return out, nil
}

// readHead reads the first bytes of an input, enough to tell its kind.
func readHead(r io.Reader) ([]byte, error) {
	head := make([]byte, 4096)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return head[:n], nil
}

func (in *replayInput) start(ctx context.Context, opts ReplayOptions, ident *ingest.Identity) {
	go func() {
		defer close(in.done)
		defer close(in.batches)
		defer in.f.Close()
		var r io.Reader = in.f
		if opts.Progress != nil {
			r = countingReader{r: in.f, n: &opts.Progress.Bytes}
		}
		batch := make([]ingest.Event, 0, batchSize)
		emit := func(ev ingest.Event) {
			batch = append(batch, ev)
			if len(batch) == batchSize {
				select {
				case in.batches <- batch:
				case <-ctx.Done():
				}
				batch = make([]ingest.Event, 0, batchSize)
			}
		}
		switch in.kind {
		case kindLog:
			cfg := nomadlog.DecoderConfig{
				IDPrefix:     in.name,
				DefaultNode:  opts.Node,
				Identity:     ident,
				MaxLineBytes: opts.MaxLineBytes,
			}
			var st nomadlog.Stats
			st, in.err = nomadlog.ReadAll(ctx, r, cfg, emit)
			in.stats = inputStats{Lines: st.Lines, Oversize: st.Oversize, Unparsed: st.Unparsed}
		case kindEvents:
			var st nomadevents.Stats
			st, in.err = nomadevents.ReadAll(ctx, r, nomadevents.DecoderConfig{Identity: ident, Log: opts.Log, Name: in.name}, emit)
			in.stats = inputStats{Lines: st.Frames, Unparsed: st.Malformed + st.Unknown}
		case kindEVTX:
			var st winevt.Stats
			st, in.err = winevt.ReadEVTX(ctx, in.name, winevt.DecoderConfig{Identity: ident, Log: opts.Log}, emit)
			if opts.Progress != nil {
				if fi, err := in.f.Stat(); err == nil {
					opts.Progress.Bytes.Add(fi.Size())
				}
			}
			in.stats = inputStats{Lines: st.Records, Unparsed: st.BadRecords + st.BadChunks}
		case kindEventXML:
			var st winevt.Stats
			st, in.err = winevt.ReadXML(ctx, r, in.name, winevt.DecoderConfig{Identity: ident, Log: opts.Log}, emit)
			in.stats = inputStats{Lines: st.Records, Unparsed: st.BadRecords}
		case kindJournal, kindJournalExport, kindJournalJSON:
			jcfg := journald.ReadConfig{Name: in.name, DefaultNode: opts.Node, Identity: ident, MaxLineBytes: opts.MaxLineBytes}
			var st journald.Stats
			switch in.kind {
			case kindJournal:
				st, in.err = journald.ReadJournal(ctx, in.name, jcfg, emit)
				if opts.Progress != nil {
					if fi, err := in.f.Stat(); err == nil {
						opts.Progress.Bytes.Add(fi.Size())
					}
				}
			case kindJournalExport:
				st, in.err = journald.ReadAll(ctx, r, journald.FormatExport, jcfg, emit)
			default:
				st, in.err = journald.ReadAll(ctx, r, journald.FormatJSON, jcfg, emit)
			}
			in.stats = inputStats{Lines: st.Entries, Oversize: st.Oversize, Unparsed: st.Unparsed + st.Malformed}
		}
		if in.err != nil {
			in.err = fmt.Errorf("replay: %s: %w", in.name, in.err)
		}
		if len(batch) > 0 {
			select {
			case in.batches <- batch:
			case <-ctx.Done():
			}
		}
	}()
}

// next advances to the next event; false at the end of the input.
func (in *replayInput) next() bool {
	in.pos++
	for in.pos >= len(in.cur) {
		b, ok := <-in.batches
		if !ok {
			return false
		}
		in.cur, in.pos = b, 0
	}
	return true
}

func (in *replayInput) head() *ingest.Event { return &in.cur[in.pos] }

func (in *replayInput) wait() {
	for range in.batches {
	}
	<-in.done
}

// inputHeap orders inputs by the time of their next event (file order on ties).
type inputHeap []*replayInput

func (h inputHeap) Len() int { return len(h) }
func (h inputHeap) Less(i, j int) bool {
	return h[i].head().Time.Before(h[j].head().Time)
}
func (h inputHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *inputHeap) Push(x any)   { *h = append(*h, x.(*replayInput)) }
func (h *inputHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// feeder drives a correlator from events in time order, as replay and the
// playground do: time advances with the events (once per second of event
// time), and at the end the inputs are declared complete.
type feeder struct {
	corr        *correlate.Correlator
	nextAdvance time.Time
	last        time.Time
}

func (f *feeder) process(ev *ingest.Event, emit func(correlate.Incident)) {
	if !ev.Time.Before(f.nextAdvance) {
		f.corr.Advance(ev.Time, emit)
		f.nextAdvance = ev.Time.Add(time.Second)
	}
	if ev.Time.After(f.last) {
		f.last = ev.Time
	}
	f.corr.Process(ev, emit)
}

// finish takes the time-driven decisions due by the last event (absences,
// for), then sends the pending evidence of firing incidents.
func (f *feeder) finish(emit func(correlate.Incident)) {
	if !f.last.IsZero() {
		f.corr.Settle(f.last, emit)
	}
	f.corr.Flush(emit)
}
