// Package sinktest holds test helpers shared by the sink packages: a real
// embedded NATS server with the klaxon streams, and publishing changes.
package sinktest

import (
	"context"
	"encoding/json"
	"sync"
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

// Run runs r (a sink's dispatcher) until stop is called or the test ends;
// stop cancels it and waits for its Run to return.
func Run(t testing.TB, r interface{ Run(context.Context) error }) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Error("dispatcher did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// PublishLifecycles publishes the lifecycle of each incident of ids (see
// Lifecycle) on node "node-<id>".
func PublishLifecycles(t testing.TB, js jetstream.JetStream, ids []string, updates int) {
	t.Helper()
	for _, id := range ids {
		for _, in := range Lifecycle(id, "node-"+id, updates) {
			Publish(t, js, in)
		}
	}
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
