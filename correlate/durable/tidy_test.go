package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/natstest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
)

// TestAckNotHeldByTidying: the events a checkpoint covers are acked once it
// is stored, not after the clean-up that follows it (on a busy cluster a
// takeover's purges took minutes, and with every event unacked the
// consumer stopped delivering at MaxAckPending); no checkpoint begins while
// the store is being tidied.
func TestAckNotHeldByTidying(t *testing.T) {
	js, ctx, cancel := startRoleRig(t)
	defer cancel()
	cfg := Config{SnapshotInterval: 20 * time.Millisecond, Lateness: time.Second, LeaseTTL: time.Second}
	r, processed := testRole(t, ctx, js, cfg, time.Now)
	var tidying, tidies atomic.Int32
	release := make(chan struct{})
	r.tidy = func(context.Context) {
		tidies.Add(1)
		tidying.Store(1)
		<-release
		tidying.Store(0)
	}
	publish := func(from, to int) uint64 {
		var last uint64
		for i := from; i < to; i++ {
			b, err := json.Marshal(ingest.Event{ID: fmt.Sprintf("e%d", i), Time: time.Now(), Node: "n1", Source: "nomad.log", Kind: "test", Msg: "a"})
			if err != nil {
				t.Fatal(err)
			}
			ack, err := js.Publish(ctx, natslayout.EventSubject("nomad.log", "n1"), b)
			if err != nil {
				t.Fatal(err)
			}
			last = ack.Sequence
		}
		return last
	}
	ackFloor := func() uint64 {
		cons, err := js.Consumer(ctx, natslayout.EventsStream, wholeStream.consumer)
		if err != nil {
			return 0
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return 0
		}
		return info.AckFloor.Stream
	}
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	// One event at a time: a checkpoint covers all of a batch or none of
	// it (a slow machine could otherwise checkpoint half a batch and block
	// in its tidying before the rest).
	first := publish(0, 1)
	testkit.WaitFor(t, 10*time.Second, "the first checkpoint's event acked while its tidying goes on", func() bool {
		return ackFloor() >= first && tidying.Load() == 1
	})
	// While the store is tidied, events are processed but no checkpoint
	// begins (the store is used by one goroutine at a time).
	second := publish(1, 2)
	testkit.WaitFor(t, 10*time.Second, "the next event processed", func() bool { return processed.Load() >= 2 })
	time.Sleep(10 * cfg.SnapshotInterval) // ticks that must not begin a checkpoint
	if got := ackFloor(); got >= second || tidies.Load() != 1 {
		t.Fatalf("ack floor %d (the second event is %d), %d tidyings: a checkpoint began while the store was tidied", got, second, tidies.Load())
	}
	close(release)
	testkit.WaitFor(t, 10*time.Second, "the second event acked after the tidying", func() bool { return ackFloor() >= second })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPace: the next checkpoint begins no sooner than the last one took
// after it ended (checkpoints take at most half of the time).
func TestPace(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		took, want time.Duration
	}{
		{40 * time.Millisecond, 80 * time.Millisecond},
		{3 * time.Second, 6 * time.Second},
		{0, 0},
	} {
		if got := pace(t0, t0.Add(tc.took)).Sub(t0); got != tc.want {
			t.Errorf("a checkpoint of %v: the next may begin %v after the last began, want %v", tc.took, got, tc.want)
		}
	}
}

