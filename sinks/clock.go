package sinks

import (
	"context"
	"time"
)

// Clock is the Dispatcher's own clock: when a change NAKed for a retry or
// held back is due again, how long a change waits after a restart for the
// earlier changes of its incident, when a dead letter failed, how long the
// newest delivered change of an incident is remembered, the repeat and
// silence-check tickers, and the back-off between failed fetches.
//
// It is not the clock silences are checked against (DispatcherConfig.Now):
// a test freezes or steps that one to end a silence, while retries and
// back-offs keep running on this one.
type Clock interface {
	Now() time.Time
	// After sends the time on the channel once d has passed.
	After(d time.Duration) <-chan time.Time
	// NewTicker ticks every d until stopped.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a Clock's ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// RealClock is the wall clock, the default Clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// NewTicker returns a time.Ticker.
func (RealClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// sleep waits d on c, or until ctx is done.
func sleep(ctx context.Context, c Clock, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-c.After(d):
	}
}
