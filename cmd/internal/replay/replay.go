// Package replay pushes recorded inputs (agent logs, event-stream
// recordings, EVTX files, journal files, …: every ingest.Format a source
// package registers) through the rules and the correlator, as `klaxon
// replay` and the web view's playground do.
package replay

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

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadalloc"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks/stdout"
)

// Options configure Run.
type Options struct {
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
	// replayed while Run runs (for a progress display).
	Progress *Progress
}

// Progress is what Run has done so far; safe to read while it runs.
type Progress struct {
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

// Stats sums up a replay.
type Stats struct {
	Files     int
	Lines     int64
	Events    uint64
	Oversize  int64
	Unparsed  int64
	Incidents uint64
}

// batchSize is how many events a reader hands over at once.
const batchSize = 256

// Run pushes recorded inputs through the rules and the correlator (the
// same code the live pipeline runs) and writes incident changes, or the
// normalised events, to opts.Out. Inputs are merged in event time.
func Run(ctx context.Context, files []string, opts Options) (Stats, error) {
	var st Stats
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
	inputs := make([]*input, 0, len(files))
	for _, f := range files {
		in, err := openFile(f)
		if err != nil {
			for _, o := range inputs {
				o.close()
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
			if _, ok := ingest.DetectFormat(head); ok && len(head) > 0 {
				out = append(out, name)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("replay: %s: no input replay can read in this directory", p)
		}
	}
	return out, nil
}