// TestBacklogOnTheLiveClock: a backlog an hour old in the stream (a
// correlator started after its sidecars, or restarted after an outage) is
// processed on time, though the correlator's clock ticks many times while
// it reads it: its sources count as seen when the run began, not at their
// events' old times (which made every source look idle at the first tick,
// moved the watermark to the wall clock and made the rest of the backlog
// late: a 1-in-27 failure of TestRuleEditKeepsUnchangedRules).
func TestBacklogOnTheLiveClock(t *testing.T) {
	js, ctx, cancel := startRoleRig(t)
	defer cancel()
	const n = 3000
	old := time.Now().Add(-time.Hour)
	for i := range n {
		node := fmt.Sprintf("n%d", i%3)
		b, err := json.Marshal(ingest.Event{ID: fmt.Sprintf("e%d", i), Time: old.Add(time.Duration(i) * time.Millisecond), Node: node, Source: "nomad.log", Kind: "test", Msg: "a"})
		if err != nil {
			t.Fatal(err)
		}
		js.PublishAsync(natslayout.EventSubject("nomad.log", node), b)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("publishing the backlog timed out")
	}
	cfg := Config{SnapshotInterval: time.Millisecond, Lateness: time.Second, Idle: 5 * time.Second, LeaseTTL: time.Second}
	var ticks atomic.Int32
	now := func() time.Time { ticks.Add(1); return time.Now() }
	r, processed := testRole(t, ctx, js, cfg, now)
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	testkit.WaitFor(t, 20*time.Second, "the backlog processed", func() bool { return processed.Load() >= n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ticks.Load() < 3 {
		t.Fatalf("%d reads of the clock while the backlog was processed; the test needs ticks during it", ticks.Load())
	}
	if late := r.corr.Stats().Late; late != 0 {
		t.Fatalf("%d of the backlog's %d events late", late, n)
	}
}

// TestCheckpointOutcomesInOrder: with checkpoints every millisecond and a
// tidying that ends at once, the end of a tidying and its checkpoint's
// outcome are often ready together; each outcome is taken for its own
// checkpoint (a checkpoint begun after the end of a tidying was taken
// before its outcome used to take that outcome — acking events not yet
// stored — and the next outcome then found none: a nil dereference).
func TestCheckpointOutcomesInOrder(t *testing.T) {
	js, ctx, cancel := startRoleRig(t)
	defer cancel()
	cfg := Config{SnapshotInterval: time.Millisecond, Lateness: time.Second, LeaseTTL: time.Second}
	r, processed := testRole(t, ctx, js, cfg, time.Now)
	var tidies atomic.Int32
	r.tidy = func(context.Context) { tidies.Add(1) }
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	// Events in a steady flow keep the run loop busy, so that outcomes
	// and ends of tidyings wait for it together.
	const n = 50000
	for i := range n {
		b, err := json.Marshal(ingest.Event{ID: fmt.Sprintf("e%d", i), Time: time.Now(), Node: "n1", Source: "nomad.log", Kind: "test", Msg: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishAsync(natslayout.EventSubject("nomad.log", "n1"), b); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			<-js.PublishAsyncComplete()
		}
	}
	testkit.WaitFor(t, 20*time.Second, "every event processed", func() bool { return processed.Load() >= n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if tidies.Load() < 20 {
		t.Fatalf("%d checkpoints tidied; the test needs many", tidies.Load())
	}
}

// startRoleRig starts an embedded JetStream with the streams and the state
// bucket a correlator role uses.
func startRoleRig(t *testing.T) (jetstream.JetStream, context.Context, context.CancelFunc) {
	t.Helper()
	_, js := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	natstest.CreateStreams(t, js, jetstream.StreamConfig{Storage: jetstream.MemoryStorage}, map[string]string{
		natslayout.EventsStream: natslayout.EventsSubjects, natslayout.IncidentsStream: natslayout.IncidentsSubjects})
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: natslayout.StateBucket}); err != nil {
		cancel()
		t.Fatal(err)
	}
	return js, ctx, cancel
}

// testRole makes the whole stream's correlator role with the test rules,
// cfg and the clock now; it counts what the role processes.
func testRole(t *testing.T, ctx context.Context, js jetstream.JetStream, cfg Config, now func() time.Time) (*correlatorRole, *atomic.Uint64) {
	t.Helper()
	set, err := rules.LoadFiles("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := newScopedCorrelator(ctx, js, js, set, cfg, wholeStream, now, quiet, NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	var processed atomic.Uint64
	r.processed = &processed
	return r, &processed
}
