package ingest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"
)

// Where a file-following source starts in a file it has no checkpoint for.
const (
	ReadFromEnd       = "end"
	ReadFromBeginning = "beginning"
)

// ValidateFollow checks the settings every file-following source shares:
// paths (non-empty, valid globs), read_from (defaulted to end) and the
// poll interval. Errors start with source ("nomadlog", "winevt") and name
// the setting.
func ValidateFollow(source string, paths []string, readFrom *string, poll time.Duration) []error {
	var errs []error
	if len(paths) == 0 {
		errs = append(errs, errors.New(source+": paths: none given"))
	}
	for i, p := range paths {
		if p == "" {
			errs = append(errs, fmt.Errorf("%s: paths[%d]: empty", source, i))
			continue
		}
		if _, err := filepath.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s: paths[%d] %q: %w", source, i, p, err))
		}
	}
	switch *readFrom {
	case "":
		*readFrom = ReadFromEnd
	case ReadFromEnd, ReadFromBeginning:
	default:
		errs = append(errs, fmt.Errorf("%s: read_from %q: want %q or %q", source, *readFrom, ReadFromEnd, ReadFromBeginning))
	}
	if poll < 0 {
		errs = append(errs, fmt.Errorf("%s: poll_interval %s: negative", source, poll))
	}
	return errs
}

// Glob expands paths and globs (already validated) into the sorted,
// distinct absolute paths they match now.
func Glob(paths []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		m, err := filepath.Glob(p)
		if err != nil {
			continue
		}
		for _, x := range m {
			if abs, err := filepath.Abs(x); err == nil && !seen[abs] {
				seen[abs] = true
				out = append(out, abs)
			}
		}
	}
	sort.Strings(out)
	return out
}

// PollLoop is the loop of a file-following source: poll at once (startup
// true) and then every interval until ctx is done, and flush (the
// checkpoints) about once a second between polls.
func PollLoop(ctx context.Context, interval time.Duration, poll func(startup bool), flush func()) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	startup := true
	lastFlush := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		poll(startup)
		startup = false
		if ctx.Err() != nil {
			return
		}
		if time.Since(lastFlush) >= time.Second {
			flush()
			lastFlush = time.Now()
		}
		timer.Reset(interval)
	}
}
