package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

// startJetStream runs a real embedded NATS server with the klaxon streams.
func startJetStream(t *testing.T) jetstream.JetStream {
	_, js := sinktest.StartJetStream(t)
	return js
}

// scripted is a sink whose answers are scripted per attempt.
type scripted struct {
	mu      sync.Mutex
	answers []error // per attempt; nil = success; beyond the list: success
	perm    bool
	hang    bool
	got     []string
}

func (s *scripted) Name() string { return "scripted" }
func (s *scripted) Close() error { return nil }
func (s *scripted) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	s.mu.Lock()
	n := len(s.got)
	s.got = append(s.got, in.ID)
	hang := s.hang && n == 0
	var err error
	if n < len(s.answers) {
		err = s.answers[n]
	}
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return true, ctx.Err()
	}
	return !s.perm, err
}

func (s *scripted) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func publishIncident(t *testing.T, js jetstream.JetStream, id string) {
	t.Helper()
	b, _ := json.Marshal(correlate.Incident{ID: id, Rule: "r", Status: "firing", Severity: "warning", Seq: 1})
	if _, err := js.Publish(context.Background(), "klaxon.incidents.warning.r", b); err != nil {
		t.Fatal(err)
	}
}

func dlqCount(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), "KLAXON_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestDispatcher(t *testing.T) {
	errBoom := errors.New("HTTP 500")
	tests := []struct {
		name      string
		sink      *scripted
		attempts  int
		delivered uint64
		dead      uint64
	}{
		{"delivered first time", &scripted{}, 1, 1, 0},
		{"retried after two 500s", &scripted{answers: []error{errBoom, errBoom}}, 3, 1, 0},
		{"dead-lettered after the last attempt", &scripted{answers: []error{errBoom, errBoom, errBoom, errBoom}}, 3, 0, 1},
		{"permanent failure goes straight to dead letters", &scripted{answers: []error{errBoom}, perm: true}, 1, 0, 1},
		{"a hanging sink is cancelled and retried", &scripted{hang: true}, 2, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := startJetStream(t)
			publishIncident(t, js, "inc-1")
			d := NewDispatcher(js, tc.sink, DispatcherConfig{
				Stream: "KLAXON_INCIDENTS", MaxAttempts: 3, SendTimeout: 300 * time.Millisecond,
				Backoff: func(int) time.Duration { return 10 * time.Millisecond },
			}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = d.Run(ctx); close(done) }()
			deadline := time.Now().Add(15 * time.Second)
			for {
				st := d.Stats()
				if st.Delivered+st.DeadLettered > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("nothing delivered or dead-lettered; attempts %d", tc.sink.attempts())
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
			st := d.Stats()
			if tc.sink.attempts() != tc.attempts {
				t.Errorf("attempts %d, want %d", tc.sink.attempts(), tc.attempts)
			}
			if st.Delivered != tc.delivered || st.DeadLettered != tc.dead {
				t.Errorf("stats %+v, want delivered %d dead %d", st, tc.delivered, tc.dead)
			}
			if got := dlqCount(t, js); got != tc.dead {
				t.Errorf("DLQ holds %d, want %d", got, tc.dead)
			}
		})
	}
}

