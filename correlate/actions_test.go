package correlate

import (
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// actionEv is a record as sinks/nomadaction publishes it.
func actionEv(in Incident, phase, result string, at time.Time) *ingest.Event {
	return &ingest.Event{
		ID: "action:" + in.ID + ":" + phase, Time: at, Node: in.Node, NodeID: "node-uuid",
		Source: ingest.SourceAction, Kind: "nomad.node.eligibility", Level: ingest.LevelWarn,
		Msg: "klaxon " + phase + " " + result,
		Fields: map[string]any{
			"incident_id": in.ID, "rule": in.Rule, "group": map[string]any{"node": in.Node},
			"started_at": in.StartedAt.Format(time.RFC3339Nano), "phase": phase, "result": result, "dry_run": false,
		},
	}
}

// TestActionRecords: the record of the action taken when an incident
// fired joins its evidence in an update sent at once, and stays in the
// evidence of later changes however many events follow; the record of the
// undo after the resolution is a follow-up of the resolved change (the
// next seq); a record repeated or about an unknown incident changes
// nothing.
func TestActionRecords(t *testing.T) {
	set := gaugeSet(t, gaugeRules)
	c := New(set, Options{Logger: quietLog(), MaxEvidence: 3})
	var got []Incident
	emit := func(in Incident) { got = append(got, in) }
	c.Process(loadEv(0, 0, "w1", 20), emit)
	if len(got) != 1 {
		t.Fatalf("not fired: %v", got)
	}
	fired := got[0]
	c.Process(actionEv(fired, "apply", "applied", t0.Add(10*time.Second)), emit)
	if len(got) != 2 {
		t.Fatalf("no update for the record: %d changes", len(got))
	}
	up := got[1]
	if up.Status != StatusUpdated || up.Seq != 2 || up.ID != fired.ID {
		t.Errorf("update %+v", up)
	}
	if n := len(up.Evidence); n != 2 || up.Evidence[1].Source != ingest.SourceAction || up.Evidence[1].Fields["result"] != "applied" {
		t.Errorf("evidence %+v", up.Evidence)
	}
	// Published again (a retry): nothing.
	c.Process(actionEv(fired, "apply", "applied", t0.Add(10*time.Second)), emit)
	if len(got) != 2 {
		t.Errorf("a repeated record made a change")
	}
	// More events than MaxEvidence: the record stays.
	for i := 1; i <= 5; i++ {
		c.Process(loadEv(i, time.Duration(i)*m, "w1", 20+i), emit)
	}
	c.Flush(emit)
	last := got[len(got)-1]
	if ev := last.Evidence[len(last.Evidence)-1]; ev.Source != ingest.SourceAction || len(last.Evidence) != 4 {
		t.Errorf("record pushed out of the evidence: %+v", last.Evidence)
	}
	// Resolution, then the undo's record.
	c.Process(loadEv(9, 10*m, "w1", 3), emit)
	c.Settle(t0.Add(20*m), emit)
	res := got[len(got)-1]
	if res.Status != StatusResolved {
		t.Fatalf("not resolved: %+v", res)
	}
	n := len(got)
	c.Process(actionEv(res, "undo", "undone", t0.Add(20*m+time.Second)), emit)
	if len(got) != n+1 {
		t.Fatalf("no follow-up for the undo")
	}
	fu := got[n]
	if fu.Status != StatusResolved || fu.Seq != res.Seq+1 || fu.ChangeID() == res.ChangeID() ||
		fu.Evidence[len(fu.Evidence)-1].Fields["result"] != "undone" {
		t.Errorf("follow-up %+v", fu)
	}
	// A new occurrence starts without the old records.
	c.Process(loadEv(10, 30*m, "w1", 22), emit)
	again := got[len(got)-1]
	if again.Status != StatusFiring || !again.StartedAt.After(fired.StartedAt) {
		t.Fatalf("second occurrence %+v", again)
	}
	for _, ev := range again.Evidence {
		if ev.Source == ingest.SourceAction {
			t.Errorf("old record in a new occurrence: %+v", ev)
		}
	}
	// The old occurrence's records no longer attach to anything new.
	n = len(got)
	c.Process(actionEv(fired, "undo", "undone", t0.Add(31*m)), emit)
	c.Process(actionEv(Incident{ID: "nope", Rule: "heap.pressure", Node: "w9", StartedAt: t0}, "apply", "applied", t0.Add(31*m)), emit)
	if len(got) != n || c.Stats().ActionsUnmatched != 1 {
		t.Errorf("stray records: %d changes, %d unmatched", len(got)-n, c.Stats().ActionsUnmatched)
	}
}
