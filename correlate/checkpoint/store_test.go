package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

const bucket = "KLAXON_STATE"

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// env is a real embedded NATS server with JetStream (file store) and the
// state bucket as klaxon creates it.
type env struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	set *rules.Set
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, nc: nc, js: js, kv: kv, set: set}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (e *env) store(t testing.TB, key string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	s, err := New(e.js, e.kv, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func (e *env) correlator() *correlate.Correlator {
	return correlate.New(e.set, correlate.Options{Logger: quiet()})
}

// load is a new process: a store and a correlator restored from the bucket.
func (e *env) load(t testing.TB, key string, opts Options) (*Store, *correlate.Correlator, uint64) {
	t.Helper()
	s := e.store(t, key, opts)
	c := e.correlator()
	seq, err := s.Load(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, seq
}

// lastSeq is the last sequence of the bucket's stream (messages written).
func (e *env) lastSeq(t testing.TB) uint64 {
	t.Helper()
	st, err := e.js.Stream(context.Background(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

// keys returns the bucket's keys under prefix.
func (e *env) keys(t testing.TB, prefix string) []string {
	t.Helper()
	ks, err := e.kv.Keys(context.Background())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range ks {
		if k == prefix || strings.HasPrefix(k, prefix+".") {
			out = append(out, k)
		}
	}
	return out
}

// events: event i of n nodes, in time order; the messages of the test
// rules ("a", "b", "x", "fail") in turn, so that every node has groups of
// three rules, and some fire.
func event(i, nodes int) ingest.Event {
	msgs := []string{"a", "x", "fail", "b"}
	node := i % nodes
	round := i / nodes
	return ingest.Event{
		ID: fmt.Sprintf("e%d", i), Time: t0.Add(time.Duration(i) * 50 * time.Millisecond), Node: fmt.Sprintf("node-%05d", node),
		Source: "nomad.log", Kind: "test", Level: "info", Msg: msgs[(node+round)%len(msgs)],
		Fields: map[string]any{"alloc_id": fmt.Sprintf("alloc-%d-%d", node, round), "detail": strings.Repeat("evidence ", 8)},
	}
}

// feed runs events [from, to) through the correlators, advancing every
// second of event time; it returns the incident changes of the first.
func feed(from, to, nodes int, cs ...*correlate.Correlator) []correlate.Incident {
	var out []correlate.Incident
	for k, c := range cs {
		emit := func(in correlate.Incident) {
			if k == 0 {
				out = append(out, in)
			}
		}
		for i := from; i < to; i++ {
			ev := event(i, nodes)
			if i%20 == 0 {
				c.Advance(ev.Time, emit)
			}
			c.Process(&ev, emit)
		}
	}
	return out
}

func snapshot(t testing.TB, c *correlate.Correlator) []byte {
	t.Helper()
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameState(t testing.TB, what string, want, got *correlate.Correlator) {
	t.Helper()
	a, b := snapshot(t, want), snapshot(t, got)
	if !bytes.Equal(a, b) {
		t.Fatalf("%s: the restored state differs (%d vs %d bytes)", what, len(a), len(b))
	}
}

// TestStateOverOneMegabyte: a state far beyond NATS's 1 MB message limit
// (thousands of groups) is checkpointed and restored through a real
// embedded NATS, and the restored correlator raises the same incidents.
func TestStateOverOneMegabyte(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const nodes = 3000
	c := e.correlator()
	feed(0, 4*nodes, nodes, c)
	snap := snapshot(t, c)
	if len(snap) < 2<<20 {
		t.Fatalf("state of %d bytes; the test wants several MB", len(snap))
	}
	// What klaxon did before: one value per partition.
	if _, err := e.kv.Put(ctx, "single", snap); err == nil || !strings.Contains(err.Error(), "maximum payload exceeded") {
		t.Fatalf("a %d-byte value was stored (err %v): the limit this test is about is not there", len(snap), err)
	}
	s, _, _ := e.load(t, "correlator", Options{})
	// The store restored nothing into its own correlator; hand it c.
	st, err := s.Save(ctx, c, 4*nodes)
	if err != nil {
		t.Fatal(err)
	}
	if st.Items < 3*nodes {
		t.Fatalf("first save wrote %d items; want every group and clock", st.Items)
	}
	_, c2, seq := e.load(t, "correlator", Options{})
	if seq != 4*nodes {
		t.Errorf("restored seq %d, want %d", seq, 4*nodes)
	}
	sameState(t, "after restore", c, c2)
	want := feed(4*nodes, 6*nodes, nodes, c)
	got := feed(4*nodes, 6*nodes, nodes, c2)
	if len(want) == 0 {
		t.Fatal("no incident changes after the restore: nothing compared")
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("after the restore %d incident changes, uninterrupted %d (or they differ)", len(got), len(want))
	}
}

// TestSmallChangeWritesOnlyDirtyItems: after a full checkpoint, one event
// costs a checkpoint of the items it changed plus the meta record: that
// many KV messages, whatever the size of the state.
func TestSmallChangeWritesOnlyDirtyItems(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const nodes = 2000
	s, c, _ := e.load(t, "correlator", Options{})
	feed(0, 3*nodes, nodes, c)
	if _, err := s.Save(ctx, c, 1); err != nil {
		t.Fatal(err)
	}
	before := e.lastSeq(t)
	ev := event(3*nodes, nodes) // one more event
	c.Process(&ev, func(correlate.Incident) {})
	cp, err := c.Checkpoint() // what changed (Checkpoint hands it out again to Save)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cp.Changed) + len(cp.Deleted); n == 0 || n > 3 {
		t.Fatalf("one event changed %d items; want its group(s) and clock", n)
	}
	st, err := s.Save(ctx, c, 2)
	if err != nil {
		t.Fatal(err)
	}
	puts := e.lastSeq(t) - before
	if want := uint64(len(cp.Changed) + len(cp.Deleted) + 1); puts != want || uint64(st.Messages) != want {
		t.Errorf("a checkpoint after one event wrote %d KV messages (store counted %d); want %d: the changed items and the meta record", puts, st.Messages, want)
	}
	// A checkpoint with nothing changed writes the meta record only.
	before = e.lastSeq(t)
	if _, err := s.Save(ctx, c, 3); err != nil {
		t.Fatal(err)
	}
	if puts := e.lastSeq(t) - before; puts != 1 {
		t.Errorf("a checkpoint without changes wrote %d messages; want 1", puts)
	}
	_, c2, seq := e.load(t, "correlator", Options{})
	if seq != 3 {
		t.Errorf("seq %d, want 3", seq)
	}
	sameState(t, "after small checkpoints", c, c2)
}

// crashAt makes a store stop an attempt at a stage, as a SIGKILL would.
func crashAt(stage string, after int) func(string, int) error {
	return func(st string, n int) error {
		if st == stage && n >= after {
			return errors.New("crash")
		}
		return nil
	}
}

// TestCrashBetweenWrites: a checkpoint cut short anywhere (after some of
// its items, after all of them but before its meta record) restores the
// previous checkpoint; replaying the events after its sequence gives the
// state of the uninterrupted run: nothing counted twice, nothing lost.
func TestCrashBetweenWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stage string
		after int
		// nodes send u events a step: 400 and 400, many small groups;
		// 4 and 2,500, a few windows of hundreds of entries, stored in
		// segments (correlate/segments.go).
		nodes, u int
	}{
		{"before any item", "publish", 0, 400, 400}, {"after some items", "publish", 500, 400, 400}, {"before the meta record", "commit", 0, 400, 400},
		{"long windows: after some items", "publish", 6, 4, 2500}, {"long windows: before the meta record", "commit", 0, 4, 2500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			nodes, u := tc.nodes, tc.u
			s, c, _ := e.load(t, "correlator", Options{})
			feed(0, 3*u, nodes, c)
			st, err := s.Save(ctx, c, uint64(3*u))
			if err != nil {
				t.Fatal(err)
			}
			// 3 groups and a clock per node, and in segments more.
			if long := nodes < u; long && st.Items < 8*nodes {
				t.Fatalf("%d items for %d nodes: the windows are not in segments", st.Items, nodes)
			}
			ref := e.correlator() // the uninterrupted run
			feed(0, 3*u, nodes, ref)
			// Every group changes, then the checkpoint is cut short.
			feed(3*u, 5*u, nodes, c, ref)
			before := e.lastSeq(t)
			s.hook = crashAt(tc.stage, tc.after)
			if _, err := s.Save(ctx, c, uint64(5*u)); err == nil {
				t.Fatal("the cut checkpoint was stored")
			}
			written := e.lastSeq(t) - before
			if tc.stage == "publish" && tc.after > 0 && (written == 0 || written >= uint64(2*nodes)) {
				t.Fatalf("%d messages written before the crash; want some of the items", written)
			}
			// A new process: the previous checkpoint, then the events after it.
			_, c2, seq := e.load(t, "correlator", Options{})
			if seq != uint64(3*u) {
				t.Fatalf("restored seq %d, want %d (the last stored checkpoint)", seq, 3*u)
			}
			mid := e.correlator()
			feed(0, 3*u, nodes, mid)
			sameState(t, "restored after the crash", mid, c2)
			feed(int(seq), 5*u, nodes, c2)
			sameState(t, "after the replay", ref, c2)
			// It goes on: checkpoint, restore again.
			s2 := e.store(t, "correlator", Options{})
			c3 := e.correlator()
			if _, err := s2.Load(ctx, c3); err != nil {
				t.Fatal(err)
			}
			feed(3*u, 5*u, nodes, c3)
			feed(5*u, 6*u, nodes, c3, ref)
			if _, err := s2.Save(ctx, c3, uint64(6*u)); err != nil {
				t.Fatal(err)
			}
			_, c4, seq := e.load(t, "correlator", Options{})
			if seq != uint64(6*u) {
				t.Errorf("seq %d, want %d", seq, 6*u)
			}
			sameState(t, "after the next checkpoint", ref, c4)
		})
	}
}

// TestFencedWriterIsIgnored: a correlator that took the state over fences
// the previous one: the old one's commit fails (ErrFenced), its late item
// writes are ignored by every later restore, and the new one writes over
// them.
func TestFencedWriterIsIgnored(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const nodes = 500
	sa, ca, _ := e.load(t, "correlator-p0", Options{})
	feed(0, 2*nodes, nodes, ca)
	if _, err := sa.Save(ctx, ca, 2*nodes); err != nil {
		t.Fatal(err)
	}
	// B takes over (A was cut off, not dead).
	sb, cb, seq := e.load(t, "correlator-p0", Options{})
	if seq != 2*nodes {
		t.Fatalf("B resumes after %d, want %d", seq, 2*nodes)
	}
	// A goes on a little and tries to checkpoint: its items land, its
	// commit is refused.
	feed(2*nodes, 3*nodes, nodes, ca)
	if _, err := sa.Save(ctx, ca, 3*nodes); !errors.Is(err, ErrFenced) {
		t.Fatalf("the fenced writer's save: %v; want ErrFenced", err)
	}
	// B processes other events (so the states differ) and checkpoints over
	// A's late writes.
	ref := e.correlator()
	feed(0, 2*nodes, nodes, ref)
	for _, c := range []*correlate.Correlator{cb, ref} {
		for i := 2 * nodes; i < 3*nodes; i++ {
			ev := event(i, nodes)
			ev.Msg = "x" // not what A saw
			c.Process(&ev, func(correlate.Incident) {})
		}
	}
	st, err := sb.Save(ctx, cb, 3*nodes)
	if err != nil {
		t.Fatalf("B's save over A's late writes: %v", err)
	}
	if st.Overwrites == 0 {
		t.Error("B wrote no slot A had written late: the test misses the case")
	}
	// A again: refused before it writes anything B holds.
	feed(3*nodes, 4*nodes, nodes, ca)
	if _, err := sa.Save(ctx, ca, 4*nodes); !errors.Is(err, ErrFenced) {
		t.Fatalf("the fenced writer's second save: %v; want ErrFenced", err)
	}
	_, cc, seq := e.load(t, "correlator-p0", Options{})
	if seq != 3*nodes {
		t.Errorf("seq %d, want %d", seq, 3*nodes)
	}
	sameState(t, "restored after the fenced writer", ref, cc)
	// Only B's unfinished part is garbage: A's late writes are not read.
	_, cd, _ := e.load(t, "correlator-p0", Options{})
	sameState(t, "restored again", ref, cd)
}

// TestFencedWriterLateWritesBeforeCommit: the old writer's items that land
// after the new one read the state, and before the new one writes them,
// are ignored by a restore (their generation was never committed).
func TestFencedWriterLateWrites(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const nodes = 300
	sa, ca, _ := e.load(t, "k", Options{})
	feed(0, 2*nodes, nodes, ca)
	if _, err := sa.Save(ctx, ca, 2*nodes); err != nil {
		t.Fatal(err)
	}
	ref := e.correlator()
	feed(0, 2*nodes, nodes, ref)
	_, _, _ = e.load(t, "k", Options{}) // B takes over, and dies
	feed(2*nodes, 3*nodes, nodes, ca)
	if _, err := sa.Save(ctx, ca, 3*nodes); !errors.Is(err, ErrFenced) {
		t.Fatalf("save of the fenced writer: %v", err)
	}
	_, cc, seq := e.load(t, "k", Options{})
	if seq != 2*nodes {
		t.Errorf("seq %d, want %d", seq, 2*nodes)
	}
	sameState(t, "restored", ref, cc)
}

// TestMigrationFromSingleValueSnapshot: the state klaxon kept before
// (one value {"seq", "state"} under the scope key) is restored, then
// written as items by the first save; a crash in between keeps it.
func TestMigrationFromSingleValueSnapshot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const nodes = 200
	old := e.correlator()
	feed(0, 3*nodes, nodes, old)
	rec, _ := json.Marshal(map[string]any{"seq": 42, "state": json.RawMessage(snapshot(t, old))})
	if _, err := e.kv.Put(ctx, "correlator", rec); err != nil {
		t.Fatal(err)
	}
	// First start: restored; the migration is cut short.
	s, c, seq := e.load(t, "correlator", Options{})
	if seq != 42 {
		t.Fatalf("seq %d, want 42", seq)
	}
	sameState(t, "migrated", old, c)
	s.hook = crashAt("commit", 0)
	if _, err := s.Save(ctx, c, 43); err == nil {
		t.Fatal("cut save stored")
	}
	// Second start: still the snapshot; this time the save completes.
	s, c, seq = e.load(t, "correlator", Options{})
	if seq != 42 {
		t.Fatalf("after the cut migration seq %d, want 42", seq)
	}
	sameState(t, "migrated again", old, c)
	if _, err := s.Save(ctx, c, 42); err != nil {
		t.Fatal(err)
	}
	if ks := e.keys(t, "correlator.legacy"); len(ks) != 0 {
		t.Errorf("the snapshot is still kept after the migration: %v", ks)
	}
	_, c, seq = e.load(t, "correlator", Options{})
	if seq != 42 {
		t.Fatalf("after the migration seq %d, want 42", seq)
	}
	sameState(t, "after the migration", old, c)
	m, err := e.kv.Get(ctx, "correlator")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(m.Value(), []byte(`"v":2`)) || bytes.Contains(m.Value(), []byte(`"legacy"`)) {
		t.Errorf("meta record after the migration: %s", m.Value())
	}
}

// TestLargeItemsAreChunked: a group larger than a message is written in
// chunks and read back; the chunks of superseded versions are removed.
func TestLargeItemsAreChunked(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	opts := Options{ChunkSize: 256} // compressed, the group is ~1 KB
	s, c, _ := e.load(t, "big", opts)
	// One node, many events: one group with a long window.
	feed(0, 300, 1, c)
	st, err := s.Save(ctx, c, 300)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages <= st.Items+1 {
		t.Fatalf("%d messages for %d items: nothing was chunked", st.Messages, st.Items)
	}
	for round := 1; round <= 3; round++ {
		feed(300*round, 300*(round+1), 1, c)
		if _, err := s.Save(ctx, c, uint64(300*(round+1))); err != nil {
			t.Fatal(err)
		}
	}
	s2, c2, _ := e.load(t, "big", opts)
	sameState(t, "chunked", c, c2)
	// The takeover purges what it found superseded after its first commit
	// (a load does not wait for purges).
	current := 0
	for _, it := range s2.items {
		current += len(it.slots[it.cur].chunks)
	}
	if n := countPrefix(e.keys(t, "big"), "big.x."); n <= current {
		t.Errorf("%d chunk keys right after the load, %d current: it purged before handing over", n, current)
	}
	if _, err := s2.Save(ctx, c2, 1200); err != nil {
		t.Fatal(err)
	}
	// The chunks kept are those of the current records (the previous
	// versions' are gone).
	chunks := 0
	for _, k := range e.keys(t, "big") {
		if strings.HasPrefix(k, "big.x.") {
			chunks++
		}
	}
	want := 0
	for _, it := range s2.items {
		want += len(it.slots[it.cur].chunks)
	}
	if want == 0 || chunks != want {
		t.Errorf("%d chunk keys; the current records have %d", chunks, want)
	}
}

func countPrefix(keys []string, prefix string) int {
	n := 0
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// TestNoGarbageAccumulates: with groups coming and going over many
// checkpoints, the bucket holds the live items (two slots each) and the
// meta record, not every version ever written.
func TestNoGarbageAccumulates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "gc", Options{})
	const nodes = 200
	for round := range 30 {
		// A different set of nodes every few rounds; time moves on, so the
		// groups of the nodes that went quiet are dropped.
		base := (round / 5) * nodes
		for i := round * nodes; i < (round+1)*nodes; i++ {
			ev := event(i, nodes)
			ev.Node = fmt.Sprintf("node-%05d", base+i%nodes)
			ev.Time = t0.Add(time.Duration(round) * 20 * time.Minute).Add(time.Duration(i%nodes) * time.Millisecond)
			c.Advance(ev.Time, func(correlate.Incident) {})
			c.Process(&ev, func(correlate.Incident) {})
		}
		if _, err := s.Save(ctx, c, uint64(round+1)); err != nil {
			t.Fatal(err)
		}
	}
	items := 0
	for _, n := range c.ActiveGroups() {
		items += n
	}
	keys := e.keys(t, "gc")
	// items: groups + clocks (the clocks of every node ever seen stay).
	if limit := 2*(items+6*nodes) + 1; len(keys) > limit {
		t.Errorf("%d keys for %d groups: garbage accumulates (limit %d)", len(keys), items, limit)
	}
	_, c2, _ := e.load(t, "gc", Options{})
	sameState(t, "after churn", c, c2)
}

// TestRestartsBeforeAnyCheckpoint: a scope claimed but never checkpointed
// (a crash before the first save) loads as empty, again and again.
func TestRestartsBeforeAnyCheckpoint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for range 3 {
		_, c, seq := e.load(t, "fresh", Options{})
		if seq != 0 || len(c.Open()) != 0 {
			t.Fatalf("fresh scope: seq %d, %d open incidents", seq, len(c.Open()))
		}
	}
	s, c, _ := e.load(t, "fresh", Options{})
	feed(0, 100, 10, c)
	if _, err := s.Save(ctx, c, 100); err != nil {
		t.Fatal(err)
	}
	_, c2, seq := e.load(t, "fresh", Options{})
	if seq != 100 {
		t.Errorf("seq %d, want 100", seq)
	}
	sameState(t, "after the first save", c, c2)
}

