// Package natslayout is klaxon's NATS layout: the streams, subjects, KV
// buckets and subject tokens every part uses, and the codec of the events
// on KLAXON_EVENTS. Nothing else declares a name of the layout.
package natslayout

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Stream, bucket and subject names of the klaxon NATS layout (DESIGN.md).
const (
	// EventsStream holds the events of every source: klaxon.events.<source>.<node>.
	EventsStream = "KLAXON_EVENTS"
	// IncidentsStream holds incident changes: klaxon.incidents.<severity>.<rule>.
	IncidentsStream = "KLAXON_INCIDENTS"
	// DLQStream holds incidents a sink gave up on: klaxon.dlq.<sink>.
	DLQStream = "KLAXON_DLQ"
	// StateBucket is the KV bucket of correlator state snapshots.
	StateBucket = "KLAXON_STATE"
	// SilencesBucket is the KV bucket of silences.
	SilencesBucket = "KLAXON_SILENCES"
	// LeasesBucket is the KV bucket of correlator partition leases.
	LeasesBucket = "KLAXON_LEASES"
	// ActionsBucket is the KV bucket of the actions taken on incidents
	// (sinks/nomadaction): what to undo, and the rate limit's history.
	ActionsBucket = "KLAXON_ACTIONS"
	// RulesBucket is the KV bucket of the rule files the correlator runs
	// (key RulesKey), from which the sidecars' edge filters learn which
	// events some rule can use.
	RulesBucket = "KLAXON_RULES"
	// RulesKey is the key of the rule files in RulesBucket.
	RulesKey = "set"

	// EventsPrefix, IncidentsPrefix and DLQPrefix start the subjects of
	// the three streams.
	EventsPrefix    = "klaxon.events"
	IncidentsPrefix = "klaxon.incidents"
	DLQPrefix       = "klaxon.dlq"

	// EventsSubjects, IncidentsSubjects and DLQSubjects are the wildcards
	// the streams capture.
	EventsSubjects    = EventsPrefix + ".>"
	IncidentsSubjects = IncidentsPrefix + ".>"
	DLQSubjects       = DLQPrefix + ".>"
)

// EventSubject is the subject of an event: "klaxon.events.<source>.<node>".
// Source and node are each made a single subject token (see Token), so that
// "nomad.log" becomes "nomad_log" and the node is always the fourth token:
// "klaxon.events.*.<node>" selects one node's events of every source.
func EventSubject(source, node string) string {
	return EventsPrefix + "." + Token(source) + "." + Token(node)
}

// IncidentSubject is the subject of an incident change:
// "klaxon.incidents.<severity>.<rule>". Rule ids contain dots, which are
// kept as token separators; other special characters are replaced.
func IncidentSubject(severity, rule string) string {
	return IncidentsPrefix + "." + Token(severity) + "." + Tokens(rule)
}

// DLQSubject is the dead-letter subject of a sink: "klaxon.dlq.<sink>".
func DLQSubject(sink string) string {
	return DLQPrefix + "." + Token(sink)
}

// PartitionSubjects is the filter of partition p of n: every event subject
// when n < 2, else "klaxon.events.<p>.>".
func PartitionSubjects(p, n int) string {
	if n < 2 {
		return EventsSubjects
	}
	return EventsPrefix + "." + strconv.Itoa(p) + ".>"
}

// Token makes s one subject token: '.', '*', '>', white space and control
// characters become '_', and "" becomes "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	if tokenOK(s, false) {
		return s
	}
	return sanitize(s, false)
}

// Tokens makes s a dot-separated run of subject tokens: dots are kept as
// separators, empty tokens become "_", and '*', '>', white space and control
// characters become '_'.
func Tokens(s string) string {
	if s == "" {
		return "_"
	}
	if tokenOK(s, true) && s[0] != '.' && s[len(s)-1] != '.' && !strings.Contains(s, "..") {
		return s
	}
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = Token(p)
	}
	return strings.Join(parts, ".")
}

func badRune(r rune, keepDots bool) bool {
	switch r {
	case '.':
		return !keepDots
	case '*', '>', utf8.RuneError:
		return true
	}
	return r < 0x20 || r == 0x7f || unicode.IsSpace(r) || unicode.IsControl(r)
}

func tokenOK(s string, keepDots bool) bool {
	for _, r := range s {
		if badRune(r, keepDots) {
			return false
		}
	}
	return true
}

func sanitize(s string, keepDots bool) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if badRune(r, keepDots) {
			b.WriteByte('_')
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}
