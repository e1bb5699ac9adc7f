// Package sinks delivers incidents: the Sink interface every sink package
// implements, and the Dispatcher that feeds each sink from its own durable
// JetStream consumer with retry, back-off and a dead-letter subject.
package sinks

import (
	"context"

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
