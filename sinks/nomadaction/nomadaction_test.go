package nomadaction

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/natstest"
)

// startJetStream runs a real embedded NATS server with JetStream and the
// streams the executor reads and writes.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Start(t)
	natstest.CreateStreams(t, js, jetstream.StreamConfig{Duplicates: 2 * time.Minute}, map[string]string{
		natslayout.EventsStream:    natslayout.EventsSubjects,
		natslayout.IncidentsStream: natslayout.IncidentsSubjects,
		natslayout.DLQStream:       natslayout.DLQSubjects,
	})
	return js
}
func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// records reads the action events published so far.
func records(t *testing.T, js jetstream.JetStream) []ingest.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []ingest.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if !strings.HasPrefix(m.Subject, "klaxon.events.klaxon_action.") {
			continue
		}
		ev, err := natslayout.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func incident(id, node string, status string, started time.Time) correlate.Incident {
	return correlate.Incident{
		ID: id, Rule: "nomad.windows.desktop_heap_pressure", Status: status, Severity: "warning", Node: node,
		Group: map[string]string{"node": node}, StartedAt: started, UpdatedAt: started, Seq: 1,
		Actions: []string{Action},
	}
}

func TestChangedSince(t *testing.T) {
	ev := func(msg string, idx uint64) *api.NodeEvent {
		return &api.NodeEvent{Message: msg, Subsystem: "Cluster", CreateIndex: idx}
	}
	for _, c := range []struct {
		name string
		n    api.Node
		keep bool
	}{
		{"ours is the latest", api.Node{SchedulingEligibility: "ineligible", ModifyIndex: 40,
			Events: []*api.NodeEvent{ev("Node registered", 10), ev("Node marked as ineligible for scheduling", 30), ev("Node heartbeat missed", 40)}}, false},
		{"eligible again", api.Node{SchedulingEligibility: "eligible", ModifyIndex: 30}, true},
		{"toggled since", api.Node{SchedulingEligibility: "ineligible", ModifyIndex: 50,
			Events: []*api.NodeEvent{ev("Node marked as ineligible for scheduling", 30), ev("Node marked as eligible for scheduling", 45), ev("Node marked as ineligible for scheduling", 50)}}, true},
		{"draining", api.Node{SchedulingEligibility: "ineligible", ModifyIndex: 30, DrainStrategy: &api.DrainStrategy{}}, true},
		{"events gone, unchanged", api.Node{SchedulingEligibility: "ineligible", ModifyIndex: 30}, false},
		{"events gone, changed", api.Node{SchedulingEligibility: "ineligible", ModifyIndex: 31}, true},
	} {
		why := changedSince(&c.n, 30)
		if (why != "") != c.keep {
			t.Errorf("%s: %q", c.name, why)
		}
	}
}

func TestFindNode(t *testing.T) {
	stubs := []*api.NodeListStub{
		{ID: "1", Name: "win-client-7", Status: "down", CreateIndex: 5},
		{ID: "2", Name: "WIN-CLIENT-7.corp.example", Status: "ready", CreateIndex: 3},
		{ID: "3", Name: "win-client-8", Status: "ready", CreateIndex: 9},
	}
	if n := findNode(stubs, "win-client-7", ""); n == nil || n.ID != "2" {
		t.Errorf("by name: %+v", n)
	}
	if n := findNode(stubs, "win-client-7", "1"); n == nil || n.ID != "1" {
		t.Errorf("by id: %+v", n)
	}
	if n := findNode(stubs, "win-client-9", ""); n != nil {
		t.Errorf("unknown: %+v", n)
	}
}

func TestNotNamedIsIgnored(t *testing.T) {
	js := startJetStream(t)
	ex, err := New(context.Background(), Config{}, nil, js, discard())
	if err != nil {
		t.Fatal(err)
	}
	in := incident("x", "win-1", correlate.StatusFiring, time.Now())
	in.Actions = nil
	if r, err := ex.Send(context.Background(), in); err != nil || r {
		t.Fatalf("Send: %v %v", r, err)
	}
	if got := records(t, js); len(got) != 0 {
		t.Errorf("records %v", got)
	}
}
