package silence

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseMatcherAndMatch(t *testing.T) {
	in := correlate.Incident{
		ID: "abc123", Rule: "nomad.task.crash_loop", Node: "vm", Severity: "error",
		Group:  map[string]string{"node": "vm", "fields.task": "app"},
		Labels: map[string]string{"component": "nomad", "team": "infra"},
	}
	tests := []struct {
		matcher string
		want    bool
		err     string
	}{
		{matcher: "rule=nomad.task.crash_loop", want: true},
		{matcher: "rule=nomad.task.other", want: false},
		{matcher: `rule="nomad.task.crash_loop"`, want: true},
		// = and != compare the whole value, as in Alertmanager: * and ?
		// are plain characters.
		{matcher: "rule=nomad.task.*", want: false},
		{matcher: "rule=nomad.client.*", want: false},
		{matcher: "rule!=nomad.task.*", want: true},
		{matcher: "node=v?", want: false},
		{matcher: "node=vm", want: true},
		{matcher: "node!=vm", want: false},
		{matcher: "rule=nomad.task", want: false}, // no prefix match either
		{matcher: "rule=~nomad\\.task\\..+", want: true},
		{matcher: "rule=~task", want: false}, // anchored, as in Alertmanager
		{matcher: "rule!~nomad\\.client\\..*", want: true},
		{matcher: "severity!=critical", want: true},
		{matcher: "labels.team=infra", want: true},
		{matcher: "team=infra", want: true}, // a bare name is a label
		{matcher: "fields.task=app", want: true},
		{matcher: "group.fields.task=web", want: false},
		{matcher: "missing=", want: true}, // absent is empty, as in Alertmanager
		{matcher: "id=abc123", want: true},
		{matcher: "rule", err: "want name=value"},
		{matcher: "=x", err: "want name=value"},
		{matcher: "rule=~(", err: "missing closing )"},
		{matcher: "rule=*.crash_loop", want: false},
		{matcher: "rule=~.*\\.crash_loop", want: true},
		{matcher: "rule=~nomad.task.*", want: true}, // the pattern a glob user meant
		{matcher: `team="in\x66ra"`, want: true},    // quoted values are unquoted with escapes
		{matcher: `team="infra`, want: false},       // an unbalanced quote is part of the value
		{matcher: `team="a" b"`, err: "bad quoted value"},
	}
	for _, tc := range tests {
		t.Run(tc.matcher, func(t *testing.T) {
			m, err := ParseMatcher(tc.matcher)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Matches(in); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSilenceState(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	s := Silence{StartsAt: t0, EndsAt: t0.Add(time.Hour)}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{t0.Add(-time.Second), StatePending},
		{t0, StateActive},
		{t0.Add(time.Hour - time.Nanosecond), StateActive},
		{t0.Add(time.Hour), StateExpired},
	} {
		if got := s.State(tc.at); got != tc.want {
			t.Errorf("State(%s) = %s, want %s", tc.at.Format(time.RFC3339Nano), got, tc.want)
		}
	}
	bad := Silence{StartsAt: t0, EndsAt: t0.Add(-time.Minute)}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "at least one matcher") || !strings.Contains(err.Error(), "before starts_at") {
		t.Errorf("Validate: %v", err)
	}
}

// clock is a stepped clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// recorder is a sink that records what it got.
type recorder struct {
	mu  sync.Mutex
	got []correlate.Incident
}

func (r *recorder) Name() string { return "pager" }
func (r *recorder) Close() error { return nil }
func (r *recorder) Send(_ context.Context, in correlate.Incident) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, in)
	return false, nil
}

func (r *recorder) of(id string) []correlate.Incident {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []correlate.Incident
	for _, in := range r.got {
		if in.ID == id {
			out = append(out, in)
		}
	}
	return out
}

type env struct {
	t     *testing.T
	js    jetstream.JetStream
	clock *clock
	sink  *recorder
}

func newEnv(t *testing.T, now time.Time) *env {
	_, js := sinktest.StartJetStream(t)
	if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: natslayout.SilencesBucket, History: 5}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, js: js, clock: newClock(now), sink: &recorder{}}
}

