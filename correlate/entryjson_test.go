package correlate

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// TestEntryJSONAsReflected: the hand-written entry encoding gives the
// bytes encoding/json gives for the snapshot format, and reads back.
func TestEntryJSONAsReflected(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 456789000, time.UTC).UnixNano()
	cases := []entry{
		{T: at, Mask: 1},
		{T: at + 1, Mask: math.MaxUint64},
		{T: 0, Mask: 0},
		{T: at, Mask: 5, Distinct: []string{"a1", "", `q"<&>`}},
		{T: at, Mask: 2, J: "alloc-1", O: "task/a/b/Restarting"},
		{T: at, Mask: 3, V: []any{1.5, "x", nil, true}},
		{T: at, Mask: 3, Distinct: []string{}, V: []any{}},
		{T: at, Mask: 1, O: "uni\u2028code\x01"},
		{T: math.MinInt64, Mask: 1},
		{T: math.MaxInt64, Mask: 1},
	}
	for _, e := range cases {
		got, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		want, err := e.reflected()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("entry %+v:\n got %s\nwant %s", e, got, want)
		}
		var back entry
		if err := back.UnmarshalJSON(got); err != nil || back.T != e.T || back.Mask != e.Mask || back.J != e.J || back.O != e.O {
			t.Errorf("entry %+v read back as %+v (%v)", e, back, err)
		}
	}
}

// TestEntryListAsReflected: a window encodes as encoding/json encodes a
// []entry element by element.
func TestEntryListAsReflected(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 4, time.UTC).UnixNano()
	for _, l := range []entryList{nil, {}, {{T: at, Mask: 1}}, {{T: at, Mask: 1, O: "a<b"}, {T: at + 5, Mask: 2, Distinct: []string{"x"}, V: []any{2.5}}}} {
		got, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		if l == nil {
			want = []byte("null")
		} else {
			parts := make([][]byte, len(l))
			for i := range l {
				if parts[i], err = l[i].reflected(); err != nil {
					t.Fatal(err)
				}
			}
			want = append(append([]byte("["), bytes.Join(parts, []byte(","))...), ']')
		}
		if !bytes.Equal(got, want) {
			t.Errorf("window %+v:\n got %s\nwant %s", l, got, want)
		}
	}
}

// TestGroupItemAsReflected: a group item is encoded as encoding/json
// encodes groupItem, for every group of a scale feed.
func TestGroupItemAsReflected(t *testing.T) {
	c := New(bundledRulesT(t), Options{Logger: quietLog()})
	var next time.Time
	runFeed(c, newScaleFeed(200), 2*len(quietTemplates)*200, &next)
	n, withIncident, reused := 0, 0, 0
	for _, rs := range c.rules {
		for _, g := range rs.groups {
			// The item leaves out the rule's runbook (checkpointMeta has it).
			want := reflectedItem(t, rs.rule.ID, rs.hash, withoutRunbook(g))
			// First without encodings to reuse, then with those it made.
			enc := groupEncoder{cache: evidenceCache{}, stamp: 1, runbook: rs.rule.Runbook}
			for pass := range 2 {
				got, err := enc.groupItem(rs.rule.ID, rs.hash, g, g.valueMapOrEmpty())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("group %s/%s, pass %d:\n got %s\nwant %s", rs.rule.ID, g.Key, pass, got, want)
				}
				if pass == 1 {
					reused += enc.hits
				}
				enc.sweep()
				enc = groupEncoder{cache: enc.cache, stamp: enc.stamp + 1, runbook: rs.rule.Runbook}
			}
			n++
			if g.Incident != nil {
				withIncident++
			}
		}
	}
	if n < 200 || withIncident == 0 || reused == 0 {
		t.Fatalf("%d groups compared, %d with an incident, %d evidence encodings reused; want ≥ 200 and some", n, withIncident, reused)
	}
}

// withoutRunbook is a copy of g whose incidents have no runbook.
func withoutRunbook(g *group) *group {
	c := *g
	for _, in := range []**Incident{&c.Incident, &c.Closed} {
		if *in != nil {
			x := **in
			x.Runbook = ""
			*in = &x
		}
	}
	return &c
}

