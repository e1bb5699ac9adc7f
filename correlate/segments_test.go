package correlate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// longWindowFeed makes events for the test rules' windows of 5 and 10
// minutes at a few events a second per node, so that every group holds
// thousands of entries: mostly in order, some late by up to 3 s (inserted
// before the newest), some further records of an occurrence seen before
// (observed again, another selector), some with an alloc id for the
// distinct rule.
type longWindowFeed struct {
	r    *rand.Rand
	now  time.Time
	n    int
	occs []struct {
		node string
		t    time.Time
		name string
	}
}

func (f *longWindowFeed) next() ingest.Event {
	f.n++
	f.now = f.now.Add(time.Duration(f.r.IntN(200)) * time.Millisecond)
	node := fmt.Sprintf("n%d", f.r.IntN(3))
	ev := ingest.Event{ID: fmt.Sprint("e", f.n), Time: f.now, Node: node, Source: "nomad.log", Kind: "test"}
	switch k := f.r.IntN(20); {
	case k == 0 && len(f.occs) > 0: // another record of an occurrence
		o := f.occs[f.r.IntN(len(f.occs))]
		ev.Node, ev.Time, ev.Occurrence, ev.Msg = o.node, o.t.Add(200*time.Millisecond), o.name, "b"
	case k < 3:
		ev.Msg, ev.Fields = "fail", map[string]any{"alloc_id": fmt.Sprint("a", f.r.IntN(5))}
	case k < 5:
		ev.Time = f.now.Add(-time.Duration(f.r.IntN(3000)) * time.Millisecond)
		ev.Msg = "a"
	default:
		ev.Msg = "a"
		if f.r.IntN(4) == 0 {
			ev.Occurrence = fmt.Sprint("o", f.n)
			f.occs = append(f.occs, struct {
				node string
				t    time.Time
				name string
			}{node, ev.Time, ev.Occurrence})
			if len(f.occs) > 50 {
				f.occs = f.occs[1:]
			}
		}
	}
	return ev
}

// longWindows returns a correlator that took n events of a
// longWindowFeed (seeded), and the feed.
func longWindows(set *rules.Set, seed uint64, n int) (*Correlator, *longWindowFeed) {
	c := New(set, Options{Logger: quietLog()})
	f := &longWindowFeed{r: rand.New(rand.NewPCG(seed, seed)), now: t0}
	for range n {
		ev := f.next()
		c.Process(&ev, func(Incident) {})
	}
	return c, f
}

