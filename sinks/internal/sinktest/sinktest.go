// Package sinktest holds test helpers shared by the sink packages: a real
// embedded NATS server with the klaxon streams, and publishing changes.
package sinktest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/natstest"
)

// StartJetStream runs an embedded NATS server with JetStream and the
// KLAXON_INCIDENTS and KLAXON_DLQ streams.
func StartJetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := natstest.Start(t)
	natstest.CreateStreams(t, js, jetstream.StreamConfig{}, map[string]string{
		natslayout.IncidentsStream: natslayout.IncidentsSubjects, natslayout.DLQStream: natslayout.DLQSubjects,
	})
	return nc, js
}

// Publish stores one incident change as the correlator does.
func Publish(t testing.TB, js jetstream.JetStream, in correlate.Incident) {
	t.Helper()
	b, _ := json.Marshal(in)
	msg := nats.NewMsg(natslayout.IncidentSubject(in.Severity, in.Rule))
	msg.Data = b
	msg.Header.Set(nats.MsgIdHdr, in.ChangeID())
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// Lifecycle returns the firing, updated…, resolved changes of one incident.
func Lifecycle(id, node string, updates int) []correlate.Incident {
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	var out []correlate.Incident
	n := updates + 2
	for s := 1; s <= n; s++ {
		st := correlate.StatusUpdated
		switch s {
		case 1:
			st = correlate.StatusFiring
		case n:
			st = correlate.StatusResolved
		}
		in := correlate.Incident{
			ID: id, Rule: "nomad.windows.desktop_heap_exhaustion", Status: st, Severity: "critical", Node: node,
			Group: map[string]string{"node": node, "fields.task": "web"}, Title: "Desktop heap exhaustion on " + node,
			Summary: "24 allocations failed", Runbook: "Raise the third SharedSection value to 4096 and reboot.",
			Labels:    map[string]string{"component": "windows", "runbook_url": "https://runbooks.example/heap"},
			StartedAt: t0, UpdatedAt: t0.Add(time.Duration(s) * time.Minute), Count: 10 * s, Seq: s,
			Evidence: []correlate.Evidence{{Time: t0, Source: "winevt", Kind: "Srv/2020", Msg: "Insufficient system resources exist"}},
		}
		if st == correlate.StatusResolved {
			r := in.UpdatedAt
			in.ResolvedAt = &r
		}
		out = append(out, in)
	}
	return out
}

// WaitFor polls cond until it holds or timeout passes.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
