package nomadevents

import (
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

// BenchmarkDecoder decodes the recorded frames of both captures with a fresh
// decoder per pass (so every change and task event is emitted each time).
func BenchmarkDecoder(b *testing.B) {
	var lines [][]byte
	size := 0
	for _, name := range captures {
		for _, l := range readLinesOf(b, capturePath(b, name)) {
			lines = append(lines, l)
			size += len(l) + 1
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var events, frames int64
	emit := func(ingest.Event) { events++ }
	b.ResetTimer()
	for b.Loop() {
		d := NewDecoder(DecoderConfig{})
		for _, l := range lines {
			_ = d.Frame(l, emit)
		}
		frames += int64(len(lines))
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(events)/sec, "events/s")
	b.ReportMetric(float64(frames)/sec, "frames/s")
}

// BenchmarkSkipFrame skips every recorded frame without decoding it: the floor
// under BenchmarkDecoder, which walks each frame once to check it and once
// more to decode its events.
func BenchmarkSkipFrame(b *testing.B) {
	var lines [][]byte
	size := 0
	for _, name := range captures {
		for _, l := range readLinesOf(b, capturePath(b, name)) {
			lines = append(lines, l)
			size += len(l)
		}
	}
	b.SetBytes(int64(size))
	for b.Loop() {
		for _, l := range lines {
			if _, err := skipValue(l, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
}
