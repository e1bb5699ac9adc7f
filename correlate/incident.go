// Package correlate turns matched events into incidents: sliding windows per
// rule and group in event time, the `when` condition over their aggregates,
// and the incident lifecycle firing → updated → resolved.
package correlate

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Incident statuses.
const (
	StatusFiring   = "firing"
	StatusUpdated  = "updated"
	StatusResolved = "resolved"
)

// Incident is one change of an incident: what sinks receive and what
// `klaxon replay --format json` prints, one JSON object per line.
type Incident struct {
	// ID is a stable fingerprint of rule id + group key: the PagerDuty
	// dedup_key and the Alertmanager fingerprint basis.
	ID       string            `json:"id"`
	Rule     string            `json:"rule"`
	Status   string            `json:"status"`
	Severity string            `json:"severity"`
	Node     string            `json:"node"`
	Group    map[string]string `json:"group"`
	Title    string            `json:"title"`
	Summary  string            `json:"summary"`
	Runbook  string            `json:"runbook"`
	Labels   map[string]string `json:"labels"`
	// Actions are the actions the rule names (nomad.node.eligibility):
	// what an action executor (sinks/nomadaction) carries out for it.
	Actions []string `json:"actions,omitempty"`

	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	ResolvedAt *time.Time `json:"resolved_at"`
	// Count is the number of matching events since the incident started.
	Count int `json:"count"`
	// Counts are the occurrences each selector of the rule matched in the
	// window at this change (what the summary reports: restarts,
	// failures…); an occurrence several sources reported counts once.
	Counts map[string]int `json:"counts,omitempty"`
	// Seq numbers the changes of one incident occurrence (1 = firing).
	Seq int `json:"seq"`
	// Evidence holds the last matching events (capped; Count has the total).
	Evidence []Evidence `json:"evidence"`
	// Links name pages about the incident by what they show, e.g. the
	// Nomad UI's "job", "allocation" and "node" (Options.Links; see
	// NomadUILinks). Sinks show them (Alertmanager annotations <name>_url,
	// PagerDuty links, the web view).
	Links map[string]string `json:"links,omitempty"`
}

// Evidence is a matching event as kept with an incident.
type Evidence struct {
	Time   time.Time      `json:"time"`
	ID     string         `json:"id,omitempty"`
	Node   string         `json:"node,omitempty"`
	NodeID string         `json:"node_id,omitempty"`
	Source string         `json:"source"`
	Kind   string         `json:"kind"`
	Level  string         `json:"level,omitempty"`
	Msg    string         `json:"msg"`
	Fields map[string]any `json:"fields,omitempty"`
}

// ChangeID identifies this change of the incident uniquely and stably: it
// is sent as Nats-Msg-Id so that a change re-published after a crash is
// dropped as a duplicate, and sinks use it to skip changes they delivered.
func (in *Incident) ChangeID() string {
	return in.ID + ":" + strconv.FormatInt(in.StartedAt.UnixNano(), 36) + ":" + strconv.Itoa(in.Seq)
}

// markResolved makes in the change that resolves it at now.
func (in *Incident) markResolved(now time.Time) {
	in.Status = StatusResolved
	in.UpdatedAt = now
	t := now
	in.ResolvedAt = &t
	in.Seq++
}

// IncidentID is the stable fingerprint of a rule id and a group key.
func IncidentID(rule, groupKey string) string {
	h := sha256.New()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(groupKey))
	return hex.EncodeToString(h.Sum(nil)[:12])
}
