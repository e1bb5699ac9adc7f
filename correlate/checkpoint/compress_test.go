package checkpoint

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
)

// TestItemsStoredCompressed: group items are written zstd-compressed (the
// header says so), far smaller than their JSON, and read back the same.
func TestItemsStoredCompressed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "z", Options{})
	feed(0, 2000, 50, c)
	st, err := s.Save(ctx, c, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if st.Raw < 3*st.Bytes {
		t.Fatalf("%d bytes of items stored as %d: not compressed", st.Raw, st.Bytes)
	}
	compressed := 0
	for _, k := range e.keys(t, "z.i") {
		v, err := e.kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		hdr, payload, err := splitRecord(v.Value())
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Z {
			compressed++
			if bytes.HasPrefix(payload, []byte("{")) {
				t.Fatalf("%s: record says compressed, payload is JSON", k)
			}
		}
	}
	if compressed == 0 {
		t.Fatal("no record is marked compressed")
	}
	_, c2, seq := e.load(t, "z", Options{})
	if seq != 2000 {
		t.Fatalf("seq %d, want 2000", seq)
	}
	sameState(t, "compressed", c, c2)
}

// TestUncompressedRecordsRead: a state written before items were
// compressed is read, and carried on by compressed checkpoints.
func TestUncompressedRecordsRead(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "old", Options{})
	s.uncompressed = true
	feed(0, 1000, 50, c)
	st, err := s.Save(ctx, c, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes < st.Raw {
		t.Fatalf("uncompressed save: %d bytes of items stored as %d", st.Raw, st.Bytes)
	}
	for _, k := range e.keys(t, "old.i") {
		v, err := e.kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if hdr, _, err := splitRecord(v.Value()); err != nil || hdr.Z {
			t.Fatalf("%s: an uncompressed save wrote %q (%v)", k, v.Value()[:min(80, len(v.Value()))], err)
		}
	}
	s2, c2, _ := e.load(t, "old", Options{})
	sameState(t, "uncompressed records", c, c2)
	feed(1000, 1500, 50, c, c2) // some groups now compressed, some not
	if _, err := s2.Save(ctx, c2, 1500); err != nil {
		t.Fatal(err)
	}
	_, c3, seq := e.load(t, "old", Options{})
	if seq != 1500 {
		t.Fatalf("seq %d, want 1500", seq)
	}
	sameState(t, "mixed records", c, c3)
}

// TestDamagedCompressedRecord: a compressed record that does not
// decompress fails the load with the item's id, nothing is claimed.
func TestDamagedCompressedRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, c, _ := e.load(t, "bad", Options{})
	feed(0, 1000, 5, c)
	if _, err := s.Save(ctx, c, 1000); err != nil {
		t.Fatal(err)
	}
	var key string
	var hdr header
	for _, k := range e.keys(t, "bad.i") {
		v, err := e.kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if h, payload, err := splitRecord(v.Value()); err == nil && h.Z && h.Chunks == 0 {
			key, hdr = k, h
			damaged := append(bytes.Clone(v.Value()[:len(v.Value())-len(payload)]), payload[:len(payload)/2]...)
			if _, err := e.kv.Put(ctx, k, damaged); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if key == "" {
		t.Fatal("no compressed record to damage")
	}
	before, _ := e.kv.Get(ctx, "bad")
	_, err := e.store(t, "bad", Options{}).Load(ctx, e.correlator())
	if err == nil || !strings.Contains(err.Error(), strconv.Quote(hdr.ID)) {
		t.Fatalf("load of a damaged record: %v; want an error naming item %q", err, hdr.ID)
	}
	after, _ := e.kv.Get(ctx, "bad")
	if after.Revision() != before.Revision() {
		t.Fatal("a failed load claimed the state")
	}
}
