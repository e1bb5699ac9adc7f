package ingest

import (
	"strings"
	"sync"
)

// Identity maps the names one machine goes by (Nomad node ID, Nomad node
// name, host name or FQDN of its Windows computer) to one canonical node
// name, so that log lines, stream events and Windows events of one machine
// correlate under one Event.Node. It is safe for concurrent use.
type Identity struct {
	mu     sync.RWMutex
	byID   map[string]string // node ID -> canonical name
	byHost map[string]string // canonical host -> canonical name
	names  map[string]bool   // canonical names of known nodes
}

// NewIdentity returns an empty map.
func NewIdentity() *Identity {
	return &Identity{byID: map[string]string{}, byHost: map[string]string{}, names: map[string]bool{}}
}

// CanonicalHost lower-cases a host name and cuts its domain:
// "WIN-CLIENT-7.corp.example" → "win-client-7". IP addresses are kept whole.
func CanonicalHost(host string) string {
	h := strings.ToLower(strings.TrimSpace(host))
	if h == "" {
		return ""
	}
	if isIPv4(h) || strings.Contains(h, ":") {
		return h
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return h
}

func isIPv4(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c < '0' || c > '9':
			return false
		}
	}
	return dots == 3
}

// Learn records that the node with Nomad ID id is named name, and that hosts
// (e.g. unique.hostname, a Windows computer name) are the same machine. Empty
// values are ignored.
func (m *Identity) Learn(id, name string, hosts ...string) {
	name = CanonicalHost(name)
	if name == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if id != "" {
		m.byID[id] = name
	}
	m.byHost[name] = name
	m.names[name] = true
	for _, h := range hosts {
		// A host that is itself the name of a node stays that node: two
		// agents on one machine share unique.hostname but not their names.
		if h = CanonicalHost(h); h != "" && !m.names[h] {
			m.byHost[h] = name
		}
	}
}

// NameOf returns the canonical name of the node with the given Nomad ID.
func (m *Identity) NameOf(id string) (string, bool) {
	if m == nil || id == "" {
		return "", false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, ok := m.byID[id]
	return n, ok
}

// Resolve returns the canonical node name for a host name, falling back to
// the canonical form of host itself.
func (m *Identity) Resolve(host string) string {
	h := CanonicalHost(host)
	if m == nil || h == "" {
		return h
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if n, ok := m.byHost[h]; ok {
		return n
	}
	return h
}
