package nomadevents

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// The recording of testdata/seed, from the real Nomad 2.0.5 dev agent
// (node w14probe, unique.hostname vm): a service job of 3 raw_exec
// allocations (sleep) placed and running at index 22, then a batch job
// of 2 that completed at 31 and 32. nodes.json is GET /v1/nodes with the
// kernel filter, allocations.json GET /v1/allocations?task_states=false
// with the node filter, both at index 32; events.ndjson the event stream
// from index 0. Its node ran Linux: the frames are made Windows as in
// windowsLines, the API's answers need nothing (the filter is the
// server's).
const (
	seedDir   = "testdata/seed"
	seedNode0 = "c3bd0b0b-6eda-dfd7-ebd5-eecff4ee3f96"
	seedIndex = 32
)

func seedFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(seedDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seedLines(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, l := range readLinesOf(t, filepath.Join(seedDir, "events.ndjson")) {
		out = append(out, bytes.ReplaceAll(l, []byte(`"kernel.name":"linux"`), []byte(`"kernel.name":"windows"`)))
	}
	return out
}

// countEvents returns the running-allocation events of evs as
// "node running prev seeded alloc".
func countEvents(evs []ingest.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == KindRunningAllocations {
			out = append(out, fmt.Sprintf("%s %v %v %v %s", e.Node, e.Fields["running"], e.Fields["prev_running"], e.Fields["seeded"], e.Field("alloc_id")))
		}
	}
	return out
}

