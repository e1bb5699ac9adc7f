package ingest

import (
	"errors"
	"fmt"
	"path/filepath"
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
