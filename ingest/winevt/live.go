package winevt

import "github.com/klaxon-dev/klaxon/ingest"

// DefaultChannels are the channels LiveConfig subscribes to by default.
var DefaultChannels = []string{"System", "Application"}

// LiveConfig configures the live Windows Event Log source (NewLive).
type LiveConfig struct {
	// Channels to subscribe to (default System and Application).
	Channels []string
	// Query is the XPath filter of the subscription (default "*").
	Query string
	// Checkpoints stores the bookmark XML per channel (key
	// "winevt-live:<channel>"), advanced by the events' Commit; may be nil
	// (then only future events are read).
	Checkpoints *ingest.Checkpoints
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
}