func TestDispatcherResumesDurably(t *testing.T) {
	js := startJetStream(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &scripted{}
	run := func(want int) {
		d := NewDispatcher(js, s, DispatcherConfig{Stream: "KLAXON_INCIDENTS"}, log)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = d.Run(ctx); close(done) }()
		deadline := time.Now().Add(10 * time.Second)
		for s.attempts() < want {
			if time.Now().After(deadline) {
				t.Fatalf("got %d deliveries, want %d", s.attempts(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
	}
	publishIncident(t, js, "a")
	publishIncident(t, js, "b")
	run(2)
	publishIncident(t, js, "c")
	run(3)
	// Different incidents are delivered in parallel: compare as a set.
	got := append([]string(nil), s.got...)
	sort.Strings(got)
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("deliveries %v, want a b c once each", s.got)
	}
}

// TestDispatcherFetchBacksOff: while fetching fails (here the connection
// is closed, so every fetch fails at once; deleting the consumer made only
// a fetch in flight fail, later ones time out quietly), the
// dispatcher waits a growing, jittered delay between fetches, counts each
// failure and says so once at WARN, not once per fetch.
func TestDispatcherFetchBacksOff(t *testing.T) {
	js := startJetStream(t)
	var logBuf testkit.SyncBuffer
	d := NewDispatcher(js, &scripted{}, DispatcherConfig{Stream: "KLAXON_INCIDENTS", SendTimeout: time.Second},
		slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// The dispatcher is in its fetch loop once a pull request of it waits
	// on the server: closing the connection before (while it restores its
	// state, slower under Wine) would end Run before any fetch.
	sinktest.WaitFor(t, "a fetch waiting on the server", 15*time.Second, func() bool {
		c, err := js.Consumer(context.Background(), "KLAXON_INCIDENTS", ConsumerName("scripted"))
		return err == nil && c.CachedInfo().NumWaiting > 0
	})
	js.Conn().Close()
	sinktest.WaitFor(t, "a failed fetch", 15*time.Second, func() bool { return d.Stats().FetchErrors >= 1 })
	first := time.Now()
	sinktest.WaitFor(t, "four failed fetches", 15*time.Second, func() bool { return d.Stats().FetchErrors >= 4 })
	// The delays after failures 1..3 are at least 50+100+200 ms (equal
	// jitter halves them at most); without a back-off they take microseconds.
	if took := time.Since(first); took < 350*time.Millisecond {
		t.Errorf("failures 1 to 4 within %v: fetches are not backing off", took)
	}
	if n := strings.Count(logBuf.String(), `level=WARN msg="fetch failed`); n != 1 {
		t.Errorf("%d WARN lines for one failure episode, want 1:\n%s", n, logBuf.String())
	}
}

// shiftedClock is the wall clock's timers with its Now moved by d.
type shiftedClock struct {
	RealClock
	d time.Duration
}

func (c shiftedClock) Now() time.Time { return time.Now().Add(c.d) }

// The dispatcher's own timing is on DispatcherConfig.Clock, not on the
// silences' clock (Now): with Now frozen in the past, a retried change is
// still retried and delivered, and the dead letter of another is stamped
// with Clock's time.
func TestDispatcherTakesItsClock(t *testing.T) {
	js := startJetStream(t)
	errBoom := errors.New("HTTP 500")
	frozen := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	shift := 10 * 365 * 24 * time.Hour
	cfg := DispatcherConfig{
		Stream: "KLAXON_INCIDENTS", MaxAttempts: 3, SendTimeout: time.Second,
		Backoff: func(int) time.Duration { return 20 * time.Millisecond },
		Now:     func() time.Time { return frozen },
		Clock:   shiftedClock{d: shift},
	}
	retried := &scripted{answers: []error{errBoom, errBoom}}
	publishIncident(t, js, "inc-1")
	d := NewDispatcher(js, retried, cfg, quietLog())
	cancel := runDispatcher(t, d)
	sinktest.WaitFor(t, "the retried change delivered", 15*time.Second, func() bool { return d.Stats().Delivered == 1 })
	cancel()
	if n := retried.attempts(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}

	failing := &scripted{answers: []error{errBoom}, perm: true}
	failing2 := &namedSink{Sink: failing, name: "failing"}
	d = NewDispatcher(js, failing2, cfg, quietLog())
	cancel = runDispatcher(t, d)
	sinktest.WaitFor(t, "the dead letter", 15*time.Second, func() bool { return d.Stats().DeadLettered == 1 })
	cancel()
	dls, err := ListDLQ(context.Background(), js, "failing", 0)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	if want := time.Now().Add(shift); dls[0].Time.Before(want.Add(-time.Minute)) || dls[0].Time.After(want) {
		t.Errorf("dead letter failed at %s, want Clock's time about %s", dls[0].Time, want)
	}
}

// namedSink renames a sink (a consumer of its own).
type namedSink struct {
	Sink
	name string
}

func (s *namedSink) Name() string { return s.name }
