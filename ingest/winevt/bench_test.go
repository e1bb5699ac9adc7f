package winevt

import (
	"context"
	"os/exec"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

// BenchmarkReadEVTX reads plaso_System.evtx (5,009 records) and reports
// records/s; BenchmarkEvtxexport runs libevtx's evtxexport on the same file
// in the same run for comparison.
func BenchmarkReadEVTX(b *testing.B) {
	path := sharedFile(b, "plaso_System.evtx")
	var n int64
	for b.Loop() {
		st, err := ReadEVTXFile(context.Background(), path, DecoderConfig{}, func(ingest.Event) {})
		if err != nil {
			b.Fatal(err)
		}
		n += st.Records
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkEvtxexport(b *testing.B) {
	path := sharedFile(b, "plaso_System.evtx")
	bin := needEvtxexport(b)
	for b.Loop() {
		if err := exec.Command(bin, path).Run(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(5009*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkGolangEvtxFastEvents is golang-evtx used as its README shows
// (FastEvents → GoEvtxMap), for the record.
func BenchmarkGolangEvtxFastEvents(b *testing.B) {
	path := sharedFile(b, "plaso_System.evtx")
	var n int
	for b.Loop() {
		n += fastEventsCount(b, path)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkReadEVTXOneWorker(b *testing.B) {
	workersOverride = 1
	defer func() { workersOverride = 0 }()
	BenchmarkReadEVTX(b)
}
