package replay

// The sources whose formats replay reads: each registers its
// ingest.Format from init.
import (
	_ "github.com/klaxon-dev/klaxon/ingest/journald"
	_ "github.com/klaxon-dev/klaxon/ingest/nomadevents"
	_ "github.com/klaxon-dev/klaxon/ingest/nomadlog"
	_ "github.com/klaxon-dev/klaxon/ingest/winevt"
)
