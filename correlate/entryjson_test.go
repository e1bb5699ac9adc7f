package correlate

import (
	"bytes"
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