// TestSegmentedWindowsAddUpToTheState: windows of thousands of entries
// stored in segments — checkpoints taken every few hundred events, some
// not stored (Committed not called), the run going on some times from
// the restored correlator — restore to the live state after every stored
// checkpoint, and the run gives the incidents and the state of one
// without checkpoints. A checkpoint writes the entries of the segments
// that changed, not whole windows.
func TestSegmentedWindowsAddUpToTheState(t *testing.T) {
	for _, maxEntries := range []int{0, 1500} {
		t.Run(fmt.Sprint("max_entries=", maxEntries), func(t *testing.T) {
			set := loadRules(t)
			opts := Options{Logger: quietLog(), MaxEntries: maxEntries}
			c, ref := New(set, opts), New(set, opts)
			f := &longWindowFeed{r: rand.New(rand.NewPCG(1, uint64(maxEntries))), now: t0}
			var got, want []Incident
			var kv kvSim
			restores, lost, since := 0, 0, 0
			maxWindow, maxWritten := 0, 0
			var nextTick time.Time
			for round := range 120 {
				for range 50 + f.r.IntN(400) {
					ev := f.next()
					if !ev.Time.Before(nextTick) {
						c.Advance(ev.Time, func(in Incident) { got = append(got, in) })
						ref.Advance(ev.Time, func(in Incident) { want = append(want, in) })
						nextTick = ev.Time.Add(time.Second)
					}
					c.Process(&ev, func(in Incident) { got = append(got, in) })
					ref.Process(&ev, func(in Incident) { want = append(want, in) })
					since++
				}
				if f.r.IntN(5) == 0 {
					if _, err := c.Checkpoint(); err != nil { // not stored
						t.Fatal(err)
					}
					lost++
					continue
				}
				cp := kv.apply(t, c)
				written := 0
				for id, b := range cp.Changed {
					if id[0] == 's' {
						var it segmentItem
						if err := json.Unmarshal(b, &it); err != nil {
							t.Fatalf("segment item %q: %v", id, err)
						}
						written += len(it.Entries)
					}
				}
				window := 0
				for _, rs := range c.rules {
					for _, g := range rs.groups {
						window += len(g.Entries)
					}
				}
				maxWindow = max(maxWindow, window)
				if round > 20 {
					// The segments changed since: the entries that came
					// (since, counting checkpoints not stored), the last
					// segment of each of 6 groups, and the one before it
					// where a late entry went.
					if bound := since + 6*2*segmentEntries; written > bound {
						t.Errorf("round %d: a checkpoint wrote %d entries in segments for %d events since the last; want at most %d (windows hold %d)", round, written, since, bound, window)
					}
					maxWritten = max(maxWritten, written)
				}
				since = 0
				r := kv.restoreWith(t, set, opts)
				if a, b := snapshotOf(t, c), snapshotOf(t, r); !bytes.Equal(a, b) {
					t.Fatalf("round %d: the restored state differs from the live one (%d vs %d bytes)", round, len(a), len(b))
				}
				if f.r.IntN(3) == 0 {
					c = r // go on from the restore
					restores++
				}
			}
			if maxWindow < 4*segmentEntries || restores == 0 || lost == 0 {
				t.Fatalf("windows of %d entries, %d restores, %d checkpoints lost: the test does not test", maxWindow, restores, lost)
			}
			segItems := 0
			for id := range kv.items {
				if id[0] == 's' {
					segItems++
				}
			}
			if segItems == 0 {
				t.Fatal("no window is stored in segments")
			}
			if len(want) == 0 || !reflect.DeepEqual(got, want) {
				t.Errorf("incidents: %d with checkpoints and restores, %d without (or they differ)", len(got), len(want))
			}
			if a, b := snapshotOf(t, c), snapshotOf(t, ref); !bytes.Equal(a, b) {
				t.Errorf("the state after the run differs from one without checkpoints (%d vs %d bytes)", len(a), len(b))
			}
			t.Logf("windows up to %d entries; a checkpoint wrote up to %d in segments; %d segment items", maxWindow, maxWritten, segItems)
		})
	}
}

// TestSegmentsOfAGoneGroupAreDeleted: the segments of a group whose rule
// changed are deleted with it, live and on restore; so are segments no
// group lists.
func TestSegmentsOfAGoneGroupAreDeleted(t *testing.T) {
	set := loadRules(t)
	c, _ := longWindows(set, 2, 3000)
	var kv kvSim
	kv.apply(t, c)
	segs := kv.perRule('s')
	if segs["test.pair"] == 0 {
		t.Fatalf("test.pair has no segments: %v", segs)
	}
	set2 := changeRule(t, "test.pair")
	restored := New(set2, Options{Logger: quietLog()})
	if err := restored.RestoreCheckpoint(kv.meta, maps.All(kv.items)); err != nil {
		t.Fatal(err)
	}
	c.SetRules(set2)
	for name, cc := range map[string]*Correlator{"live": c, "restored": restored} {
		cp, err := cc.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for _, id := range cp.Deleted {
			if id[0] == 's' {
				if rule := strings.Split(id, "\x00")[1]; rule != "test.pair" {
					t.Errorf("%s: segment %q deleted; only test.pair changed", name, id)
				}
				deleted++
			}
		}
		if deleted != segs["test.pair"] || len(cp.Changed) != 0 {
			t.Errorf("%s: %d segments deleted, %d items written; want test.pair's %d deleted, nothing written", name, deleted, len(cp.Changed), segs["test.pair"])
		}
	}
	// A segment no group lists (left by a crash of an earlier version,
	// say) goes with the next checkpoint.
	stray := itemRef{'s', "test.escalate", "n9", 7}.ID()
	kv.items[stray] = []byte(`{"rule":"test.escalate","key":"n9","id":7,"entries":[]}`)
	r := kv.restore(t, set)
	cp, err := r.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Deleted) != 1 || cp.Deleted[0] != stray || len(cp.Changed) != 0 {
		t.Errorf("after a restore with a stray segment: deleted %q, changed %v", cp.Deleted, ids(cp.Changed))
	}
}

