//go:build linux

package nomadaction

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/nomadtest"
	"github.com/klaxon-dev/klaxon/sinks"
)

// TestEligibilityAgainstNomad runs the action against the real Nomad
// 2.0.5: a dev agent (server and client "vm") and a client-only agent
// ("win-client-7"), in the default node pool.
//
//   - The dry run (the default) changes nothing and says what it would do,
//     when the incident fires and when it resolves.
//   - Armed, a firing incident (delivered by a Dispatcher from
//     KLAXON_INCIDENTS, as klaxon runs it) makes win-client-7 ineligible;
//     the record is in the bucket and on the node's events subject.
//   - vm is then the last eligible node of the pool: it is not touched.
//   - With the pool guard off, the rate limit (one node an hour) holds.
//   - The resolution makes win-client-7 eligible again.
//   - A second occurrence, after which an operator changes the node's
//     eligibility, is left as the operator set it on resolution; so is one
//     the operator made eligible by hand.
func TestEligibilityAgainstNomad(t *testing.T) {
	bin := nomadtest.Binary(t)
	dev := nomadtest.Start(t, bin, "vm", "", "")
	nomadtest.Poll(t, 60*time.Second, "the dev agent's API", func() bool {
		_, err := dev.API().Agent().Self()
		return err == nil
	})
	win := nomadtest.Start(t, bin, "win-client-7", fmt.Sprintf("127.0.0.1:%d", dev.RPC), "")
	c := dev.API()
	nodes := nomadtest.WaitReady(t, c, dev, win)
	winID, vmID := nodes["win-client-7"].ID, nodes["vm"].ID
	eligibility := func(id string) string {
		n, _, err := c.Nodes().Info(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n.SchedulingEligibility
	}
	js := startJetStream(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)

	// The dry run.
	dry, err := New(ctx, Config{}, c.Nodes(), js, discard())
	if err != nil {
		t.Fatal(err)
	}
	in := incident("inc-dry", "win-client-7", correlate.StatusFiring, t0)
	send(t, dry, in)
	if e := eligibility(winID); e != "eligible" {
		t.Fatalf("dry run changed the node: %s", e)
	}
	in.Status = correlate.StatusResolved
	send(t, dry, in)
	got := records(t, js)
	want := []string{"apply would_apply dry run: klaxon would mark node win-client-7 ineligible",
		"undo would_undo dry run: klaxon would make node win-client-7 eligible again"}
	checkRecords(t, "dry run", got, want)
	if got[0].NodeID != winID || got[0].Fields["incident_id"] != "inc-dry" || got[0].Node != "win-client-7" {
		t.Errorf("dry-run record %+v", got[0])
	}

	// Armed, through a Dispatcher on KLAXON_INCIDENTS.
	f := false
	ex, err := New(ctx, Config{DryRun: &f, MaxPerHour: 2}, c.Nodes(), js, discard())
	if err != nil {
		t.Fatal(err)
	}
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	d := sinks.NewDispatcher(js, ex, sinks.DispatcherConfig{}, discard())
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()
	a := incident("inc-a", "win-client-7", correlate.StatusFiring, t0.Add(time.Minute))
	publishIncident(t, js, a)
	nomadtest.Poll(t, 30*time.Second, "win-client-7 ineligible", func() bool { return eligibility(winID) == "ineligible" })
	nomadtest.Poll(t, 10*time.Second, "the apply record", func() bool { return len(records(t, js)) == 3 })
	rec := records(t, js)[2]
	if rec.Fields["result"] != ResultApplied || rec.Fields["dry_run"] != false || rec.Fields["modify_index"] == nil {
		t.Errorf("apply record %+v", rec)
	}
	stored, _, err := ex.st.get(ctx, "inc-a")
	if err != nil || stored == nil || stored.Result != ResultApplied || stored.NodeID != winID || !stored.Published {
		t.Fatalf("stored record %+v, %v", stored, err)
	}
	// An update of the incident does nothing more.
	a.Status, a.Seq = correlate.StatusUpdated, 2
	publishIncident(t, js, a)

	// vm is the last eligible node of the pool.
	b := incident("inc-b", "vm", correlate.StatusFiring, t0.Add(2*time.Minute))
	send(t, ex, b)
	if e := eligibility(vmID); e != "eligible" {
		t.Fatalf("the last eligible node was made %s", e)
	}
	// Without the pool guard, the rate limit (1 an hour: inc-a holds it).
	limited, err := New(ctx, Config{DryRun: &f, MaxPerHour: 1, KeepEligible: -1}, c.Nodes(), js, discard())
	if err != nil {
		t.Fatal(err)
	}
	c2 := incident("inc-c", "vm", correlate.StatusFiring, t0.Add(3*time.Minute))
	send(t, limited, c2)
	if e := eligibility(vmID); e != "eligible" {
		t.Fatalf("the rate limit let vm be made %s", e)
	}

	// The resolution undoes it.
	a.Status, a.Seq = correlate.StatusResolved, 3
	publishIncident(t, js, a)
	nomadtest.Poll(t, 30*time.Second, "win-client-7 eligible again", func() bool { return eligibility(winID) == "eligible" })
	nomadtest.Poll(t, 10*time.Second, "the undo record", func() bool { return len(records(t, js)) == 6 })
	stop()
	<-done
	checkRecords(t, "armed", records(t, js)[2:], []string{
		"apply applied klaxon marked node win-client-7 ineligible",
		"apply skipped klaxon did not mark node vm ineligible: node vm is one of the last 1 eligible nodes of node pool \"default\"",
		"apply skipped klaxon did not mark node vm ineligible: the rate limit holds: 1 node(s) made ineligible in the last hour (max_per_hour 1: win-client-7 at",
		"undo undone klaxon made node win-client-7 eligible again (the incident resolved)",
	})
	if s, _, _ := ex.st.get(ctx, "inc-a"); s != nil {
		t.Errorf("record kept after the undo: %+v", s)
	}

	// A second occurrence; an operator toggles the node meanwhile.
	a2 := incident("inc-a", "win-client-7", correlate.StatusFiring, t0.Add(10*time.Minute))
	send(t, ex, a2)
	if e := eligibility(winID); e != "ineligible" {
		t.Fatalf("second occurrence: node %s", e)
	}
	for _, el := range []bool{true, false} {
		if _, err := c.Nodes().ToggleEligibility(winID, el, nil); err != nil {
			t.Fatal(err)
		}
	}
	a2.Status = correlate.StatusResolved
	send(t, ex, a2)
	if e := eligibility(winID); e != "ineligible" {
		t.Fatalf("the undo overrode the operator: node %s", e)
	}
	// The operator made it eligible by hand before the resolution.
	if _, err := c.Nodes().ToggleEligibility(winID, true, nil); err != nil {
		t.Fatal(err)
	}
	a3 := incident("inc-a", "win-client-7", correlate.StatusFiring, t0.Add(20*time.Minute))
	dry2, err := New(ctx, Config{DryRun: &f, MaxPerHour: 5}, c.Nodes(), js, discard())
	if err != nil {
		t.Fatal(err)
	}
	send(t, dry2, a3)
	if _, err := c.Nodes().ToggleEligibility(winID, true, nil); err != nil {
		t.Fatal(err)
	}
	a3.Status = correlate.StatusResolved
	send(t, dry2, a3)
	checkRecords(t, "operator", records(t, js)[6:], []string{
		"apply applied klaxon marked node win-client-7 ineligible",
		"undo kept klaxon left node win-client-7 ineligible: its eligibility was changed since klaxon's change",
		"apply applied klaxon marked node win-client-7 ineligible",
		"undo kept klaxon left node win-client-7 ineligible: the node is eligible already (an operator made it so)",
	})
	st := ex.Stats()
	if st.Applied != 2 || st.Skipped != 1 || st.Undone != 1 || st.Kept != 1 {
		t.Errorf("stats %+v", st)
	}
}

func send(t *testing.T, ex *Executor, in correlate.Incident) {
	t.Helper()
	if r, err := ex.Send(context.Background(), in); err != nil {
		t.Fatalf("Send %s %s: %v (retryable %v)", in.ID, in.Status, err, r)
	}
}

func publishIncident(t *testing.T, js jetstream.JetStream, in correlate.Incident) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), natslayout.IncidentSubject(in.Severity, in.Rule), b, jetstream.WithMsgID(in.ChangeID())); err != nil {
		t.Fatal(err)
	}
}

// checkRecords compares "phase result message" of each record with the
// prefixes want.
func checkRecords(t *testing.T, what string, got []ingest.Event, want []string) {
	t.Helper()
	if len(got) != len(want) {
		for _, g := range got {
			t.Logf("record: %s %s %s", g.Fields["phase"], g.Fields["result"], g.Msg)
		}
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i, g := range got {
		s := fmt.Sprintf("%s %s %s", g.Fields["phase"], g.Fields["result"], g.Msg)
		if !strings.HasPrefix(s, want[i]) {
			t.Errorf("%s: record %d:\n%s\nwant prefix\n%s", what, i, s, want[i])
		}
		if g.Source != ingest.SourceAction || g.Kind != Action || g.Time.IsZero() {
			t.Errorf("%s: record %d: %+v", what, i, g)
		}
	}
}