// start runs a store and a real dispatcher until the returned stop is called.
func (e *env) start() (*Store, *sinks.Dispatcher, func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := Open(ctx, e.js, quiet())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	d := sinks.NewDispatcher(e.js, e.sink, sinks.DispatcherConfig{
		Silencer: st, Now: e.clock.Now, SilenceCheck: 20 * time.Millisecond,
	}, quiet())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			e.t.Error("dispatcher did not stop")
		}
	}
	e.t.Cleanup(stop)
	return st, d, stop
}

func mustMatchers(t *testing.T, ss ...string) []Matcher {
	t.Helper()
	var out []Matcher
	for _, s := range ss {
		m, err := ParseMatcher(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestSilencedIncidentIsSentAfterExpiry: a change that a silence matches
// is not sent (acknowledged, counted), later changes replace the held one,
// and when the clock passes the silence's end the latest change of the
// still-firing incident is sent, once; other incidents are not held up.
func TestSilencedIncidentIsSentAfterExpiry(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Second)
	e := newEnv(t, t0)
	st, d, _ := e.start()
	sil, err := st.Add(context.Background(), Silence{
		Matchers:  mustMatchers(t, `rule=~nomad\.windows\..*`, "node=vm-1"),
		EndsAt:    t0.Add(2 * time.Hour),
		CreatedBy: "alice", Comment: "maintenance",
	}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := sinktest.Lifecycle("inc-a", "vm-1", 3) // silenced
	b := sinktest.Lifecycle("inc-b", "vm-2", 1) // other node: not silenced
	sinktest.Publish(t, e.js, a[0])
	sinktest.Publish(t, e.js, b[0])
	sinktest.Publish(t, e.js, a[1])
	sinktest.WaitFor(t, "b delivered and two changes of a silenced", 10*time.Second, func() bool {
		return len(e.sink.of("inc-b")) == 1 && d.Stats().Silenced == 2
	})
	// Half way through the silence nothing of a is sent.
	e.clock.Add(time.Hour)
	sinktest.Publish(t, e.js, a[2])
	sinktest.WaitFor(t, "the third change of a silenced", 10*time.Second, func() bool { return d.Stats().Silenced == 3 })
	time.Sleep(100 * time.Millisecond) // a few silence checks
	if got := e.sink.of("inc-a"); len(got) != 0 {
		t.Fatalf("silenced incident sent: %+v", got)
	}
	// The silence ends: the latest change of a is sent, as firing (the sink never saw it).
	e.clock.Set(sil.EndsAt)
	sinktest.WaitFor(t, "a sent after the silence", 10*time.Second, func() bool { return len(e.sink.of("inc-a")) == 1 })
	got := e.sink.of("inc-a")[0]
	if got.Seq != 3 || got.Status != correlate.StatusFiring {
		t.Errorf("sent change seq %d status %s, want the latest (seq 3) presented as firing", got.Seq, got.Status)
	}
	// Later changes flow as usual; nothing is sent twice.
	sinktest.Publish(t, e.js, a[3])
	sinktest.WaitFor(t, "the next change of a", 10*time.Second, func() bool { return len(e.sink.of("inc-a")) == 2 })
	time.Sleep(100 * time.Millisecond)
	if n := len(e.sink.of("inc-a")); n != 2 {
		t.Errorf("a delivered %d times, want 2", n)
	}
	if s := d.Stats(); s.Silenced != 3 || s.Unsilenced != 1 {
		t.Errorf("stats silenced %d unsilenced %d, want 3 and 1", s.Silenced, s.Unsilenced)
	}
	held, err := st.HeldFor(context.Background(), "pager")
	if err != nil || len(held) != 0 {
		t.Errorf("held after release: %v %v", held, err)
	}
}

// TestExpiredSilenceAcrossRestart: the held change survives a restart of
// the dispatcher, and `expire` sends it at once (no clock step).
func TestExpiredSilenceAcrossRestart(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Second)
	e := newEnv(t, t0)
	st, d, stop := e.start()
	sil, err := st.Add(context.Background(), Silence{Matchers: mustMatchers(t, "id=inc-a"), EndsAt: t0.Add(time.Hour)}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := sinktest.Lifecycle("inc-a", "vm-1", 1)
	sinktest.Publish(t, e.js, a[0])
	sinktest.WaitFor(t, "a silenced", 10*time.Second, func() bool { return d.Stats().Silenced == 1 })
	stop()

	st2, d2, _ := e.start()
	time.Sleep(100 * time.Millisecond)
	if n := len(e.sink.of("inc-a")); n != 0 {
		t.Fatalf("silenced change sent after a restart: %d", n)
	}
	if _, err := st2.Expire(context.Background(), sil.ID, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	// The dispatcher counts a held change as unsilenced once the sink took
	// it, so the sink has it when the count shows it (not the other way).
	sinktest.WaitFor(t, "a sent after expire", 10*time.Second, func() bool { return d2.Stats().Unsilenced >= 1 })
	if n := len(e.sink.of("inc-a")); n != 1 {
		t.Errorf("inc-a sent %d times after expire, want 1", n)
	}
	if s := d2.Stats(); s.Unsilenced != 1 {
		t.Errorf("unsilenced %d, want 1", s.Unsilenced)
	}
	if _, err := st2.Expire(context.Background(), sil.ID, e.clock.Now()); err == nil || !strings.Contains(err.Error(), "already expired") {
		t.Errorf("second expire: %v", err)
	}
	list, err := st2.List(context.Background())
	if err != nil || len(list) != 1 || list[0].State(e.clock.Now()) != StateExpired {
		t.Errorf("list after expire: %+v %v", list, err)
	}
}

// TestResolvedWhileSilencedIsNotSent: an incident that fired and resolved
// within the silence is never sent; one whose firing was sent before the
// silence gets its resolution after it.
func TestResolvedWhileSilencedIsNotSent(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Second)
	e := newEnv(t, t0)
	a := sinktest.Lifecycle("inc-a", "vm-1", 0) // firing, resolved: both silenced
	b := sinktest.Lifecycle("inc-b", "vm-1", 0) // firing sent, resolved silenced
	st, d, _ := e.start()
	sinktest.Publish(t, e.js, b[0])
	sinktest.WaitFor(t, "b firing sent", 10*time.Second, func() bool { return len(e.sink.of("inc-b")) == 1 })
	sil, err := st.Add(context.Background(), Silence{Matchers: mustMatchers(t, "node=vm-1"), EndsAt: t0.Add(time.Hour)}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []correlate.Incident{a[0], a[1], b[1]} {
		sinktest.Publish(t, e.js, in)
	}
	sinktest.WaitFor(t, "three changes silenced", 10*time.Second, func() bool { return d.Stats().Silenced == 3 })
	e.clock.Set(sil.EndsAt.Add(time.Second))
	sinktest.WaitFor(t, "b resolved sent", 10*time.Second, func() bool { return len(e.sink.of("inc-b")) == 2 })
	if got := e.sink.of("inc-b")[1]; got.Status != correlate.StatusResolved {
		t.Errorf("b's second delivery is %s, want resolved", got.Status)
	}
	time.Sleep(100 * time.Millisecond)
	if got := e.sink.of("inc-a"); len(got) != 0 {
		t.Errorf("incident resolved within its silence was sent: %+v", got)
	}
}

func TestMatcherStringRoundTrip(t *testing.T) {
	for _, s := range []string{"rule=nomad.task.crash_loop", `rule=~nomad\.task\..+`, `comment="two words"`, `team!="a \"quoted\" b"`, "missing="} {
		m, err := ParseMatcher(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if m.String() != s {
			t.Errorf("String() = %s, want %s", m.String(), s)
		}
		back, err := ParseMatcher(m.String())
		if err != nil || back.Value != m.Value || back.Op != m.Op || back.Name != m.Name {
			t.Errorf("%s: parsed back as %+v (%v)", s, back, err)
		}
	}
	for s, want := range map[string]bool{"rule=nomad.task.*": true, "node!=vm?": true, "rule=~nomad.*": false, "node=vm": false} {
		if m, _ := ParseMatcher(s); m.LooksLikeGlob() != want {
			t.Errorf("%s: LooksLikeGlob = %v, want %v", s, !want, want)
		}
	}
}