// TestRestoreNamesTheBrokenSegment: a group whose segments are missing,
// hold other counts than it lists, or are out of order is a restore error
// that names the item and the segment.
func TestRestoreNamesTheBrokenSegment(t *testing.T) {
	set := loadRules(t)
	c, _ := longWindows(set, 3, 2000)
	var kv kvSim
	kv.apply(t, c)
	var seg string
	for id := range kv.items {
		if id[0] == 's' && strings.HasSuffix(id, "\x001") {
			seg = id
			break
		}
	}
	if seg == "" {
		t.Fatal("no group has a segment 1")
	}
	var it segmentItem
	if err := json.Unmarshal(kv.items[seg], &it); err != nil {
		t.Fatal(err)
	}
	short := it
	short.Entries = it.Entries[1:]
	swapped := it
	swapped.Entries = append(entryList{it.Entries[len(it.Entries)-1]}, it.Entries[:len(it.Entries)-1]...)
	for _, tc := range []struct {
		name string
		item *segmentItem // nil: missing
		want string
	}{
		{"missing", nil, "segment 1 of its window is missing"},
		{"short", &short, fmt.Sprintf("segment 1 holds %d entries, its group lists %d", len(it.Entries)-1, len(it.Entries))},
		{"out of order", &swapped, "out of time order"},
	} {
		items := maps.Clone(kv.items)
		delete(items, seg)
		if tc.item != nil {
			b, err := json.Marshal(tc.item)
			if err != nil {
				t.Fatal(err)
			}
			items[seg] = b
		}
		err := New(set, Options{Logger: quietLog()}).RestoreCheckpoint(kv.meta, maps.All(items))
		group := `"g/` + it.Rule + "/" + it.Key + `"`
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), group) {
			t.Errorf("%s: restore error %v; want one naming item %s and saying %q", tc.name, err, group, tc.want)
		}
	}
}

// BenchmarkCheckpointLongWindows: 100 nodes with full windows (6,000
// entries each in test.pair's 10 minutes, 10 events a second a node), a
// checkpoint after every second of events, windows inline (as before
// segments) and in segments, side by side: the cut's time on the
// correlator's goroutine, the encoding's, and the bytes encoded.
func BenchmarkCheckpointLongWindows(b *testing.B) {
	set, err := rules.LoadFiles("testdata/rules.yaml")
	if err != nil {
		b.Fatal(err)
	}
	const nodes, perSecond = 100, 10
	for _, layout := range []string{"inline", "segments"} {
		b.Run("layout="+layout, func(b *testing.B) {
			if layout == "inline" {
				defer func(v int) { segmentFrom = v }(segmentFrom)
				segmentFrom = math.MaxInt
			}
			c := New(set, Options{Logger: quietLog()})
			now := t0
			n := 0
			second := func() {
				for range perSecond {
					now = now.Add(time.Second / perSecond)
					for k := range nodes {
						n++
						ev := ingest.Event{ID: fmt.Sprint(n), Time: now, Node: fmt.Sprint("n", k), Source: "nomad.log", Kind: "test", Msg: "a"}
						c.Process(&ev, func(Incident) {})
					}
				}
				c.Advance(now, func(Incident) {})
			}
			for range 600 { // the window fills
				second()
			}
			if _, err := c.Checkpoint(); err != nil {
				b.Fatal(err)
			}
			c.Committed()
			var cut, enc time.Duration
			var bytes int
			for b.Loop() {
				second()
				start := time.Now()
				k, err := c.Cut()
				if err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				cp, err := k.Encode()
				if err != nil {
					b.Fatal(err)
				}
				cut, enc = cut+mid.Sub(start), enc+time.Since(mid)
				for _, v := range cp.Changed {
					bytes += len(v)
				}
				c.Committed()
			}
			b.ReportMetric(float64(cut.Microseconds())/1000/float64(b.N), "cut-ms/op")
			b.ReportMetric(float64(enc.Microseconds())/1000/float64(b.N), "encode-ms/op")
			b.ReportMetric(float64(bytes)/1024/float64(b.N), "KB/op")
		})
	}
}

