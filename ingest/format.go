package ingest

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
)

// A Format is a kind of recorded input that replay and the web view's
// playground read (an agent log, an event-stream recording, an EVTX file,
// …). Each source package registers the formats it reads with
// RegisterFormat, so that readers of recorded input need no list of
// sources.
type Format struct {
	// Name names the format in messages and in the playground's answer.
	Name string
	// Order ranks the formats: Detect is asked in increasing Order, and
	// the first format whose Detect says yes reads the input.
	Order int
	// Detect tells from the first bytes of an input (up to HeadSize)
	// whether it is of this format.
	Detect func(head []byte) bool
	// Whole is set when Read reads the input through Input.At rather than
	// Input.Stream (progress counts the input when it is done).
	Whole bool
	// Read decodes the input and emits its events in order. The error is
	// for input it cannot read at all; damaged parts are counted.
	Read func(ctx context.Context, in Input, cfg ReadConfig, emit func(Event)) (ReadStats, error)
}

// HeadSize is how many first bytes of an input Format.Detect sees.
const HeadSize = 4096

// Input is one recorded input.
type Input struct {
	// Name names the input in event IDs and errors (the path as given).
	Name string
	// Path is the file the input is in ("" for input held in memory).
	Path string
	// At and Size are the whole input.
	At   io.ReaderAt
	Size int64
	// Stream reads the input from its first byte (progress counts what
	// it reads).
	Stream io.Reader
}

// ReadConfig is what Format.Read takes besides its input.
type ReadConfig struct {
	// DefaultNode names the node of inputs that do not carry one.
	DefaultNode string
	// Identity is the shared node identity map.
	Identity *Identity
	// Log receives warnings about damaged input.
	Log *slog.Logger
	// MaxLineBytes caps one input line (default 1 MiB).
	MaxLineBytes int
}

// ReadStats are the counters every format has: lines (log lines, stream
// frames, records, journal entries) and the ones that could not be used.
type ReadStats struct {
	Lines, Oversize, Unparsed int64
}

var (
	formatsMu sync.Mutex
	formats   []Format
)

// RegisterFormat makes a format known to DetectFormat and Formats; source
// packages call it from init.
func RegisterFormat(f Format) {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	formats = append(formats, f)
	slices.SortStableFunc(formats, func(a, b Format) int { return a.Order - b.Order })
}

// Formats returns the registered formats in Order.
func Formats() []Format {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	return slices.Clone(formats)
}

// DetectFormat returns the first registered format that says head is of
// its kind.
func DetectFormat(head []byte) (Format, bool) {
	for _, f := range Formats() {
		if f.Detect(head) {
			return f, true
		}
	}
	return Format{}, false
}
