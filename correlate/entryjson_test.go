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
	n, withIncident := 0, 0
	for _, rs := range c.rules {
		for _, g := range rs.groups {
			got, err := encodeGroupItem(rs.rule.ID, rs.hash, g)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(groupItem{Rule: rs.rule.ID, Hash: rs.hash, Group: g})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("group %s/%s:\n got %s\nwant %s", rs.rule.ID, g.Key, got, want)
			}
			n++
			if g.Incident != nil {
				withIncident++
			}
		}
	}
	if n < 200 || withIncident == 0 {
		t.Fatalf("%d groups compared, %d with an incident; want ≥ 200 and some", n, withIncident)
	}
}
