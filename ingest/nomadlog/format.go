package nomadlog

import (
	"context"

	"github.com/klaxon-dev/klaxon/ingest"
)

// LogFormat is a Nomad agent log, text or JSON (an empty input too): the
// last format tried.
var LogFormat = ingest.Format{
	Name:   "nomad agent log",
	Order:  100,
	Detect: func(head []byte) bool { return len(head) == 0 || Detect(head) },
	Read:   readFormat,
}

func init() { ingest.RegisterFormat(LogFormat) }

func readFormat(ctx context.Context, in ingest.Input, cfg ingest.ReadConfig, emit func(ingest.Event)) (ingest.ReadStats, error) {
	st, err := ReadAll(ctx, in.Stream, DecoderConfig{
		IDPrefix:     in.Name,
		DefaultNode:  cfg.DefaultNode,
		Identity:     cfg.Identity,
		MaxLineBytes: cfg.MaxLineBytes,
	}, emit)
	return ingest.ReadStats{Lines: st.Lines, Oversize: st.Oversize, Unparsed: st.Unparsed}, err
}