// TestIncompleteReadRefused: a load that reads fewer items than the last
// commit left (a watch that ended early while a replica caught up, in the
// soak) fails instead of claiming what it read: a claim would make what it
// missed invalid for every later load.
func TestIncompleteReadRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "inc", Options{})
	feed(0, 400, 200, c)
	if _, err := s.Save(ctx, c, 400); err != nil {
		t.Fatal(err)
	}
	// Groups come and go: deletions count too.
	feed(400, 800, 100, c)
	if _, err := s.Save(ctx, c, 800); err != nil {
		t.Fatal(err)
	}
	s2, whole, _ := e.load(t, "inc", Options{})
	sameState(t, "complete read", c, whole)
	// One live item's records gone from what a reader sees.
	var item string
	for h, it := range s2.items {
		if it.cur >= 0 && !it.slots[it.cur].del {
			item = "inc.i." + h.String()
			break
		}
	}
	st, err := e.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+item+".>")); err != nil {
		t.Fatal(err)
	}
	_, err = e.store(t, "inc", Options{}).Load(ctx, e.correlator())
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("load of an incomplete read: %v; want it refused", err)
	}
}

// TestNewestRevisionOfTheScope: the bound a scan reads up to is the newest
// message under its own scope, not another scope's in the same bucket.
func TestNewestRevisionOfTheScope(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, ca, _ := e.load(t, "a", Options{})
	if n, err := a.newestRevision(ctx); err != nil || n != 0 {
		t.Fatalf("newest revision after the claim: %d, %v; want 0 (the claim writes only K)", n, err)
	}
	feed(0, 500, 20, ca)
	if _, err := a.Save(ctx, ca, 500); err != nil {
		t.Fatal(err)
	}
	assertNewest(t, e, a, "a")
	b, cb, _ := e.load(t, "b", Options{})
	feed(0, 500, 20, cb)
	if _, err := b.Save(ctx, cb, 500); err != nil {
		t.Fatal(err)
	}
	assertNewest(t, e, b, "b")
	if n, err := a.newestRevision(ctx); err != nil || n >= e.lastSeq(t) {
		t.Fatalf("scope a's newest revision %d (%v): want below the bucket's last %d, written by b", n, err, e.lastSeq(t))
	}
	empty := e.store(t, "none", Options{})
	if n, err := empty.newestRevision(ctx); err != nil || n != 0 {
		t.Fatalf("newest revision of an empty scope: %d, %v; want 0", n, err)
	}
}

