package rulesync

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/rules"
)

const gcRule = `rules:
  - id: t.gc
    title: gc
    severity: warning
    match:
      skipped: source == "nomad.log" && msg contains "garbage collection skipped"
    correlate:
      by: [node]
      window: 10m
      when: count("skipped") >= 1
`

const restartRule = `rules:
  - id: t.restart
    title: restart
    severity: warning
    match:
      restarting: source == "nomad.log" && msg == "restarting task"
    correlate:
      by: [node]
      window: 10m
      when: count("restarting") >= 1
`

var (
	gcEvent      = ingest.Event{Source: "nomad.log", Node: "n1", Kind: "client.gc", Msg: "garbage collection skipped because no terminal allocations"}
	restartEvent = ingest.Event{Source: "nomad.log", Node: "n1", Kind: "client.alloc_runner.task_runner", Msg: "restarting task"}
	noiseEvent   = ingest.Event{Source: "nomad.log", Node: "n1", Kind: "http", Msg: "request complete"}
)

func TestFilterKeep(t *testing.T) {
	f := NewFilter(nil)
	for _, ev := range []ingest.Event{gcEvent, noiseEvent} {
		if !f.Keep(&ev) {
			t.Errorf("without rules %q was dropped; everything is kept until rules are known", ev.Msg)
		}
	}
	set, err := rules.LoadDir("../../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	f.SetRules(set)
	cases := []struct {
		ev   ingest.Event
		keep bool
	}{
		{gcEvent, true},
		{restartEvent, true},
		{noiseEvent, false},
		{ingest.Event{Source: "nomad.event", Kind: "Node.NodeStreamEvent", Node: "n1", Fields: map[string]any{"status": "down", "prev_status": "ready"}}, true},
		{ingest.Event{Source: "nomad.log", Kind: "client", Msg: "updated allocations", Fields: map[string]any{"index": "12"}}, false},
	}
	for _, c := range cases {
		if got := f.Keep(&c.ev); got != c.keep {
			t.Errorf("Keep(%s %q) = %v, want %v", c.ev.Source, c.ev.Msg, got, c.keep)
		}
	}
	if kept, dropped := f.Counts(); kept != 5 || dropped != 2 {
		t.Errorf("counts kept %d dropped %d, want 5 and 2", kept, dropped)
	}
}

// TestDistribution: the rules the correlator stores reach a watching
// filter; an edit reaches it again; a version that does not compile
// leaves the rules in use.
func TestDistribution(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.OpenEmbedded(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close(context.Background()) }()
	kv, err := b.JS.KeyValue(ctx, natslayout.RulesBucket)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "r.yaml")
	load := func(content string) *rules.Set {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := rules.LoadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f := NewFilter(nil)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Watch(wctx, kv) }()

	first := load(gcRule)
	if err := Publish(ctx, kv, first); err != nil {
		t.Fatal(err)
	}
	waitHash(t, f, first.Hash())
	if f.Keep(&restartEvent) || !f.Keep(&gcEvent) {
		t.Error("with the gc rule: want gc kept, restart dropped")
	}
	e1, _ := kv.Get(ctx, natslayout.RulesKey)
	if err := Publish(ctx, kv, first); err != nil {
		t.Fatal(err)
	}
	if e2, _ := kv.Get(ctx, natslayout.RulesKey); e2.Revision() != e1.Revision() {
		t.Errorf("the same rules stored again (revision %d → %d)", e1.Revision(), e2.Revision())
	}

	second := load(restartRule)
	if err := Publish(ctx, kv, second); err != nil {
		t.Fatal(err)
	}
	waitHash(t, f, second.Hash())
	if !f.Keep(&restartEvent) || f.Keep(&gcEvent) {
		t.Error("after the edit: want restart kept, gc dropped")
	}

	// Versions that do not compile or read leave the rules in use.
	for _, bad := range []string{`{"hash":"x","files":[{"name":"bad.yaml","data":"cnVsZXM6IFt7aWQ6IH1d"}]}`, `not json`} {
		f.apply([]byte(bad), 0)
		if f.Hash() != second.Hash() || !f.Keep(&restartEvent) {
			t.Errorf("after %q the filter has rules %q, want the edit's", bad, f.Hash())
		}
		if _, err := kv.Put(ctx, natslayout.RulesKey, []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	third := load(gcRule)
	if err := Publish(ctx, kv, third); err != nil {
		t.Fatal(err)
	}
	waitHash(t, f, third.Hash())
	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Watch returned %v", err)
	}
}

func waitHash(t *testing.T, f *Filter, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.Hash() != want {
		if time.Now().After(deadline) {
			t.Fatalf("filter has rules %q, want %q", f.Hash(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
