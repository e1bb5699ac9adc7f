package nomadalloc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

func jobEvent(ns, job string, meta map[string]any) *ingest.Event {
	f := map[string]any{"job": job, "namespace": ns}
	if meta != nil {
		f[JobMetaField] = meta
	}
	return &ingest.Event{Source: ingest.SourceNomadEvent, Kind: "Job.JobRegistered", Fields: f}
}

func metaOfEvent(ev *ingest.Event) string {
	m, ok := ev.Fields[JobMetaField].(map[string]any)
	if !ok {
		return "none"
	}
	return fmt.Sprint(m)
}

// TestJobMeta: events naming a job get its meta, learnt from the stream's
// Job events (a re-registration with other meta replaces it, one without
// meta removes it), from the allocation lookup's answer, or asked of the
// job API once per JobMetaTTL; failures are not asked again before
// RetryFailed and keep the last meta known.
func TestJobMeta(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	asked := map[string]int{}
	jobs := map[string]map[string]string{"prod/beta": {"team": "search"}, "default/gamma": {}}
	down := false
	c := New(Config{
		Now: func() time.Time { return now }, Log: quiet(), RetryFailed: time.Minute, JobMetaTTL: 5 * time.Minute,
		Lookup: func(_ context.Context, id string) (Info, error) {
			if id == "d" {
				return Info{Namespace: "ops", Job: "delta", TaskGroup: "g", JobMeta: map[string]string{"team": "ops"}}, nil
			}
			return Info{}, errors.New("404")
		},
		JobLookup: func(_ context.Context, ns, job string) (map[string]string, error) {
			asked[ns+"/"+job]++
			if m, ok := jobs[ns+"/"+job]; ok && !down {
				return m, nil
			}
			return nil, errors.New("job lookup failed")
		},
	})
	ctx := context.Background()
	c.Observe(ctx, jobEvent("prod", "pay", map[string]any{"team": "payments", "owner": "alice"}))
	c.Observe(ctx, streamEvent("a", "prod", "pay", "web"))

	check := func(name string, ev *ingest.Event, want string) {
		t.Helper()
		c.Observe(ctx, ev)
		if got := metaOfEvent(ev); got != want {
			t.Errorf("%s: job_meta %s, want %s", name, got, want)
		}
	}
	check("log line of a stream-named allocation", logLine("a"), "map[owner:alice team:payments]")
	check("stream event of the job", streamEvent("a2", "prod", "pay", "web"), "map[owner:alice team:payments]")
	check("log line of a looked-up allocation", logLine("d"), "map[team:ops]")
	check("a job asked of the API", streamEvent("b", "prod", "beta", "g"), "map[team:search]")
	check("…cached", streamEvent("b", "prod", "beta", "g"), "map[team:search]")
	check("a job without meta", streamEvent("g", "", "gamma", "g"), "none")
	check("an unknown job", streamEvent("x", "prod", "nope", "g"), "none")
	check("…not asked again", streamEvent("x", "prod", "nope", "g"), "none")
	if asked["prod/pay"] != 0 || asked["ops/delta"] != 0 || asked["prod/beta"] != 1 || asked["default/gamma"] != 1 || asked["prod/nope"] != 1 {
		t.Errorf("job lookups %v", asked)
	}
	// An event that carries meta keeps it.
	own := streamEvent("a", "prod", "pay", "web")
	own.Fields[JobMetaField] = map[string]any{"team": "own"}
	check("own meta", own, "map[team:own]")

	// The stream's meta holds; the API's expires after the TTL, and a
	// failed refresh keeps the last meta known.
	now = now.Add(6 * time.Minute)
	down = true
	check("stream meta after the TTL", logLine("a"), "map[owner:alice team:payments]")
	check("API meta after the TTL, API down", streamEvent("b", "prod", "beta", "g"), "map[team:search]")
	if asked["prod/beta"] != 2 || asked["prod/pay"] != 0 {
		t.Errorf("after the TTL: job lookups %v", asked)
	}
	// Re-registered with other meta, then without any.
	c.Observe(ctx, jobEvent("prod", "pay", map[string]any{"team": "payments-2"}))
	check("re-registered", logLine("a"), "map[team:payments-2]")
	c.Observe(ctx, jobEvent("prod", "pay", nil))
	check("meta removed", logLine("a"), "none")
	if st := c.Stats(); st.JobLookups != 4 || st.JobLookupFailures != 2 {
		t.Errorf("stats %+v", st)
	}
}
