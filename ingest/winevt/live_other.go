//go:build !windows

package winevt

import (
	"errors"
	"log/slog"

	"github.com/klaxon-dev/klaxon/ingest"
)

const isWindows = false

// NewLive returns an error: the Windows Event Log API is only available on
// Windows (replay EVTX files or rendered XML instead).
func NewLive(cfg LiveConfig, log *slog.Logger) (ingest.Source, error) {
	return nil, errors.New("winevt: the Windows Event Log API is only available on Windows")
}
