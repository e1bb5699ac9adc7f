package correlate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

func bundledRulesT(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.LoadDir("../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// kvSim applies checkpoints to a map, as a store does.
type kvSim struct {
	meta  []byte
	items map[string][]byte
	puts  int
}

func (k *kvSim) apply(t *testing.T, c *Correlator) Checkpoint {
	t.Helper()
	cp, err := c.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if k.items == nil {
		k.items = map[string][]byte{}
	}
	for id, b := range cp.Changed {
		k.items[id] = b
		k.puts++
	}
	for _, id := range cp.Deleted {
		delete(k.items, id)
	}
	k.meta = cp.Meta
	c.Committed()
	return cp
}

// perRule counts the stored items of a kind ('g', 's', 'c') by their
// rule id (a clock's: source).
func (k *kvSim) perRule(kind byte) map[string]int {
	n := map[string]int{}
	for id := range k.items {
		if id[0] == kind {
			n[strings.Split(id, "\x00")[1]]++
		}
	}
	return n
}

func (k *kvSim) restore(t *testing.T, set *rules.Set) *Correlator {
	t.Helper()
	return k.restoreWith(t, set, Options{Logger: quietLog()})
}

func (k *kvSim) restoreWith(t *testing.T, set *rules.Set, opts Options) *Correlator {
	t.Helper()
	c := New(set, opts)
	if err := c.RestoreCheckpoint(k.meta, maps.All(k.items)); err != nil {
		t.Fatal(err)
	}
	return c
}

func snapshotOf(t *testing.T, c *Correlator) []byte {
	t.Helper()
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIncrementalCheckpointsAddUpToTheState: checkpoints taken every few
// hundred events (items that changed put, items gone deleted) add up to
// the whole state, and a correlator restored from them goes on exactly as
// the one that ran through.
func TestIncrementalCheckpointsAddUpToTheState(t *testing.T) {
	set := bundledRulesT(t)
	c := New(set, Options{Logger: quietLog()})
	feed := newScaleFeed(300)
	var next time.Time
	var kv kvSim
	deleted := 0
	for range 20 {
		runFeed(c, feed, 500, &next)
		kv.apply(t, c)
	}
	// 400 rounds (3.4 h) later: the groups of the earlier events are gone,
	// and one event per node recreates only a few.
	feed.i += 300 * 400
	runFeed(c, feed, 300, &next)
	deleted = len(kv.apply(t, c).Deleted)
	if deleted < 300 {
		t.Fatalf("%d items deleted after the gap; want the groups of every node", deleted)
	}
	c2 := kv.restore(t, set)
	if a, b := snapshotOf(t, c), snapshotOf(t, c2); !bytes.Equal(a, b) {
		t.Fatalf("restored state differs from the live one (%d vs %d bytes)", len(a), len(b))
	}
	if kv.puts >= 21*len(kv.items) {
		t.Errorf("%d item writes over 21 checkpoints of %d items: not incremental", kv.puts, len(kv.items))
	}
	// Both go on alike.
	var out1, out2 []Incident
	feed2 := *feed
	next2 := next
	runFeedEmit(c, feed, 3000, &next, func(in Incident) { out1 = append(out1, in) })
	runFeedEmit(c2, &feed2, 3000, &next2, func(in Incident) { out2 = append(out2, in) })
	if len(out1) == 0 {
		t.Fatal("no incident changes after the restore: nothing compared")
	}
	if !reflect.DeepEqual(out1, out2) {
		t.Errorf("after the restore: %d changes, without: %d (or they differ)", len(out2), len(out1))
	}
}

func runFeedEmit(c *Correlator, f *scaleFeed, k int, next *time.Time, emit func(Incident)) {
	var ev ingest.Event
	for range k {
		f.next(&ev)
		if !ev.Time.Before(*next) {
			c.Advance(ev.Time, emit)
			*next = ev.Time.Add(time.Second)
		}
		c.Process(&ev, emit)
	}
}

// TestCheckpointHoldsOnlyWhatChanged: after a stored checkpoint, one event
// makes a checkpoint of the groups it matched and its source's clock; a
// checkpoint not stored (Committed not called) is handed out again with
// what changed since.
func TestCheckpointHoldsOnlyWhatChanged(t *testing.T) {
	set := bundledRulesT(t)
	c := New(set, Options{Logger: quietLog()})
	feed := newScaleFeed(200)
	var next time.Time
	runFeed(c, feed, 2*len(quietTemplates)*200, &next)
	var kv kvSim
	full := kv.apply(t, c)
	if len(full.Changed) < 200 {
		t.Fatalf("first checkpoint has %d items; want every group and clock", len(full.Changed))
	}
	emit := func(Incident) {}
	ev := ingest.Event{ID: "x1", Time: next.Add(-time.Second), Node: "node-00007", Source: "nomad.log", Kind: "client.driver_mgr", Level: "warn",
		Msg: "failed to reattach to plugin, starting new instance", Fields: map[string]any{"driver": "raw_exec"}}
	c.Process(&ev, emit)
	cp, err := c.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	clockID := itemRef{'c', "nomad.log", "node-00007", 0}.ID()
	if _, ok := cp.Changed[clockID]; !ok {
		t.Errorf("the event's clock is not in the checkpoint: %v", ids(cp.Changed))
	}
	if len(cp.Changed) < 2 || len(cp.Changed) > 4 || len(cp.Deleted) != 0 {
		t.Fatalf("checkpoint after one event: changed %v, deleted %d; want its clock and its group(s)", ids(cp.Changed), len(cp.Deleted))
	}
	for id := range cp.Changed {
		if !strings.Contains(id, "node-00007") {
			t.Errorf("item %q changed; the event was of node-00007", id)
		}
	}
	// Not stored: the next checkpoint has these and the next event's items.
	ev2 := ev
	ev2.ID, ev2.Node = "x2", "node-00011"
	c.Process(&ev2, emit)
	cp2, err := c.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for id := range cp.Changed {
		if _, ok := cp2.Changed[id]; !ok {
			t.Errorf("item %q of the checkpoint that was not stored is missing from the next", id)
		}
	}
	if _, ok := cp2.Changed[itemRef{'c', "nomad.log", "node-00011", 0}.ID()]; !ok {
		t.Error("the second event's clock is missing")
	}
	// Only the groups the last encoded checkpoint (cp) encoded keep
	// evidence encodings: each Cut takes those of the one before.
	holding := 0
	for _, rs := range c.rules {
		for _, g := range rs.groups {
			if g.evEnc != nil {
				holding++
				if _, ok := cp.Changed[itemRef{'g', rs.rule.ID, g.Key, 0}.ID()]; !ok {
					t.Errorf("group %s/%s holds encodings the checkpoint did not make", rs.rule.ID, g.Key)
				}
			}
		}
	}
	if holding == 0 || holding != len(c.ckpt.cached) {
		t.Errorf("%d groups hold evidence encodings, %d recorded; want the checkpoint's groups", holding, len(c.ckpt.cached))
	}
	c.Committed()
	if cp3, _ := c.Checkpoint(); len(cp3.Changed)+len(cp3.Deleted) != 0 {
		t.Errorf("after Committed, nothing changed, yet %d items", len(cp3.Changed)+len(cp3.Deleted))
	}
}

func ids(m map[string][]byte) []string {
	var out []string
	for id := range m {
		out = append(out, strings.ReplaceAll(id, "\x00", "/"))
	}
	return out
}

// TestCheckpointRuleChange: a changed rule's groups are deleted items, an
// unchanged rule's are not written at all; a restore resolves the open
// incidents of a rule changed while klaxon was down and deletes their items.
func TestCheckpointRuleChange(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{Logger: quietLog()})
	steps := []step{{0, "n1", "a", ""}, {time.Second, "n1", "b", ""}, {2 * time.Second, "n2", "x", ""}, {3 * time.Second, "n3", "a", ""}}
	if fired := runSteps(c, steps); len(fired) == 0 {
		t.Fatal("the scenario fires nothing")
	}
	var kv kvSim
	kv.apply(t, c)
	groups := kv.perRule('g')
	if len(groups) < 2 {
		t.Fatalf("groups of %d rules; want two or more", len(groups))
	}
	// Change one rule (its window).
	changed := "test.pair"
	if groups[changed] != 2 {
		t.Fatalf("%s has %d groups; want 2", changed, groups[changed])
	}
	set2 := changeRule(t, changed)
	// Restored with the changed rule: its items are deleted by the next
	// checkpoint, and its incident resolved.
	c3 := New(set2, Options{Logger: quietLog()})
	if err := c3.RestoreCheckpoint(kv.meta, maps.All(kv.items)); err != nil {
		t.Fatal(err)
	}
	c.SetRules(set2)
	for _, cc := range []*Correlator{c, c3} {
		cp, err := cc.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if len(cp.Deleted) != groups[changed] {
			t.Errorf("deleted %d items; want the %d groups of the changed rule %s", len(cp.Deleted), groups[changed], changed)
		}
		for _, id := range cp.Deleted {
			if strings.Split(id, "\x00")[1] != changed {
				t.Errorf("item %q deleted; only %s changed", id, changed)
			}
		}
		if len(cp.Changed) != 0 {
			t.Errorf("items of unchanged rules written: %v", ids(cp.Changed))
		}
		var m checkpointMeta
		if err := json.Unmarshal(cp.Meta, &m); err != nil {
			t.Fatal(err)
		}
		var out []Incident
		cc.Advance(t0.Add(time.Minute), func(in Incident) { out = append(out, in) })
		if open := hasOpen(kv, changed); open && (len(out) == 0 || out[0].Status != StatusResolved) {
			t.Errorf("the open incident of the changed rule was not resolved: %v", statuses(out))
		}
		// The items leave the runbook out; the resolution still has it.
		if len(out) > 0 && out[0].Runbook != "do something" {
			t.Errorf("the retired incident resolved with runbook %q, want the rule's", out[0].Runbook)
		}
	}
}

// TestItemsLeaveTheRunbookOut: a firing group's item does not repeat its
// rule's runbook; the meta record has it once per rule.
func TestItemsLeaveTheRunbookOut(t *testing.T) {
	c := New(loadRules(t), Options{Logger: quietLog()})
	steps := []step{{0, "n1", "a", ""}, {time.Second, "n1", "b", ""}}
	if fired := runSteps(c, steps); len(fired) == 0 || fired[0].Runbook != "do something" {
		t.Fatalf("the scenario fires %v", fired)
	}
	var kv kvSim
	kv.apply(t, c)
	if !hasOpen(kv, "test.pair") {
		t.Fatal("no item holds the open incident")
	}
	for id, b := range kv.items {
		if bytes.Contains(b, []byte("do something")) {
			t.Errorf("item %q repeats the runbook: %s", id, b)
		}
	}
	var m checkpointMeta
	if err := json.Unmarshal(kv.meta, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Runbooks) != 3 {
		t.Errorf("meta record runbooks %v, want the 3 rules'", m.Runbooks)
	}
}

func hasOpen(kv kvSim, rule string) bool {
	for id, b := range kv.items {
		if strings.Split(id, "\x00")[1] == rule && bytes.Contains(b, []byte(`"incident":`)) {
			return true
		}
	}
	return false
}

// changeRule returns the test rules with the window of rule id changed.
func changeRule(t *testing.T, id string) *rules.Set {
	t.Helper()
	b, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	i := strings.Index(src, "id: "+id+"\n")
	j := strings.Index(src[i:], "window: ")
	if i < 0 || j < 0 {
		t.Fatalf("rule %s or its window not found", id)
	}
	src = src[:i+j] + "window: 7h # changed\n" + src[i+j:][strings.Index(src[i+j:], "\n")+1:]
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles(p)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestRestoreOfSnapshotMarksEverything: state restored from a single-value
// snapshot is all in the next checkpoint (the migration writes it once).
func TestRestoreOfSnapshotMarksEverything(t *testing.T) {
	set := bundledRulesT(t)
	c := New(set, Options{Logger: quietLog()})
	feed := newScaleFeed(50)
	var next time.Time
	runFeed(c, feed, 2*len(quietTemplates)*50, &next)
	var kv kvSim
	all := kv.apply(t, c)
	c2 := New(set, Options{Logger: quietLog()})
	if err := c2.Restore(snapshotOf(t, c)); err != nil {
		t.Fatal(err)
	}
	cp, err := c2.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Changed) != len(all.Changed) {
		t.Errorf("checkpoint after Restore: %d items; want all %d", len(cp.Changed), len(all.Changed))
	}
	// And RestoreCheckpoint marks nothing.
	c3 := kv.restore(t, set)
	if cp, _ := c3.Checkpoint(); len(cp.Changed)+len(cp.Deleted) != 0 {
		t.Errorf("checkpoint right after RestoreCheckpoint: %d items; want none", len(cp.Changed)+len(cp.Deleted))
	}
}

// TestCheckpointAfterWakeUp: time alone changes a group (an entry leaves
// its window on a wake-up, without an incident change or the group
// going): the checkpoint has it.
func TestCheckpointAfterWakeUp(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{Logger: quietLog()})
	runSteps(c, []step{{0, "n1", "a", ""}, {5 * time.Minute, "n1", "a", ""}, {6 * time.Minute, "", "", ""}})
	var kv kvSim
	kv.apply(t, c)
	c.Settle(t0.Add(11*time.Minute), func(Incident) {})
	cp := kv.apply(t, c)
	if len(cp.Changed) != 1 || len(cp.Deleted) != 0 {
		t.Fatalf("checkpoint after the wake-up: changed %v, deleted %v; want the group whose first entry left the window", ids(cp.Changed), cp.Deleted)
	}
	if a, b := snapshotOf(t, c), snapshotOf(t, kv.restore(t, set)); !bytes.Equal(a, b) {
		t.Errorf("restored state differs:\n%s\n%s", a, b)
	}
}

// TestCutWhileTheCorrelatorGoesOn: a cut encoded while its correlator goes
// on processing (on another goroutine: -race watches) gives the bytes a
// checkpoint taken at the cut gives, and the next cut takes the encodings
// it made.
func TestCutWhileTheCorrelatorGoesOn(t *testing.T) {
	set := bundledRulesT(t)
	a, b := New(set, Options{Logger: quietLog()}), New(set, Options{Logger: quietLog()})
	fa, fb := newScaleFeed(100), newScaleFeed(100)
	var na, nb time.Time
	for round := range 3 {
		runFeed(a, fa, 40*len(quietTemplates), &na)
		runFeed(b, fb, 40*len(quietTemplates), &nb)
		cut, want := cutAndTwin(t, a, b)
		got := make(chan Checkpoint, 1)
		go func() {
			cp, err := cut.Encode()
			if err != nil {
				t.Error(err)
			}
			got <- cp
		}()
		// Windows slide, evidence shifts, incidents change meanwhile.
		runFeed(a, fa, 40*len(quietTemplates), &na)
		runFeed(b, fb, 40*len(quietTemplates), &nb)
		cp := <-got
		if len(cp.Changed) < 100 {
			t.Fatalf("round %d: the cut has %d items; want a busy checkpoint", round, len(cp.Changed))
		}
		sameCheckpoint(t, fmt.Sprint("round ", round), cp, want)
		a.Committed()
		b.Committed()
	}
	holding := 0
	if _, err := a.Cut(); err != nil {
		t.Fatal(err)
	}
	for _, rs := range a.rules {
		for _, g := range rs.groups {
			if g.evEnc != nil {
				holding++
			}
		}
	}
	if holding == 0 {
		t.Error("no group took the evidence encodings of the last cut")
	}
}

// cutAndTwin cuts a's checkpoint and takes b's, a's twin, at the same
// point.
func cutAndTwin(t *testing.T, a, b *Correlator) (*Cut, Checkpoint) {
	t.Helper()
	cut, err := a.Cut()
	if err != nil {
		t.Fatal(err)
	}
	want, err := b.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	return cut, want
}

// sameCheckpoint fails unless got holds want's items, meta record and
// deletions.
func sameCheckpoint(t *testing.T, what string, got, want Checkpoint) {
	t.Helper()
	if len(got.Changed) != len(want.Changed) {
		t.Fatalf("%s: the cut has %d items, the twin's checkpoint %d", what, len(got.Changed), len(want.Changed))
	}
	for id, w := range want.Changed {
		if !bytes.Equal(got.Changed[id], w) {
			t.Fatalf("%s: item %q:\n cut %.300s\nwant %.300s", what, strings.ReplaceAll(id, "\x00", "/"), got.Changed[id], w)
		}
	}
	if !bytes.Equal(got.Meta, want.Meta) || !reflect.DeepEqual(slices.Sorted(slices.Values(got.Deleted)), slices.Sorted(slices.Values(want.Deleted))) {
		t.Fatalf("%s: meta or deletions differ", what)
	}
}

// TestOpenCounts: the counts the metrics take are those of Open.
func TestOpenCounts(t *testing.T) {
	c := New(bundledRulesT(t), Options{Logger: quietLog()})
	var next time.Time
	runFeed(c, newScaleFeed(200), 2*len(quietTemplates)*200, &next)
	want := map[[2]string]int{}
	for _, in := range c.Open() {
		want[[2]string{in.Rule, in.Severity}]++
	}
	if got := c.OpenCounts(); len(want) == 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("OpenCounts %v, from Open %v (want equal, not empty)", got, want)
	}
}

