package meter

import (
	"strconv"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// TestSourceMeterCheckpointAge: the age grows while read events wait for
// their acknowledgement and is 0 once all are acknowledged; published
// counts acknowledgements, and the source's own Commit still runs.
func TestSourceMeterCheckpointAge(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := t0
	now := func() time.Time { return clock }
	m := &Source{}
	in := make(chan ingest.Event, 4)
	out := make(chan ingest.Event, 4)
	committed := 0
	for i := 0; i < 2; i++ {
		in <- ingest.Event{ID: strconv.Itoa(i), Time: t0.Add(-3 * time.Second), Commit: func() { committed++ }}
	}
	in <- ingest.Event{ID: "no-commit"} // no event time, no Commit of its own
	close(in)
	m.Forward(in, out, now)
	close(out)
	var evs []ingest.Event
	for ev := range out {
		evs = append(evs, ev)
	}
	steps := []struct {
		advance time.Duration
		commit  int // events to acknowledge (in order) before reading the age
		age     float64
	}{
		{0, 0, 0},
		{10 * time.Second, 0, 10},
		{5 * time.Second, 1, 0}, // an acknowledgement restarts the wait
		{7 * time.Second, 0, 7},
		{1 * time.Second, 2, 0}, // all acknowledged
		{time.Hour, 0, 0},       // idle: nothing waits
	}
	next := 0
	for i, st := range steps {
		clock = clock.Add(st.advance)
		for j := 0; j < st.commit; j++ {
			evs[next].Commit()
			next++
		}
		if got := m.checkpointAge(clock); got != st.age {
			t.Errorf("step %d: age %v, want %v", i, got, st.age)
		}
	}
	if got := m.published.Load(); got != 3 {
		t.Errorf("published %d, want 3", got)
	}
	if committed != 2 {
		t.Errorf("sources' own Commit ran %d times, want 2", committed)
	}
	if got := m.lagMillis.Load(); got != 3000 {
		t.Errorf("lag %dms, want 3000 (events without a time leave it)", got)
	}
}
