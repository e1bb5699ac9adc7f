package ingest

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestIdentity(t *testing.T) {
	m := NewIdentity()
	m.Learn("id-vm", "vm", "vm")
	// A second agent on the same machine: unique.hostname is "vm" too.
	m.Learn("id-w2", "win-client-2", "vm")
	m.Learn("id-w7", "WIN-CLIENT-7", "WIN-CLIENT-7.corp.example", "10.0.0.7")
	tests := []struct{ in, want string }{
		{"vm", "vm"},
		{"win-client-2", "win-client-2"},
		{"win-client-7.CORP.example", "win-client-7"},
		{"10.0.0.7", "win-client-7"},
		{"unknown.example.com", "unknown"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := m.Resolve(tc.in); got != tc.want {
			t.Errorf("Resolve(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if n, ok := m.NameOf("id-w2"); !ok || n != "win-client-2" {
		t.Errorf("NameOf(id-w2) = %q %v", n, ok)
	}
	if _, ok := m.NameOf("nope"); ok {
		t.Error("unknown id resolved")
	}
	var nilMap *Identity
	if nilMap.Resolve("A.b") != "a" {
		t.Error("nil map must still canonicalise")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, got := range []string{s.String(), s.GoString(), s.LogValue().String()} {
		if got != "<secret>" {
			t.Errorf("printed %q", got)
		}
	}
	b, _ := json.Marshal(struct{ S Secret }{s})
	if strings.Contains(string(b), "hunter2") || s.Reveal() != "hunter2" {
		t.Errorf("json %s reveal %s", b, s.Reveal())
	}
}