// TestEncodeWithPacksEachItem: EncodeWith hands pack every item as Encode
// encodes it, though it reuses the buffers pack was given (a pack that
// kept them would see them overwritten).
func TestEncodeWithPacksEachItem(t *testing.T) {
	set := bundledRulesT(t)
	a, b := New(set, Options{Logger: quietLog()}), New(set, Options{Logger: quietLog()})
	var next, next2 time.Time
	runFeed(a, newScaleFeed(300), 2*len(quietTemplates)*300, &next)
	runFeed(b, newScaleFeed(300), 2*len(quietTemplates)*300, &next2)
	k, want := cutAndTwin(t, b, a)
	var given, copies [][]byte
	var mu sync.Mutex
	got, err := k.EncodeWith(func(item []byte) []byte {
		mu.Lock()
		given = append(given, item) // kept on purpose: reused later
		copies = append(copies, bytes.Clone(item))
		mu.Unlock()
		return append([]byte("packed:"), item...)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Changed) < 300 || len(got.Changed) != len(want.Changed) {
		t.Fatalf("%d items packed, Encode gives %d; want the same, over 300", len(got.Changed), len(want.Changed))
	}
	for id, w := range want.Changed {
		if g := got.Changed[id]; !bytes.Equal(g, append([]byte("packed:"), w...)) {
			t.Fatalf("item %q packed as %.80q, want %.80q", id, g, w)
		}
	}
	// The buffers are reused: most of those given were written again.
	reused := 0
	for i, g := range given {
		if !bytes.Equal(g, copies[i]) {
			reused++
		}
	}
	if reused == 0 {
		t.Errorf("none of the %d buffers given to pack was reused", len(given))
	}
}

// TestOverlappingCuts: a cut taken while the one before is still being
// encoded does without the evidence caches (which that encoding updates
// in place); both encode what a twin's checkpoints at the same points
// hold, also when encoded at the same time (run under -race).
func TestOverlappingCuts(t *testing.T) {
	set := bundledRulesT(t)
	a, b := New(set, Options{Logger: quietLog()}), New(set, Options{Logger: quietLog()})
	fa, fb := newScaleFeed(100), newScaleFeed(100)
	var na, nb time.Time
	for _, c := range []*Correlator{a, b} {
		// Caches from a first, finished checkpoint.
		f, n := fa, &na
		if c == b {
			f, n = fb, &nb
		}
		runFeed(c, f, 40*len(quietTemplates), n)
		if _, err := c.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		c.Committed()
		runFeed(c, f, 40*len(quietTemplates), n)
	}
	cutA, err := a.Cut()
	if err != nil {
		t.Fatal(err)
	}
	wantA, _ := b.Checkpoint()
	runFeed(a, fa, 40*len(quietTemplates), &na)
	runFeed(b, fb, 40*len(quietTemplates), &nb)
	cutB, err := a.Cut() // cutA not encoded yet
	if err != nil {
		t.Fatal(err)
	}
	wantB, _ := b.Checkpoint()
	var got [2]Checkpoint
	var wg sync.WaitGroup
	for i, k := range []*Cut{cutA, cutB} {
		wg.Go(func() {
			cp, err := k.Encode()
			if err != nil {
				t.Error(err)
			}
			got[i] = cp
		})
	}
	wg.Wait()
	for i, want := range []Checkpoint{wantA, wantB} {
		if len(got[i].Changed) < 100 || len(got[i].Changed) != len(want.Changed) {
			t.Fatalf("cut %d: %d items, the twin's checkpoint %d", i, len(got[i].Changed), len(want.Changed))
		}
		for id, w := range want.Changed {
			if !bytes.Equal(got[i].Changed[id], w) {
				t.Fatalf("cut %d: item %q differs", i, id)
			}
		}
	}
	for _, rs := range a.rules {
		for _, g := range rs.groups {
			if cg := cutB.group(rs.rule.ID, g.Key); cg != nil && cg.evEnc != nil {
				t.Fatalf("group %s/%s: the overlapping cut carries an evidence cache", rs.rule.ID, g.Key)
			}
		}
	}
}
