package correlate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

const (
	linkAllocA = "5c6328f7-48c5-4d03-bada-91ef2e904d0d"
	linkAllocB = "8623ac7a-28ba-20c3-24a6-e615a39bbbf3"
	linkNodeID = "f3b8d6a2-0c1e-4d4f-9a57-2b1c8e7d6a10"
	linkUI     = "https://nomad.example.com:4646"
)

func linkEv(node, id string, fields map[string]any) Evidence {
	return Evidence{Node: node, NodeID: id, Source: "nomad.event", Fields: fields}
}

// TestNomadUILinks: the job, allocation and node pages an incident can
// name, and none it cannot.
func TestNomadUILinks(t *testing.T) {
	links := NomadUILinks(linkUI + "/")
	tests := []struct {
		name string
		in   Incident
		want map[string]string
	}{
		{"task-level group names job and namespace; the allocation of that job, the node's ID",
			Incident{Node: "vm", Group: map[string]string{"node": "vm", "fields.namespace": "prod", "fields.job": "web api", "fields.task": "srv"},
				Evidence: []Evidence{
					linkEv("vm", "", map[string]any{"alloc_id": linkAllocA, "job": "web api"}), // a log line: no node ID
					linkEv("vm", linkNodeID, map[string]any{"alloc_id": linkAllocB, "job": "web api", "namespace": "prod"}),
				}},
			map[string]string{
				"job":        linkUI + "/ui/jobs/web%20api@prod",
				"allocation": linkUI + "/ui/allocations/" + linkAllocB,
				"node":       linkUI + "/ui/clients/" + linkNodeID,
			}},
		{"a node-level incident over two jobs links the node only",
			Incident{Node: "win-7", Group: map[string]string{"node": "win-7"},
				Evidence: []Evidence{
					linkEv("win-7", linkNodeID, map[string]any{"alloc_id": linkAllocA, "job": "a"}),
					linkEv("win-7", "", map[string]any{"alloc_id": linkAllocB, "job": "b"}),
					{Node: "win-7", Source: "winevt", Msg: "Insufficient system resources"},
				}},
			map[string]string{"node": linkUI + "/ui/clients/" + linkNodeID}},
		{"one job in the evidence, namespace from it; only allocation",
			Incident{Node: "vm", Group: map[string]string{"node": "vm"},
				Evidence: []Evidence{linkEv("vm", "", map[string]any{"alloc_id": linkAllocA, "job": "batch", "namespace": "ops"})}},
			map[string]string{"job": linkUI + "/ui/jobs/batch@ops", "allocation": linkUI + "/ui/allocations/" + linkAllocA}},
		{"no namespace known: default; a short allocation ID makes no link",
			Incident{Node: "vm", Group: map[string]string{"fields.job": "j"},
				Evidence: []Evidence{linkEv("vm", "", map[string]any{"alloc_id": "5c6328f7", "job": "j"})}},
			map[string]string{"job": linkUI + "/ui/jobs/j@default"}},
		{"another node's ID is not this incident's node",
			Incident{Node: "vm", Evidence: []Evidence{linkEv("edge", linkNodeID, nil)}},
			nil},
		{"nothing known", Incident{Node: "vm", Evidence: []Evidence{{Node: "vm", Source: "nomad.log", Msg: "x"}}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := links(&tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("links\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	if NomadUILinks("") != nil {
		t.Error("links without a base")
	}
	in := Incident{Links: map[string]string{"node": "n", "zz": "z", "job": "j", "allocation": "a", "aa": "x"}}
	if got := in.LinkNames(); !reflect.DeepEqual(got, []string{"job", "allocation", "node", "aa", "zz"}) {
		t.Errorf("LinkNames %v", got)
	}
}

// TestIncidentLinks: the correlator gives every change of an incident its
// links (Options.Links), from evidence that keeps the node ID; the
// resolution keeps them, and they are in the JSON sinks receive.
func TestIncidentLinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(`rules:
  - id: t.crash
    title: "crash"
    severity: warning
    match:
      restart: msg == "restart"
    correlate:
      by: [node, fields.namespace, fields.job]
      window: 10m
      when: count("restart") >= 2
    resolve:
      after: 1m
`), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	c := New(set, Options{Links: NomadUILinks(linkUI)})
	var got []Incident
	emit := func(in Incident) { got = append(got, in) }
	t0 := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	for i := range 2 {
		e := &ingest.Event{ID: string(rune('a' + i)), Time: t0.Add(time.Duration(i) * time.Second), Node: "vm", NodeID: linkNodeID,
			Source: ingest.SourceNomadEvent, Kind: "Allocation.TaskEvent", Msg: "restart",
			Fields: map[string]any{"namespace": "default", "job": "alpha", "alloc_id": linkAllocA}}
		c.Process(e, emit)
	}
	c.Settle(t0.Add(30*time.Minute), emit)
	if len(got) < 2 || got[0].Status != StatusFiring || got[len(got)-1].Status != StatusResolved {
		t.Fatalf("changes %v", got)
	}
	want := map[string]string{
		"job":        linkUI + "/ui/jobs/alpha@default",
		"allocation": linkUI + "/ui/allocations/" + linkAllocA,
		"node":       linkUI + "/ui/clients/" + linkNodeID,
	}
	for _, in := range got {
		if !reflect.DeepEqual(in.Links, want) {
			t.Errorf("%s change: links %v, want %v", in.Status, in.Links, want)
		}
	}
	if got[0].Evidence[0].NodeID != linkNodeID {
		t.Errorf("evidence without the node ID: %+v", got[0].Evidence[0])
	}
	b, _ := json.Marshal(got[0])
	var back Incident
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Links, want) {
		t.Errorf("links through JSON: %v (%v)", back.Links, err)
	}
	// Without Options.Links, none.
	c = New(set, Options{})
	got = nil
	for i := range 2 {
		c.Process(&ingest.Event{ID: string(rune('a' + i)), Time: t0.Add(time.Duration(i) * time.Second), Node: "vm", NodeID: linkNodeID,
			Source: ingest.SourceNomadEvent, Msg: "restart", Fields: map[string]any{"job": "alpha"}}, emit)
	}
	if len(got) == 0 || got[0].Links != nil {
		t.Errorf("links without Options.Links: %v", got)
	}
}
