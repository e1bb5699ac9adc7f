package journald

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// DefaultReplayUnits are the units whose entries replay decodes: the
// Nomad agent however its unit is named (nomad.service, nomad-client.service).
var DefaultReplayUnits = []string{"nomad*"}

// ReadConfig configures ReadAll and ReadJournal (replay).
type ReadConfig struct {
	// Name names the input in errors and makes the IDs of entries without
	// a cursor (Name:ordinal).
	Name string
	// DefaultNode is the node of entries without _HOSTNAME.
	DefaultNode string
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
	// MaxLineBytes caps one line of MESSAGE (default 1 MiB).
	MaxLineBytes int
	// Units are path.Match patterns of the units (_SYSTEMD_UNIT, else
	// SYSLOG_IDENTIFIER) whose entries are decoded; entries that name
	// neither are decoded too. Default DefaultReplayUnits.
	Units []string
	// Journalctl is the journalctl command of ReadJournal (default:
	// journalctl in PATH).
	Journalctl string
}

func (c *ReadConfig) decoderConfig() decoderConfig {
	units := c.Units
	if len(units) == 0 {
		units = DefaultReplayUnits
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = nomadlog.DefaultMaxLineBytes
	}
	return decoderConfig{
		DefaultNode:  c.DefaultNode,
		Identity:     c.Identity,
		MaxLineBytes: c.MaxLineBytes,
		IDPrefix:     c.Name,
		Keep: func(e *Entry) bool {
			name := e.Unit
			if name == "" {
				name = e.Identifier
			}
			if name == "" {
				return true
			}
			for _, u := range units {
				if ok, _ := path.Match(u, name); ok {
					return true
				}
			}
			return false
		},
	}
}

// ReadAll decodes a journal export (FormatExport) or journalctl -o json
// (FormatJSON) stream into events, the MESSAGE lines as nomadlog decodes
// the lines of an agent log. Malformed input is counted and skipped where
// the format allows it.
func ReadAll(ctx context.Context, r io.Reader, format string, cfg ReadConfig, emit func(ingest.Event)) (Stats, error) {
	d := newDecoder(cfg.decoderConfig(), nil)
	n := 0
	cancelled := func() bool {
		n++
		return n&1023 == 0 && ctx.Err() != nil
	}
	var err error
	switch format {
	case FormatJSON:
		err = readLines(r, maxJSONLine(cfg.MaxLineBytes), func(line []byte, oversize bool) error {
			if cancelled() {
				return ctx.Err()
			}
			feedJSON(d, line, oversize, emit)
			return nil
		})
		if errors.Is(err, io.EOF) {
			err = nil
		}
	case FormatExport:
		err = feedExport(ctx, d, r, cfg.MaxLineBytes, emit)
	default:
		return Stats{}, fmt.Errorf("journald: %s: unknown format %q", nameOr(cfg.Name), format)
	}
	d.flush(emit)
	if err != nil {
		err = fmt.Errorf("journald: %w", err)
	}
	return d.Stats(), err
}

// feedExport decodes an export stream into d until its end.
func feedExport(ctx context.Context, d *decoder, r io.Reader, maxLine int, emit func(ingest.Event)) error {
	x := newExportReader(r, maxField(maxLine))
	defer func() { d.stats.Oversize += x.skipped }()
	for n := 1; ; n++ {
		if n&1023 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		e, err := x.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		d.feed(&e, emit)
	}
}

// maxJSONLine bounds one line of journalctl -o json output for a MESSAGE
// line limit of max bytes: escapes can make a byte six, and binary values
// print as arrays of numbers (up to four bytes each).
func maxJSONLine(max int) int {
	return 6*max + 64<<10
}

// feedJSON decodes one line of journalctl -o json output into d.
func feedJSON(d *decoder, line []byte, oversize bool, emit func(ingest.Event)) {
	if oversize {
		d.stats.Oversize++
		return
	}
	if len(line) == 0 {
		return
	}
	e, err := parseJSON(line)
	if err != nil {
		d.stats.Malformed++
		return
	}
	d.feed(&e, emit)
}

// ReadJournal decodes a binary journal file (FormatJournal) through
// journalctl --file (its export output).
func ReadJournal(ctx context.Context, file string, cfg ReadConfig, emit func(ingest.Event)) (Stats, error) {
	if cfg.Name == "" {
		cfg.Name = file
	}
	j, err := lookJournalctl(cfg.Journalctl)
	if err != nil {
		return Stats{}, fmt.Errorf("%w (needed to read journal files)", err)
	}
	dc := cfg.decoderConfig()
	for {
		d := newDecoder(dc, nil)
		stderr, err := j.run(ctx, j.args(scope{files: []string{file}}, nil), func(r io.Reader) error {
			return feedExport(ctx, d, r, cfg.MaxLineBytes, emit)
		})
		if err != nil && d.stats.Entries == 0 {
			if _, ok := j.adapt(stderr); ok {
				continue
			}
		}
		d.flush(emit)
		if err != nil {
			err = fmt.Errorf("journald: %w", err)
		}
		return d.Stats(), err
	}
}

func nameOr(s string) string {
	if s == "" {
		return "input"
	}
	return s
}
