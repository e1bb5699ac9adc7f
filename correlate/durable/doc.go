// Package durable runs the correlator as a durable consumer of
// KLAXON_EVENTS, as sinks.Dispatcher is the durable consumer of
// KLAXON_INCIDENTS: it restores the checkpoint of every partition it holds
// (correlate/checkpoint), feeds the events through a correlate.Correlator,
// publishes the incident changes to KLAXON_INCIDENTS, stores checkpoints
// and acknowledges what they cover. On an external NATS cluster the
// partitions are shared between replicas through leases in KLAXON_LEASES
// and fenced through the checkpoints' meta records.
package durable

import "time"

// Config tunes the durable correlators (the correlator block of the
// configuration file).
type Config struct {
	// UpdateInterval and MaxEvidence are the correlator's
	// (correlate.Options).
	UpdateInterval time.Duration
	MaxEvidence    int
	// SnapshotInterval is how often the correlator time advances and a
	// checkpoint is stored.
	SnapshotInterval time.Duration
	// CheckpointMaxAge is how long a partition may go without storing its
	// state before Metrics.Fresh says not (0: DefaultCheckpointMaxAge).
	CheckpointMaxAge time.Duration
	// Lateness is how far behind the wall clock the correlator's time runs;
	// Idle how long a source may deliver nothing before it stops holding
	// the watermark back (correlate.Options).
	Lateness time.Duration
	Idle     time.Duration
	// Partition is the partition this replica prefers (nil: every one).
	Partition *int
	// LeaseTTL is how long a partition's lease lives without renewal.
	LeaseTTL time.Duration
	// NomadUI is the Nomad UI's base URL for the incidents' links ("": none).
	NomadUI string
}
