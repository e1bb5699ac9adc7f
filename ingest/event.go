// Package ingest holds what every source shares: the Event schema, the
// Source interface, source checkpoints and the node identity map.
package ingest

import (
	"context"
	"time"
)

// Source names used in Event.Source.
const (
	SourceNomadLog   = "nomad.log"
	SourceNomadEvent = "nomad.event"
	SourceWinEvt     = "winevt"
	SourceIncident   = "klaxon.incident"
	// SourceNodeFact are facts about a node its sidecar publishes (the
	// desktop heap size of a Windows node: ingest/winfact).
	SourceNodeFact = "node.fact"
	// SourceAction are the records of actions taken on incidents (making
	// a node ineligible: sinks/nomadaction); the correlator puts them in
	// the incident's evidence.
	SourceAction = "klaxon.action"
)

// Normalised levels used in Event.Level.
const (
	LevelTrace = "trace"
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Event is one record of any source, normalised to the schema of DESIGN.md.
// Field values from hclog are strings so that one rule matches text and JSON
// logs alike; other sources may carry numbers and booleans.
type Event struct {
	// ID is stable and unique per source record; it is sent as Nats-Msg-Id.
	ID string `json:"id"`
	// Time is when the record happened (event time), not when it was read.
	Time time.Time `json:"time"`
	// Node is the canonical node name (lower-case short host name).
	Node string `json:"node"`
	// NodeID is the Nomad node ID when it is known.
	NodeID string `json:"node_id,omitempty"`
	// Source is one of the Source* constants.
	Source string `json:"source"`
	// Kind is the logger (nomad.log), Topic.Type (nomad.event) or
	// Provider/EventID (winevt).
	Kind string `json:"kind"`
	// Level is one of the Level* constants.
	Level string `json:"level"`
	// Msg is the human message.
	Msg string `json:"msg"`
	// Fields holds everything else.
	Fields map[string]any `json:"fields,omitempty"`
	// Occurrence names the real-world happening the record describes, the
	// same for every source that reports it (e.g. the agent log's
	// "restarting task" line and the event stream's Restarting task event of
	// one restart): see TaskOccurrence. Empty when a record is its own
	// occurrence. The correlator counts records of one occurrence once.
	Occurrence string `json:"occurrence,omitempty"`

	// Commit, when set, is called once the event is durably stored (JetStream
	// acknowledged it, or replay consumed it). Commits are called in the order
	// the events were emitted by one source. Sources use it to advance their
	// checkpoints.
	Commit func() `json:"-"`
}

// OccurrenceTolerance is how far apart in event time two records of one
// occurrence may lie: the sources stamp it from the same agent clock, a few
// milliseconds apart (log lines carry milliseconds, the stream
// nanoseconds), while two real occurrences of one task event type are
// seconds apart (a restart waits for its delay, a check for its interval).
const OccurrenceTolerance = time.Second

// TaskOccurrence is the Occurrence of a Nomad task event: the allocation,
// the task and the event type ("Restarting", "Not Restarting", "Restart
// Signaled", ...). Empty when one of them is unknown.
func TaskOccurrence(allocID, task, eventType string) string {
	if allocID == "" || task == "" || eventType == "" {
		return ""
	}
	return "task/" + allocID + "/" + task + "/" + eventType
}

// Field returns the named field as a string ("" when absent).
func (e *Event) Field(name string) string {
	v, ok := e.Fields[name]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return stringify(v)
}

// Source produces events. Run returns when ctx is done (or on a fatal
// error) and never closes out.
type Source interface {
	// Name identifies the source instance in logs and metrics.
	Name() string
	// Run emits events into out until ctx is done.
	Run(ctx context.Context, out chan<- Event) error
}

// Counted is a Source that counts the input it could not use, for
// /metrics (klaxon_source_parse_errors_total).
type Counted interface {
	Source
	Counters() Counters
}

// Counters are the counters of a Counted source.
type Counters struct {
	// ParseErrors is the input the source could not use (unparsed or
	// oversize lines, malformed frames, damaged records).
	ParseErrors int64
	// Stream, for a source that follows a server's event stream, counts
	// the stream's resets, gaps and stale frames (nil for other sources).
	Stream *StreamCounters
}

// StreamCounters are the mishaps of an event stream followed from a
// server: its index went back below the checkpoint (Resets), a resume
// skipped indexes that left the server's buffer (Gaps), frames below the
// resume index were dropped (Stale).
type StreamCounters struct {
	Resets, Gaps, Stale int64
}
