package winevt

import (
	"context"

	"github.com/klaxon-dev/klaxon/ingest"
)

// EVTXFormat is an Event Log file (.evtx), read whole through its chunks.
var EVTXFormat = ingest.Format{
	Name:   "evtx",
	Order:  20,
	Detect: DetectEVTX,
	Whole:  true,
	Read: func(ctx context.Context, in ingest.Input, cfg ingest.ReadConfig, emit func(ingest.Event)) (ingest.ReadStats, error) {
		st, err := ReadEVTX(ctx, in.At, in.Size, in.Name, DecoderConfig{Identity: cfg.Identity, Log: cfg.Log}, emit)
		return ingest.ReadStats{Lines: st.Records, Unparsed: st.BadRecords + st.BadChunks}, err
	},
}

// XMLFormat is rendered event XML (wevtutil qe /f:xml, Get-WinEvent's
// ToXml()).
var XMLFormat = ingest.Format{
	Name:   "event xml",
	Order:  40,
	Detect: DetectXML,
	Read: func(ctx context.Context, in ingest.Input, cfg ingest.ReadConfig, emit func(ingest.Event)) (ingest.ReadStats, error) {
		st, err := ReadXML(ctx, in.Stream, in.Name, DecoderConfig{Identity: cfg.Identity, Log: cfg.Log}, emit)
		return ingest.ReadStats{Lines: st.Records, Unparsed: st.BadRecords}, err
	},
}

func init() {
	ingest.RegisterFormat(EVTXFormat)
	ingest.RegisterFormat(XMLFormat)
}