// seedFake is a fake agent whose buffer lost the frames up to 23 (the
// sleepers' placement and start), with a later frame that stops one of
// them (40) and one that repeats another as running (41).
func seedFake(t *testing.T, api map[string]fakeAPI) (*fakeNomad, string) {
	t.Helper()
	lines := seedLines(t)
	lines = append(lines,
		[]byte(statusFrame(40, "47bd7606-4817-91cf-98fc-b15daed590a2", seedNode0, "complete")),
		[]byte(statusFrame(41, "66ab2cb9-a6ae-9814-72ea-dfa193558960", seedNode0, "running")))
	fake := newFakeNomad(t, lines)
	fake.minIndex = 23
	fake.api = api
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

// TestSeedRecorded: the source starts while 3 allocations run on a Windows
// node whose start the agent's event buffer no longer holds. Its first
// count event says 3 (read from the API, before any frame); the stream's
// older copies of the allocations (the batch job that completed) change
// nothing, the later stop counts 2 and the repeated running copy nothing.
func TestSeedRecorded(t *testing.T) {
	fake, addr := seedFake(t, map[string]fakeAPI{
		"/v1/nodes":       {body: seedFile(t, "nodes.json"), index: seedIndex},
		"/v1/allocations": {body: seedFile(t, "allocations.json"), index: seedIndex},
	})
	var logs syncBuf
	r := startSource(t, Config{Address: addr, MinBackoff: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
	waitFor(t, "the stream's frames", 10*time.Second, func() bool { return r.src.Stats().LastIndex >= 41 })
	_ = r.stop(t)
	got := countEvents(r.got())
	want := []string{
		"w14probe 3 <nil> true ",
		"w14probe 2 3 <nil> 47bd7606-4817-91cf-98fc-b15daed590a2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("count events\n%q\nwant\n%q", got, want)
	}
	evs := r.got()
	first := slices.IndexFunc(evs, func(e ingest.Event) bool { return e.Kind == KindRunningAllocations })
	if first != 0 {
		t.Errorf("the seeded count is event %d, want the first", first)
	}
	if e := evs[first]; e.ID != fmt.Sprintf("nomadev:%d:Seed:allocations:running:%s", seedIndex, seedNode0) ||
		e.NodeID != seedNode0 || e.Fields["kernel"] != "windows" || e.Time.IsZero() {
		t.Errorf("seeded event %+v", e)
	}
	checkNoDuplicates(t, evs)
	if n := r.src.Stats().Seeds; n != 1 {
		t.Errorf("%d seedings, want 1", n)
	}
	fake.mu.Lock()
	qs := slices.Clone(fake.apiQueries)
	fake.mu.Unlock()
	if len(qs) != 2 {
		t.Fatalf("%d API requests, want 2 (nodes, allocations): %v", len(qs), qs)
	}
	if f := qs[0].Get("filter"); f != `Attributes["kernel.name"] == "windows"` {
		t.Errorf("node filter %q", f)
	}
	if f := qs[1].Get("filter"); f != `NodeID == "`+seedNode0+`"` || qs[1].Get("task_states") != "false" || qs[1].Get("namespace") != "*" {
		t.Errorf("allocation query %v", qs[1])
	}
	if !strings.Contains(logs.String(), "windows_nodes=1 allocations=5 counts_changed=1") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// TestSeedRefused: an agent that refuses the API requests (the token lacks
// node:read) is logged once, not retried; the stream goes on, its counts
// follow the frames only, and here the running allocations are missed
// (what the seeding is for).
func TestSeedRefused(t *testing.T) {
	for _, path := range []string{"/v1/nodes", "/v1/allocations"} {
		t.Run(strings.TrimPrefix(path, "/v1/"), func(t *testing.T) {
			api := map[string]fakeAPI{
				"/v1/nodes":       {body: seedFile(t, "nodes.json"), index: seedIndex},
				"/v1/allocations": {body: seedFile(t, "allocations.json"), index: seedIndex},
			}
			api[path] = fakeAPI{status: 403}
			_, addr := seedFake(t, api)
			var logs syncBuf
			r := startSource(t, Config{Address: addr, MinBackoff: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
			waitFor(t, "the stream's frames", 10*time.Second, func() bool { return r.src.Stats().LastIndex >= 41 })
			time.Sleep(1100 * time.Millisecond) // a retry tick
			_ = r.stop(t)
			// The stop at 40 of an allocation the stream never saw running
			// is no change; the repeat at 41 counts 1 where 2 run.
			want := []string{"w14probe 1 0 <nil> 66ab2cb9-a6ae-9814-72ea-dfa193558960"}
			if got := countEvents(r.got()); !slices.Equal(got, want) {
				t.Errorf("count events without the API: %q, want %q", got, want)
			}
			if n := strings.Count(logs.String(), "the agent refused the running allocations"); n != 1 {
				t.Errorf("%d refusal warnings, want 1:\n%s", n, logs.String())
			}
			if !strings.Contains(logs.String(), "status=403") {
				t.Errorf("log:\n%s", logs.String())
			}
			if n := r.src.Stats().Seeds; n != 0 {
				t.Errorf("%d seedings", n)
			}
		})
	}
}

// TestSeedRunning: the decoder's side. The state's allocations on the
// Windows node are replaced by the agent's list: one it no longer lists is
// forgotten (a later frame about it changes nothing), one listed running
// that the stream never told is counted once however often the stream
// repeats it; counts that did not change are not told again; a Linux node
// is neither asked about nor told.
func TestSeedRunning(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	var got []string
	emit := func(e ingest.Event) {
		if e.Kind == KindRunningAllocations {
			got = append(got, fmt.Sprintf("%s %v %v %v %s", e.Node, e.Fields["running"], e.Fields["prev_running"], e.Fields["seeded"], e.Field("alloc_id")))
		}
	}
	for _, f := range []string{
		nodeFrame(1, "n-win", "win-1", "windows"),
		nodeFrame(2, "n-lin", "linux-1", "linux"),
		statusFrame(3, "a1", "n-win", "running"),
		statusFrame(4, "a9", "n-win", "running"),
		statusFrame(5, "l1", "n-lin", "running"),
	} {
		if err := d.Frame([]byte(f), emit); err != nil {
			t.Fatal(err)
		}
	}
	got = nil
	// Same count (a1, a2 instead of a1, a9): nothing told; a new Windows
	// node with one running: told without prev_running.
	d.seedRunning(10, []seedNode{{ID: "n-win", Name: "win-1"}, {ID: "n-win2", Name: "win-2"}}, []seedAlloc{
		{ID: "a1", NodeID: "n-win", Client: "running", Desired: "run", Modify: 3},
		{ID: "a2", NodeID: "n-win", Client: "running", Desired: "run", Modify: 8},
		{ID: "a3", NodeID: "n-win", Client: "complete", Desired: "run", Modify: 9},
		{ID: "b1", NodeID: "n-win2", Client: "running", Desired: "run", Modify: 7},
		{ID: "x1", NodeID: "n-lin", Client: "running", Desired: "run", Modify: 7}, // not asked for
	}, emit)
	if want := []string{"win-2 1 <nil> true "}; !slices.Equal(got, want) {
		t.Fatalf("seed: %q, want %q", got, want)
	}
	if d.running["n-win"] != 2 || d.running["n-lin"] != 1 || d.allocs["a9"] != nil || d.allocs["x1"] != nil {
		t.Fatalf("state: running %v, a9 %v", d.running, d.allocs["a9"])
	}
	got = nil
	for _, f := range []string{
		statusFrame(8, "a2", "n-win", "running"),   // an older copy: nothing
		statusFrame(11, "a2", "n-win", "running"),  // repeated: nothing
		statusFrame(12, "a9", "n-win", "complete"), // forgotten, not running
		statusFrame(13, "a3", "n-win", "complete"), // not running before
		statusFrame(14, "a1", "n-win", "complete"),
		statusFrame(15, "a4", "n-win", "running"),
	} {
		if err := d.Frame([]byte(f), emit); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"win-1 1 2 <nil> a1", "win-1 2 1 <nil> a4"}
	if !slices.Equal(got, want) {
		t.Errorf("after the seed: %q, want %q", got, want)
	}
	// Seeded again with what the stream says: nothing to tell. The node
	// purged since (not listed) falls to 0.
	got = nil
	d.seedRunning(20, []seedNode{{ID: "n-win", Name: "win-1"}}, []seedAlloc{
		{ID: "a2", NodeID: "n-win", Client: "running", Desired: "run", Modify: 11},
		{ID: "a4", NodeID: "n-win", Client: "running", Desired: "run", Modify: 15},
	}, emit)
	if want := []string{"win-2 0 1 true "}; !slices.Equal(got, want) {
		t.Errorf("second seed: %q, want %q", got, want)
	}
	// The state survives a checkpoint.
	st, err := d.State()
	if err != nil {
		t.Fatal(err)
	}
	d2 := NewDecoder(DecoderConfig{})
	if err := d2.Restore(st); err != nil {
		t.Fatal(err)
	}
	if d2.running["n-win"] != 2 || !d2.windows("n-win") {
		t.Errorf("restored: %v", d2.running)
	}
}

// TestSeedAfterIndexReset: a checkpoint from a server whose index went
// back (its state counted 5 allocations on the node, from another life of
// the cluster) is corrected at the reset: the seed at the start already
// brings it to 3, the seed at the reset finds nothing more to tell, and
// the stream's frames count nothing twice.
func TestSeedAfterIndexReset(t *testing.T) {
	_, addr := seedFake(t, map[string]fakeAPI{
		"/v1/nodes":       {body: seedFile(t, "nodes.json"), index: seedIndex},
		"/v1/allocations": {body: seedFile(t, "allocations.json"), index: seedIndex},
	})
	// The old life: 5 allocations running on the node, at index 500.
	d := NewDecoder(DecoderConfig{})
	_ = d.Frame([]byte(nodeFrame(400, seedNode0, "w14probe", "windows")), func(ingest.Event) {})
	for i := range 5 {
		_ = d.Frame([]byte(statusFrame(401+i, fmt.Sprint("old-", i), seedNode0, "running")), func(ingest.Event) {})
	}
	st, err := d.State()
	if err != nil {
		t.Fatal(err)
	}
	cps, err := ingest.OpenCheckpoints(filepath.Join(t.TempDir(), "cp.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cps.Set("nomadevents:"+addr, checkpoint{Index: 500, State: st}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	r := startSource(t, Config{Address: addr, Checkpoints: cps, MinBackoff: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
	waitFor(t, "the new server's frames", 10*time.Second, func() bool {
		st := r.src.Stats()
		return st.Resets == 1 && st.LastIndex >= 41 && st.LastIndex < 400
	})
	_ = r.stop(t)
	got := countEvents(r.got())
	want := []string{
		"w14probe 3 5 true ",
		"w14probe 2 3 <nil> 47bd7606-4817-91cf-98fc-b15daed590a2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("count events\n%q\nwant\n%q", got, want)
	}
	if st := r.src.Stats(); st.Resets != 1 || st.Seeds != 2 {
		t.Errorf("resets %d seeds %d, want 1 and 2", st.Resets, st.Seeds)
	}
	if !strings.Contains(logs.String(), `why="index reset"`) {
		t.Errorf("no seeding at the reset:\n%s", logs.String())
	}
}