// assertNewest checks that the newest revision under scope key is the
// newest under the scope's keys (the meta record K itself is outside).
func assertNewest(t *testing.T, e *env, s *Store, key string) {
	t.Helper()
	ctx := context.Background()
	var want uint64
	for _, k := range e.keys(t, key) {
		if k == key {
			continue
		}
		v, err := e.kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		want = max(want, v.Revision())
	}
	got, err := s.newestRevision(ctx)
	if err != nil || got != want {
		t.Fatalf("newest revision under %s: %d (%v), want %d", key, got, err, want)
	}
}

// TestTidyApartFromWrite: a commit leaves its superseded records to Tidy,
// which starts no more removals than its budget allows and leaves the rest
// for the next call.
func TestTidyApartFromWrite(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "tidy", Options{})
	feed(0, 600, 200, c)
	if _, err := s.Save(ctx, c, 1); err != nil {
		t.Fatal(err)
	}
	c.Settle(t0.Add(48*time.Hour), func(correlate.Incident) {}) // every group dropped
	p, err := s.Begin(ctx, c, 2)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Committed()
	if st.Deleted == 0 || len(s.owed) == 0 {
		t.Fatalf("%d deleted, %d removals owed: the test needs superseded records", st.Deleted, len(s.owed))
	}
	owed, keys := len(s.owed), len(e.keys(t, "tidy"))
	s.Tidy(ctx, time.Nanosecond) // the budget is spent before the first removal
	if len(s.owed) != owed || len(e.keys(t, "tidy")) != keys {
		t.Fatalf("a spent budget: %d of %d removals still owed, %d of %d keys left; want none started", len(s.owed), owed, len(e.keys(t, "tidy")), keys)
	}
	s.Tidy(ctx, 0)
	if len(s.owed) != 0 {
		t.Fatalf("%d removals still owed after an unbounded tidy", len(s.owed))
	}
	if after := len(e.keys(t, "tidy")); after >= keys {
		t.Fatalf("%d keys before tidying, %d after", keys, after)
	}
	_, c2, seq := e.load(t, "tidy", Options{})
	if seq != 2 {
		t.Fatalf("seq %d after tidying, want 2", seq)
	}
	sameState(t, "after tidying", c, c2)
}

