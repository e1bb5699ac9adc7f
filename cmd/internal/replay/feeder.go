package replay

import (
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
)

// feeder drives a correlator from events in time order, as replay and the
// playground do: time advances with the events (once per second of event
// time), and at the end the inputs are declared complete.
type feeder struct {
	corr        *correlate.Correlator
	nextAdvance time.Time
	last        time.Time
}

func (f *feeder) process(ev *ingest.Event, emit func(correlate.Incident)) {
	if !ev.Time.Before(f.nextAdvance) {
		f.corr.Advance(ev.Time, emit)
		f.nextAdvance = ev.Time.Add(time.Second)
	}
	if ev.Time.After(f.last) {
		f.last = ev.Time
	}
	f.corr.Process(ev, emit)
}

// finish takes the time-driven decisions due by the last event (absences,
// for), then sends the pending evidence of firing incidents.
func (f *feeder) finish(emit func(correlate.Incident)) {
	if !f.last.IsZero() {
		f.corr.Settle(f.last, emit)
	}
	f.corr.Flush(emit)
}
