package nomadevents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

// windowsLines is a capture whose nodes say they run Windows (the real
// agents ran Linux; nothing else changes).
func windowsLines(t *testing.T, name string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, l := range readLinesOf(t, capturePath(t, name)) {
		out = append(out, bytes.ReplaceAll(l, []byte(`"kernel.name":"linux"`), []byte(`"kernel.name":"windows"`)))
	}
	return out
}

// rawRunning computes, independently of the decoder, the allocations
// running per node name at the end of a recording: each allocation's
// newest copy (by ModifyIndex) decides.
func rawRunning(t *testing.T, lines [][]byte) map[string]int {
	t.Helper()
	type alloc struct {
		ID, NodeName, ClientStatus string
		ModifyIndex                uint64
	}
	last := map[string]alloc{}
	for _, l := range lines {
		var fr struct {
			Events []struct {
				Payload map[string]json.RawMessage
			}
		}
		if err := json.Unmarshal(l, &fr); err != nil {
			t.Fatal(err)
		}
		for _, e := range fr.Events {
			raw, ok := e.Payload["Allocation"]
			if !ok {
				continue
			}
			var a alloc
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatal(err)
			}
			if old, ok := last[a.ID]; !ok || a.ModifyIndex >= old.ModifyIndex {
				last[a.ID] = a
			}
		}
	}
	out := map[string]int{}
	for _, a := range last {
		if a.ClientStatus == "running" {
			out[a.NodeName]++
		}
	}
	return out
}

// TestRunningAllocationsCapture: on the real reconnect and crash-loop
// recordings, with the nodes made Windows, the decoder tells each change of
// a node's running count once, in order, ending at the count the payloads
// say; the recordings as they are (Linux nodes) give none.
func TestRunningAllocationsCapture(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			evs, _ := decodeAll(t, capturePath(t, name))
			for _, e := range evs {
				if e.Kind == KindRunningAllocations {
					t.Fatalf("a Linux node got %s", e.Msg)
				}
			}
			lines := windowsLines(t, name)
			want := rawRunning(t, lines)
			d := NewDecoder(DecoderConfig{})
			got := map[string]int{}
			n := 0
			for _, l := range lines {
				_ = d.Frame(l, func(e ingest.Event) {
					if e.Kind != KindRunningAllocations {
						return
					}
					n++
					run, _ := e.Fields["running"].(int)
					if prev, has := e.Fields["prev_running"]; has {
						if prev == run {
							t.Errorf("%s: count did not change: %s", e.ID, e.Msg)
						}
						if was, seen := got[e.Node]; seen && was != prev {
							t.Errorf("%s: prev_running %v, but the last event said %d", e.ID, prev, was)
						}
					}
					if e.Fields["kernel"] != "windows" || e.Node == "" || e.NodeID == "" || e.Time.IsZero() || e.Source != ingest.SourceNomadEvent {
						t.Errorf("event %+v", e)
					}
					got[e.Node] = run
				})
			}
			if n == 0 {
				t.Fatal("no running-allocation events")
			}
			for node, w := range want {
				if got[node] != w {
					t.Errorf("node %s: last event says %d running, the payloads %d", node, got[node], w)
				}
			}
			for node, g := range got {
				if want[node] != g {
					t.Errorf("node %s: last event says %d running, the payloads %d", node, g, want[node])
				}
			}
			t.Logf("%d events; running at the end: %v", n, got)
		})
	}
}

// TestRunningAllocationsRestore: the counts come back with the decoder's
// state (they are derived from the allocations in it).
func TestRunningAllocationsRestore(t *testing.T) {
	lines := windowsLines(t, "reconnect")
	run := func(d *Decoder, ls [][]byte, out *[]string) {
		for _, l := range ls {
			_ = d.Frame(l, func(e ingest.Event) {
				if e.Kind == KindRunningAllocations {
					b, _ := json.Marshal(e)
					*out = append(*out, string(b))
				}
			})
		}
	}
	var whole []string
	run(NewDecoder(DecoderConfig{}), lines, &whole)
	for cut := 1; cut < len(lines); cut += 5 {
		var parts []string
		d1 := NewDecoder(DecoderConfig{})
		run(d1, lines[:cut], &parts)
		st, err := d1.State()
		if err != nil {
			t.Fatal(err)
		}
		d2 := NewDecoder(DecoderConfig{})
		if err := d2.Restore(st); err != nil {
			t.Fatal(err)
		}
		run(d2, lines[cut:], &parts)
		if !slices.Equal(whole, parts) {
			t.Fatalf("cut %d: %d events vs %d; first difference at %d", cut, len(whole), len(parts), firstDiff(whole, parts))
		}
	}
}

func nodeFrame(index int, id, name, kernel string) string {
	return fmt.Sprintf(`{"Index":%d,"Events":[{"Topic":"Node","Type":"NodeRegistration","Key":%q,"Index":%d,"Payload":{"Node":{"ID":%q,"Name":%q,"Status":"ready","Attributes":{"kernel.name":%q,"os.name":"x","unique.hostname":%q},"StatusUpdatedAt":%d}}}]}`,
		index, id, index, id, name, kernel, name, 1795312900+index)
}

func statusFrame(index int, alloc, node, status string) string {
	return fmt.Sprintf(`{"Index":%d,"Events":[{"Topic":"Allocation","Type":"AllocationUpdated","Key":%q,"Index":%d,"Payload":{"Allocation":{"ID":%q,"JobID":"web","Namespace":"default","TaskGroup":"g","ClientStatus":%q,"DesiredStatus":"run","NodeID":%q,"ModifyIndex":%d,"ModifyTime":%d}}}]}`,
		index, alloc, index, alloc, status, node, index, 1795312900000000000+int64(index)*1e9)
}

// TestRunningAllocationsTransitions: allocations counted before the node
// is known to run Windows are told when it is; pending, complete and lost
// allocations do not count; a Linux node never gets an event.
func TestRunningAllocationsTransitions(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	var got []string
	emit := func(e ingest.Event) {
		if e.Kind == KindRunningAllocations {
			got = append(got, fmt.Sprintf("%s %v %v %s", e.Node, e.Fields["running"], e.Fields["prev_running"], e.Field("alloc_id")))
		}
	}
	for _, f := range []string{
		statusFrame(1, "a1", "n-win", "running"), // node not known yet
		nodeFrame(2, "n-win", "win-client-7", "windows"),
		nodeFrame(3, "n-lin", "linux-1", "linux"),
		statusFrame(4, "a2", "n-win", "pending"),
		statusFrame(5, "a2", "n-win", "running"),
		statusFrame(6, "l1", "n-lin", "running"),
		statusFrame(7, "a3", "n-win", "running"),
		statusFrame(7, "a3", "n-win", "running"), // repeated frame
		statusFrame(8, "a1", "n-win", "complete"),
		statusFrame(9, "a2", "n-win", "lost"),
		nodeFrame(10, "n-win", "win-client-7", "windows"), // known: nothing new
	} {
		if err := d.Frame([]byte(f), emit); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"win-client-7 1 <nil> ",
		"win-client-7 2 1 a2",
		"win-client-7 3 2 a3",
		"win-client-7 2 3 a1",
		"win-client-7 1 2 a2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n%q\nwant\n%q", got, want)
	}
}
