package nomadevents

import (
	"context"

	"github.com/klaxon-dev/klaxon/ingest"
)

// StreamFormat is a recording of a Nomad server's event stream (NDJSON
// frames, as /v1/event/stream sends them).
var StreamFormat = ingest.Format{
	Name:   "nomad event stream",
	Order:  30,
	Detect: Detect,
	Read:   readFormat,
}

func init() { ingest.RegisterFormat(StreamFormat) }

func readFormat(ctx context.Context, in ingest.Input, cfg ingest.ReadConfig, emit func(ingest.Event)) (ingest.ReadStats, error) {
	st, err := ReadAll(ctx, in.Stream, DecoderConfig{Identity: cfg.Identity, Log: cfg.Log, Name: in.Name}, emit)
	return ingest.ReadStats{Lines: st.Frames, Unparsed: st.Malformed + st.Unknown}, err
}
