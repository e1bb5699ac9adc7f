package winevt

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/winevt/evtxwriter"
)

type collector struct {
	mu     sync.Mutex
	evs    []ingest.Event
	cancel context.CancelFunc
	done   chan error
}

func startSource(t *testing.T, cfg Config) *collector {
	t.Helper()
	cfg.PollInterval = 20 * time.Millisecond
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{cancel: cancel, done: make(chan error, 1)}
	out := make(chan ingest.Event)
	go func() { c.done <- s.Run(ctx, out) }()
	go func() {
		for {
			select {
			case e := <-out:
				if e.Commit != nil {
					e.Commit()
				}
				c.mu.Lock()
				c.evs = append(c.evs, e)
				c.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) stop() {
	c.cancel()
	<-c.done
	c.done <- nil // idempotent
}

func (c *collector) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.evs {
		out = append(out, e.Field("event_record_id"))
	}
	return out
}

func waitIDs(t *testing.T, c *collector, want int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ids := c.ids(); len(ids) >= want {
			return ids
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out: got %v, want %d records", c.ids(), want)
	return nil
}

func srvRecord(i int) evtxwriter.Record {
	return evtxwriter.Record{Time: seedTime.Add(time.Duration(i) * time.Second), Provider: "Srv", EventID: 2020, Qualifiers: 49152,
		Level: 2, Channel: "System", Computer: "win-client-7", Keywords: 0x80000000000000,
		Data: []evtxwriter.NamedData{{Value: fmt.Sprintf("Paged %d", i)}}}
}

func seq(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

func sameIDs(t *testing.T, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records %v\nwant %v", got, want)
	}
}

// TestSourceFollowsGrowingFile: records appended to the last chunk, then a
// new chunk; a restart resumes from the checkpoint without re-sending.
func TestSourceFollowsGrowingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "System.evtx")
	cps, err := ingest.OpenCheckpoints(filepath.Join(dir, "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	w := evtxwriter.New()
	for i := 1; i <= 3; i++ {
		w.MustAdd(srvRecord(i))
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Paths: []string{filepath.Join(dir, "*.evtx")}, ReadFrom: ingest.ReadFromBeginning, Checkpoints: cps}
	c := startSource(t, cfg)
	sameIDs(t, waitIDs(t, c, 3), seq(1, 3))

	// More records in the same chunk.
	for i := 4; i <= 6; i++ {
		w.MustAdd(srvRecord(i))
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	sameIDs(t, waitIDs(t, c, 6), seq(1, 6))

	// A new chunk.
	w.NewChunk()
	for i := 7; i <= 9; i++ {
		w.MustAdd(srvRecord(i))
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if w.Chunks() != 2 {
		t.Fatalf("%d chunks", w.Chunks())
	}
	sameIDs(t, waitIDs(t, c, 9), seq(1, 9))
	c.stop()
	var cp checkpoint
	abs, _ := filepath.Abs(path)
	if ok, err := cps.Get("winevt:"+abs, &cp); !ok || err != nil || cp.RecordID != 9 {
		t.Fatalf("checkpoint %+v %v %v", cp, ok, err)
	}

	// Restart: nothing is re-sent; records written while stopped arrive.
	for i := 10; i <= 11; i++ {
		w.MustAdd(srvRecord(i))
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	cps2, err := ingest.OpenCheckpoints(filepath.Join(dir, "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Checkpoints = cps2
	c2 := startSource(t, cfg)
	sameIDs(t, waitIDs(t, c2, 2), seq(10, 11))
	// Many records at once, filling several chunks.
	for i := 12; i <= 700; i++ {
		w.MustAdd(srvRecord(i))
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	ids := waitIDs(t, c2, 691)
	time.Sleep(100 * time.Millisecond)
	sameIDs(t, c2.ids(), seq(10, 700))
	_ = ids
	if w.Chunks() < 3 {
		t.Fatalf("expected several chunks, got %d", w.Chunks())
	}
	c2.mu.Lock()
	e := c2.evs[0]
	c2.mu.Unlock()
	if e.Kind != "Srv/2020" || e.Node != "win-client-7" || e.ID != "winevt:win-client-7:System:10" {
		t.Errorf("%+v", e)
	}
}

func TestSourceReadFromEnd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "System.evtx")
	w := evtxwriter.New()
	for i := 1; i <= 5; i++ {
		w.MustAdd(srvRecord(i))
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	c := startSource(t, Config{Paths: []string{path}})
	time.Sleep(100 * time.Millisecond)
	w.MustAdd(srvRecord(6))
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	sameIDs(t, waitIDs(t, c, 1), seq(6, 6))
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{{}, {Paths: []string{"["}}, {Paths: []string{"x"}, ReadFrom: "middle"}, {Paths: []string{""}}} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	if _, err := NewLive(LiveConfig{}, nil); err == nil && !isWindows {
		t.Error("NewLive: no error off Windows")
	}
}
