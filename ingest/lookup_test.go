package ingest

import "testing"

func TestLookup(t *testing.T) {
	ev := Event{ID: "i", Node: "vm", Source: "nomad.event", Kind: "Allocation.AllocationUpdated", Msg: "m",
		Fields: map[string]any{"prev_node": "win-client-2", "empty": "", "n": 3, "b": true}}
	tests := []struct {
		path string
		want string
		ok   bool
	}{
		{"node", "vm", true},
		{"node_id", "", false},
		{"fields.prev_node", "win-client-2", true},
		{"fields.n", "3", true},
		{"fields.b", "true", true},
		{"fields.missing", "", false},
		{"fields.prev_node|node", "win-client-2", true},
		{"fields.missing|node", "vm", true},
		{"fields.empty|node", "vm", true},
		{"fields.missing|fields.other", "", false},
	}
	for _, tc := range tests {
		got, ok := ev.LookupFirst(tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("LookupFirst(%q) = %q %v, want %q %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	for path, valid := range map[string]bool{"node": true, "fields.x": true, "fields.": false, "host": false,
		"fields.prev_node|node": true, "fields.x|host": false, "": false} {
		if ValidPaths(path) != valid {
			t.Errorf("ValidPaths(%q) != %v", path, valid)
		}
	}
}
