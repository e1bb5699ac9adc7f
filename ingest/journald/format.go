package journald

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klaxon-dev/klaxon/ingest"
)

// The systemd journal's formats: a journal file (read through journalctl),
// its export format, and journalctl -o json.
var (
	JournalFileFormat = ingest.Format{
		Name:   "journal file",
		Order:  10,
		Detect: func(head []byte) bool { return Detect(head) == FormatJournal },
		Whole:  true,
		Read:   readJournalFormat,
	}
	ExportFormat = ingest.Format{
		Name:   "journal export",
		Order:  11,
		Detect: func(head []byte) bool { return Detect(head) == FormatExport },
		Read:   streamFormat(FormatExport),
	}
	JSONFormat = ingest.Format{
		Name:   "journal json",
		Order:  12,
		Detect: func(head []byte) bool { return Detect(head) == FormatJSON },
		Read:   streamFormat(FormatJSON),
	}
)

func init() {
	ingest.RegisterFormat(JournalFileFormat)
	ingest.RegisterFormat(ExportFormat)
	ingest.RegisterFormat(JSONFormat)
}

func readConfig(in ingest.Input, cfg ingest.ReadConfig) ReadConfig {
	return ReadConfig{Name: in.Name, DefaultNode: cfg.DefaultNode, Identity: cfg.Identity, MaxLineBytes: cfg.MaxLineBytes}
}

func stats(st Stats) ingest.ReadStats {
	return ingest.ReadStats{Lines: st.Entries, Oversize: st.Oversize, Unparsed: st.Unparsed + st.Malformed}
}

func streamFormat(format string) func(context.Context, ingest.Input, ingest.ReadConfig, func(ingest.Event)) (ingest.ReadStats, error) {
	return func(ctx context.Context, in ingest.Input, cfg ingest.ReadConfig, emit func(ingest.Event)) (ingest.ReadStats, error) {
		st, err := ReadAll(ctx, in.Stream, format, readConfig(in, cfg), emit)
		return stats(st), err
	}
}

// readJournalFormat reads a journal file through journalctl, which needs
// a file: input held in memory goes to a temporary one for the time of
// the read.
func readJournalFormat(ctx context.Context, in ingest.Input, cfg ingest.ReadConfig, emit func(ingest.Event)) (ingest.ReadStats, error) {
	path := in.Path
	if path == "" {
		f, err := os.CreateTemp("", "klaxon-journal-*")
		if err != nil {
			return ingest.ReadStats{}, fmt.Errorf("journald: %w", err)
		}
		defer os.Remove(f.Name())
		_, err = io.Copy(f, io.NewSectionReader(in.At, 0, in.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return ingest.ReadStats{}, fmt.Errorf("journald: %w", err)
		}
		path = f.Name()
	}
	st, err := ReadJournal(ctx, path, readConfig(in, cfg), emit)
	if err != nil && path != in.Path {
		err = errors.New(strings.ReplaceAll(err.Error(), path, in.Name))
	}
	return stats(st), err
}
