package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// testLog writes to t.Log until the test's cleanups are done.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func newTestLogger(t testing.TB) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openEmbedded opens an embedded bus in dir (a new temp dir when empty),
// closed at cleanup.
func openEmbedded(t testing.TB, cfg Config) *Bus {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	b, err := Open(testContext(t), cfg, newTestLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

func closeBus(t testing.TB, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func testEvent(i int, node string) ingest.Event {
	return ingest.Event{
		ID:     fmt.Sprintf("test:%d", i),
		Time:   time.Date(2025, 1, 2, 3, 4, 5, i, time.UTC),
		Node:   node,
		Source: ingest.SourceNomadLog,
		Kind:   "client.gc",
		Level:  ingest.LevelWarn,
		Msg:    fmt.Sprintf("event %d", i),
		Fields: map[string]any{"i": fmt.Sprint(i)},
	}
}

// publishAll runs a Publisher over evs and waits until all are committed.
func publishAll(t testing.TB, b *Bus, evs []ingest.Event) PublisherStats {
	t.Helper()
	p := b.NewPublisher(newTestLogger(t), PublisherOptions{})
	in := make(chan ingest.Event, len(evs))
	for _, ev := range evs {
		in <- ev
	}
	close(in)
	if err := p.Run(testContext(t), in); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return p.Stats()
}

func streamMsgs(t testing.TB, b *Bus, name string) uint64 {
	t.Helper()
	s, err := b.JS.Stream(testContext(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().State.Msgs
}

// checkLayout asserts the streams and buckets exist with cfg's settings.
func checkLayout(t testing.TB, b *Bus, cfg Config) {
	t.Helper()
	cfg.SetDefaults()
	ctx := testContext(t)
	want := map[string]struct {
		subject string
		maxAge  time.Duration
		maxB    int64
	}{
		natslayout.EventsStream:    {natslayout.EventsSubjects, cfg.EventsMaxAge, cfg.EventsMaxBytes},
		natslayout.IncidentsStream: {natslayout.IncidentsSubjects, cfg.IncidentsMaxAge, -1},
		natslayout.DLQStream:       {natslayout.DLQSubjects, cfg.IncidentsMaxAge, -1},
	}
	for name, w := range want {
		s, err := b.JS.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		c := s.CachedInfo().Config
		if len(c.Subjects) != 1 || c.Subjects[0] != w.subject {
			t.Errorf("%s subjects = %v, want [%s]", name, c.Subjects, w.subject)
		}
		if c.Storage != jetstream.FileStorage {
			t.Errorf("%s storage = %v", name, c.Storage)
		}
		if c.MaxAge != w.maxAge {
			t.Errorf("%s max age = %v, want %v", name, c.MaxAge, w.maxAge)
		}
		if c.MaxBytes != w.maxB {
			t.Errorf("%s max bytes = %v, want %v", name, c.MaxBytes, w.maxB)
		}
		if c.Duplicates != cfg.DuplicateWindow {
			t.Errorf("%s duplicates = %v, want %v", name, c.Duplicates, cfg.DuplicateWindow)
		}
		if c.Discard != jetstream.DiscardOld {
			t.Errorf("%s discard = %v", name, c.Discard)
		}
		if c.Replicas != cfg.Replicas {
			t.Errorf("%s replicas = %v", name, c.Replicas)
		}
	}
	for _, bucket := range []string{natslayout.StateBucket, natslayout.SilencesBucket, natslayout.RulesBucket} {
		kv, err := b.JS.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("bucket %s: %v", bucket, err)
		}
		if _, err := kv.Put(ctx, "probe", []byte("x")); err != nil {
			t.Fatalf("bucket %s put: %v", bucket, err)
		}
		e, err := kv.Get(ctx, "probe")
		if err != nil || string(e.Value()) != "x" {
			t.Fatalf("bucket %s get: %v", bucket, err)
		}
	}
}
