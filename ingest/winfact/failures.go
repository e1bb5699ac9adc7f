package winfact

import (
	"log/slog"
	"sync/atomic"
)

// failures counts the failed reads of a source and says when they start
// and stop failing, once each: a registry key or a sampler that keeps
// failing logs once, not at every interval.
type failures struct {
	n       atomic.Int64
	failing bool // the last read failed
}

// fail counts a failure; the first of a run is logged at WARN.
func (f *failures) fail(log *slog.Logger, msg string, args ...any) {
	f.n.Add(1)
	if !f.failing {
		f.failing = true
		log.Warn(msg, args...)
	}
}

// ok ends a run of failures, logged at INFO.
func (f *failures) ok(log *slog.Logger, msg string, args ...any) {
	if f.failing {
		f.failing = false
		log.Info(msg, args...)
	}
}