// TestReadWhileCommitted: a read that claims nothing, during which the
// writer commits twice (a record it read past is overwritten and gone),
// reads again and returns the newest state, not a mix.
func TestReadWhileCommitted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	w, c, _ := e.load(t, "r", Options{})
	feed(0, 400, 40, c)
	if _, err := w.Save(ctx, c, 400); err != nil {
		t.Fatal(err)
	}
	r := e.store(t, "r", Options{})
	scans := 0
	r.scanned = func() {
		scans++
		if scans > 1 {
			return
		}
		for seq := uint64(500); seq <= 600; seq += 100 {
			feed(int(seq)-100, int(seq), 40, c)
			if _, err := w.Save(ctx, c, seq); err != nil {
				t.Error(err)
			}
		}
	}
	got := e.correlator()
	seq, err := r.read(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	if scans != 2 || seq != 600 {
		t.Fatalf("%d scans, seq %d; want a second scan and seq 600", scans, seq)
	}
	sameState(t, "read during commits", c, got)
}

// TestStaleReadRefused: a read that finds every live item but one of them
// as an older record (its newest is not where the reader looks: a replica
// behind the leader) fails instead of restoring and claiming the older
// state; the whole read then succeeds.
func TestStaleReadRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "stale", Options{})
	for seq := 200; seq <= 600; seq += 200 {
		feed(seq-200, seq, 20, c)
		if _, err := s.Save(ctx, c, uint64(seq)); err != nil {
			t.Fatal(err)
		}
	}
	// An item whose other slot holds an older record of it.
	var subject string
	for h, it := range s.items {
		other := it.slots[1-max(it.cur, 0)]
		if it.cur >= 0 && !it.slots[it.cur].del && other.rev > 0 && !other.del {
			subject = fmt.Sprintf("$KV.%s.stale.i.%s.%d", bucket, h, it.cur)
			break
		}
	}
	if subject == "" {
		t.Fatal("no item with two records: the test proves nothing")
	}
	st, err := e.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	// Keep its newest record aside and take it from the bucket.
	newest, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		t.Fatal(err)
	}
	before, _ := e.kv.Get(ctx, "stale")
	_, err = e.store(t, "stale", Options{}).Load(ctx, e.correlator())
	if err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("load of a stale read: %v; want it refused", err)
	}
	if after, _ := e.kv.Get(ctx, "stale"); after.Revision() != before.Revision() {
		t.Fatal("a refused load claimed the state")
	}
	// The record back where the reader looks: the read is whole again.
	if _, err := e.js.Publish(ctx, subject, newest.Data); err != nil {
		t.Fatal(err)
	}
	_, c2, seq := e.load(t, "stale", Options{})
	if seq != 600 {
		t.Fatalf("seq %d, want 600", seq)
	}
	sameState(t, "whole read", c, c2)
}
