package durable

import (
	"testing"
	"time"
)

// TestCheckpointMeter: readiness follows the oldest held partition; a
// partition let go no longer counts, and a checkpoint reported after it
// was let go (a fenced correlator finishing one) does not bring it back.
func TestCheckpointMeter(t *testing.T) {
	var m checkpointMeter
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	if !m.fresh(t0) {
		t.Error("without partitions: not fresh")
	}
	m.hold("p0", t0)
	m.hold("p1", t0)
	m.ok("p1", t0.Add(2*time.Minute))
	if !m.fresh(t0.Add(2 * time.Minute)) {
		t.Error("both stored within the default bound: not fresh")
	}
	if m.fresh(t0.Add(2*time.Minute + time.Second)) {
		t.Error("p0 not stored for more than 2m: fresh")
	}
	if o, _ := m.oldest(); !o.Equal(t0) {
		t.Errorf("oldest %v, want p0's %v", o, t0)
	}
	m.forget("p0")
	m.ok("p0", t0) // late, from the correlator that let it go
	if !m.fresh(t0.Add(3 * time.Minute)) {
		t.Error("p0 was let go, p1 stored 1m ago: not fresh")
	}
	m.setMaxAge(30 * time.Second)
	if m.fresh(t0.Add(3 * time.Minute)) {
		t.Error("bound of 30s, p1 stored 1m ago: fresh")
	}
}