// TestCutKeepsItsEntries: a cut shares the windows' entries rather than
// copying them; what the correlator does before the cut is encoded — late
// entries inserted, entries observed again, entries evicted and appended,
// inline and in segments — does not change what it encodes (the
// checkpoint of a twin taken at the cut). Encoded after the changes, so
// that a change the cut would see cannot hide behind timing; and once
// beside them, for -race.
func TestCutKeepsItsEntries(t *testing.T) {
	set := loadRules(t)
	for _, concurrent := range []bool{false, true} {
		a, b := New(set, Options{Logger: quietLog()}), New(set, Options{Logger: quietLog()})
		fa := &longWindowFeed{r: rand.New(rand.NewPCG(4, 4)), now: t0}
		fb := &longWindowFeed{r: rand.New(rand.NewPCG(4, 4)), now: t0}
		feed := func(n int) {
			for range n {
				ea, eb := fa.next(), fb.next()
				a.Process(&ea, func(Incident) {})
				b.Process(&eb, func(Incident) {})
			}
		}
		for round := range 6 {
			feed(200 + 700*round) // windows inline at first, then in segments
			cut, want := cutAndTwin(t, a, b)
			// Late entries in every window, well inside what the cut holds.
			for k := range 3 {
				ev := ingest.Event{ID: fmt.Sprint("late", round, k), Time: fa.now.Add(-20 * time.Second), Node: fmt.Sprint("n", k), Source: "nomad.log", Kind: "test", Msg: "a"}
				ev2 := ev
				a.Process(&ev, func(Incident) {})
				b.Process(&ev2, func(Incident) {})
			}
			var got Checkpoint
			var err error
			if concurrent {
				done := make(chan struct{})
				go func() {
					defer close(done)
					if got, err = cut.Encode(); err != nil {
						t.Error(err)
					}
				}()
				feed(3000)
				<-done
			} else {
				feed(3000)
				if got, err = cut.Encode(); err != nil {
					t.Fatal(err)
				}
			}
			sameCheckpoint(t, fmt.Sprintf("concurrent=%v round %d", concurrent, round), got, want)
			a.Committed()
			b.Committed()
			// b's checkpoint came after a's changes: b is a's twin again
			// only once both take the changes since.
			if _, err := a.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			a.Committed()
			if _, err := b.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			b.Committed()
		}
	}
}

// TestGroupsDoNotKeepACut: a group whose entries an encoded cut shared
// does not keep the cut (and every group copy it holds) alive: left alone
// until the next cut, a fleet's groups kept a different checkpoint each
// (9 GB of heap in the sustained benchmark).
func TestGroupsDoNotKeepACut(t *testing.T) {
	set := loadRules(t)
	c, f := longWindows(set, 5, 1000)
	first, err := c.Cut()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Encode(); err != nil {
		t.Fatal(err)
	}
	c.Committed()
	w := weak.Make(first)
	first = nil
	// One node's groups change; the others are left alone.
	for range 50 {
		ev := f.next()
		ev.Node = "n0"
		c.Process(&ev, func(Incident) {})
	}
	next, err := c.Cut()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Encode(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if w.Value() != nil {
		t.Error("the first cut is still reachable after the next one was encoded")
	}
	runtime.KeepAlive(next)
}

// TestCheckpointVersions: checkpoints are written as version 3 (windows
// may be in segments); a version-2 checkpoint (every window inline) is
// read as before, and a later version is refused, not half read.
func TestCheckpointVersions(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{Logger: quietLog()})
	runSteps(c, []step{{0, "n1", "a", ""}, {time.Second, "n1", "b", ""}, {2 * time.Second, "n2", "x", ""}})
	var kv kvSim
	kv.apply(t, c)
	var m map[string]any
	if err := json.Unmarshal(kv.meta, &m); err != nil {
		t.Fatal(err)
	}
	if m["version"] != 3.0 {
		t.Fatalf("meta record version %v, want 3", m["version"])
	}
	for _, tc := range []struct {
		version int
		err     string
	}{{2, ""}, {3, ""}, {4, "unknown version 4"}} {
		m["version"] = tc.version
		meta, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		r := New(set, Options{Logger: quietLog()})
		err = r.RestoreCheckpoint(meta, maps.All(kv.items))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("version %d: %v", tc.version, err)
		case tc.err == "" && !bytes.Equal(snapshotOf(t, r), snapshotOf(t, c)):
			t.Errorf("version %d: the restored state differs", tc.version)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("version %d: error %v, want %q", tc.version, err, tc.err)
		}
	}
}
