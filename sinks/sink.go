// Package sinks delivers incidents: the Sink interface every sink package
// implements, the Dispatcher that feeds each sink from its own durable
// JetStream consumer (per-incident ordering, retry with jittered back-off,
// a dead-letter subject), routing (Route), grouping and throttling
// (Throttle), dead-letter tooling (ListDLQ, ReplayDLQ), and the helpers the
// HTTP sinks share (HTTPError, CheckURL); their credentials are
// ingest.SecretRef.
package sinks

import (
	"context"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// Sink delivers one incident change. Retry and back-off live once, in the
// Dispatcher: a sink only says whether a failure is worth retrying.
type Sink interface {
	// Name identifies the sink instance (consumer name, metrics, logs).
	Name() string
	// Send delivers one change. retryable tells the dispatcher whether a
	// later attempt may succeed (timeouts, 5xx, 429) or not (4xx, bad config).
	Send(ctx context.Context, in correlate.Incident) (retryable bool, err error)
	// Close releases resources.
	Close() error
}

// RetryAfter is implemented by errors that know when a retry may succeed
// (an HTTP 429 or 503 with Retry-After). The dispatcher waits at least
// RetryAfter before the next attempt when it is positive.
type RetryAfter interface {
	RetryAfter() time.Duration
}

// Runner is implemented by sinks that have background work (the
// Alertmanager sink re-sends its open alerts). The Dispatcher of the sink
// runs it for as long as it runs itself.
type Runner interface {
	Run(ctx context.Context) error
}

// Restorer is implemented by sinks that keep state about open incidents
// (the Alertmanager sink's re-send set). At start the Dispatcher feeds it
// the latest change of every incident that is still open according to the
// incidents stream and that the sink's route matches, so that the state
// lost with the process comes back.
type Restorer interface {
	Restore(in correlate.Incident)
}