// reflectedItem is a group's item as encoding/json writes it.
func reflectedItem(t *testing.T, rule, hash string, g *group) []byte {
	t.Helper()
	gb, err := g.reflected()
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(struct {
		Rule  string          `json:"rule"`
		Hash  string          `json:"hash"`
		Group json.RawMessage `json:"group"`
	}{rule, hash, gb})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// TestGroupEncodingEveryField: a group with every optional field set (and
// with none) encodes as encoding/json encodes it, and evidence whose
// record changed under the same id is encoded again, not reused.
func TestGroupEncodingEveryField(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 456789000, time.UTC)
	ev := func(id, msg string) Evidence {
		return Evidence{Time: at, ID: id, Node: "n1", Source: "nomad.log", Kind: "k", Level: "warn", Msg: msg,
			Fields: map[string]any{"alloc_id": "a1", "n": 3.5, "html": "<&>", "nested": map[string]any{"x": []any{1.0, "y"}}}}
	}
	resolved := at.Add(time.Minute)
	inc := &Incident{ID: "i1", Rule: "r", Status: StatusFiring, Group: map[string]string{"node": "n1"},
		Labels: map[string]string{"evidence": "x"}, Summary: `"evidence":null`, StartedAt: at, UpdatedAt: at,
		Count: 2, Counts: map[string]int{"a": 2}, Seq: 1, Evidence: []Evidence{ev("e1", "one"), ev("e2", "two")},
		Links: map[string]string{"job": "http://x"}}
	full := &group{groupState: groupState{
		Key: "k1", Entries: entryList{{T: at.UnixNano(), Mask: 3, Distinct: []string{"a"}, V: []any{1.5}}},
		Counts: []int{1, 2}, LastMatch: at, Incident: inc, Pending: true, Evidence: inc.Evidence, Node: "n1",
		Suppressed: true, Abs: &absState{Await: []time.Time{at}, From: at, At: at}, TL: &timeline{EvalAt: at, Active: at},
		Carry: []carried{{T: 5, V: "v"}}, Acts: []Evidence{ev("a1", "act")},
		Closed:      &Incident{ID: "i0", Status: StatusResolved, ResolvedAt: &resolved, Evidence: []Evidence{ev("e0", "zero")}},
		PrevStarted: at,
	}}
	empty := &group{groupState: groupState{Key: "k2", Evidence: []Evidence{}}}
	for _, g := range []*group{full, empty, {}} {
		want := reflectedItem(t, "r", "h", g)
		enc := groupEncoder{cache: evidenceCache{}, stamp: 1}
		for pass := range 2 {
			got, err := enc.groupItem("r", "h", g, g.valueMapOrEmpty())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("group %q, pass %d:\n got %s\nwant %s", g.Key, pass, got, want)
			}
			enc.sweep()
			enc = groupEncoder{cache: enc.cache, stamp: enc.stamp + 1}
		}
	}
	// A record under an id already encoded, with other content: encoded anew.
	enc := groupEncoder{cache: evidenceCache{}, stamp: 1}
	if _, err := enc.groupItem("r", "h", full, full.valueMapOrEmpty()); err != nil {
		t.Fatal(err)
	}
	full.Evidence = []Evidence{ev("e1", "changed"), ev("e2", "two")}
	full.Evidence[1].Fields = map[string]any{"alloc_id": "other"}
	enc.sweep()
	enc = groupEncoder{cache: enc.cache, stamp: 2}
	got, err := enc.groupItem("r", "h", full, full.valueMapOrEmpty())
	if err != nil {
		t.Fatal(err)
	}
	if want := reflectedItem(t, "r", "h", full); !bytes.Equal(got, want) {
		t.Fatalf("changed evidence:\n got %s\nwant %s", got, want)
	}
}

// FuzzJSONString: appendJSONString writes what encoding/json writes for
// any string (the seeds: those it quotes as they are, and each kind it
// hands to encoding/json).
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "task/64c68057-d391-9179-dc95-ef48e88f7d5d/app/Restarting", `q"`, `a\b`, "<&>", "\x00\x1f\x7f", "é", "\u2028", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	})
}
