// Package nomadaction is klaxon's guarded hand on the Nomad scheduler: the
// action nomad.node.eligibility marks the node of an incident ineligible
// (Nomad places nothing more on it, what runs there keeps running) when an
// incident of a rule that names the action fires, and makes it eligible
// again when the incident resolves, unless an operator changed the node's
// eligibility since.
//
// It runs as a sink: the Executor implements sinks.Sink and is fed by a
// sinks.Dispatcher with its own durable consumer on KLAXON_INCIDENTS (per
// incident ordering, retries with back-off, dead letters). Guards:
//
//   - off unless configured, and a dry run by default: the record says what
//     would have been done and nothing is;
//   - at most MaxPerHour nodes in a rolling hour, over every replica (the
//     history is in the KLAXON_ACTIONS bucket, written with compare-and-set);
//   - never one of the last KeepEligible eligible, ready nodes of the node's
//     pool or of its class;
//   - the undo only when the node is still ineligible and its latest
//     eligibility change is klaxon's own (Nomad's node events say who
//     changed it last, by raft index), and the node is not draining.
//
// Every action and its result is a Record, kept in the bucket until the
// undo and published as an event of source klaxon.action on the node's
// events subject: the correlator puts it in the incident's evidence and
// sends an update (after a resolution, a follow-up of the resolved
// change), so that every sink shows what was done.
package nomadaction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Action is the name rules give the action (`actions: [nomad.node.eligibility]`).
const Action = "nomad.node.eligibility"

// Defaults of Config.
const (
	DefaultMaxPerHour   = 1
	DefaultKeepEligible = 1
)

// Config configures the Executor.
type Config struct {
	// DryRun records what would be done and does nothing (default true).
	DryRun *bool
	// MaxPerHour is how many nodes it makes ineligible in a rolling hour
	// at most (default 1). A dry run counts what it would have done.
	MaxPerHour int
	// KeepEligible is how many other eligible, ready, not draining nodes
	// must stay in the node's pool and in its node class (default 1): the
	// last ones are never touched.
	KeepEligible int
	// Undo makes the node eligible again when the incident resolves
	// (default true).
	Undo *bool
	// Replicas of the KLAXON_ACTIONS bucket when it is created (default 1).
	Replicas int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// SetDefaults fills the zero values.
func (c *Config) SetDefaults() {
	if c.DryRun == nil {
		t := true
		c.DryRun = &t
	}
	if c.Undo == nil {
		t := true
		c.Undo = &t
	}
	if c.MaxPerHour <= 0 {
		c.MaxPerHour = DefaultMaxPerHour
	}
	if c.KeepEligible < 0 {
		c.KeepEligible = 0
	} else if c.KeepEligible == 0 {
		c.KeepEligible = DefaultKeepEligible
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Nodes is the part of Nomad's node API the action uses; *api.Nodes
// implements it.
type Nodes interface {
	List(q *api.QueryOptions) ([]*api.NodeListStub, *api.QueryMeta, error)
	Info(nodeID string, q *api.QueryOptions) (*api.Node, *api.QueryMeta, error)
	ToggleEligibility(nodeID string, eligible bool, q *api.WriteOptions) (*api.NodeEligibilityUpdateResponse, error)
}

// Stats count what the executor did.
type Stats struct {
	Applied, WouldApply, Skipped, Failed, Undone, WouldUndo, Kept uint64
}

// Executor carries out the nomad.node.eligibility action of incidents. It
// implements sinks.Sink.
type Executor struct {
	cfg   Config
	nodes Nodes
	js    jetstream.JetStream
	st    *store
	log   *slog.Logger

	applied, wouldApply, skipped, failed, undone, wouldUndo, kept atomic.Uint64
}

// New returns an Executor that changes nodes through nodes and keeps its
// records in the KLAXON_ACTIONS bucket of js (created when missing).
func New(ctx context.Context, cfg Config, nodes Nodes, js jetstream.JetStream, log *slog.Logger) (*Executor, error) {
	cfg.SetDefaults()
	if log == nil {
		log = slog.Default()
	}
	st, err := openStore(ctx, js, cfg.Replicas, "node_eligibility")
	if err != nil {
		return nil, err
	}
	return &Executor{cfg: cfg, nodes: nodes, js: js, st: st, log: log.With("action", Action)}, nil
}

// SinkName is the Executor's name as a sink (its consumer is
// sink_action_nomad_node_eligibility; its dead letters
// klaxon.dlq.action_nomad_node_eligibility).
const SinkName = "action_nomad_node_eligibility"

// Name implements sinks.Sink.
func (e *Executor) Name() string { return SinkName }

// Close implements sinks.Sink.
func (e *Executor) Close() error { return nil }

// Stats returns the counters.
func (e *Executor) Stats() Stats {
	return Stats{
		Applied: e.applied.Load(), WouldApply: e.wouldApply.Load(), Skipped: e.skipped.Load(), Failed: e.failed.Load(),
		Undone: e.undone.Load(), WouldUndo: e.wouldUndo.Load(), Kept: e.kept.Load(),
	}
}

// Names reports whether the incident's rule names the action.
func Names(in correlate.Incident) bool { return slices.Contains(in.Actions, Action) }

// Send implements sinks.Sink: on a firing (or updated) change of an
// incident whose rule names the action, and that has no record yet, it
// applies the action; on its resolution it undoes it. A failure to reach
// Nomad or NATS is retryable; the dispatcher tries again, and a retry
// finds the record where the last attempt left it.
func (e *Executor) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	if !Names(in) {
		return false, nil
	}
	rec, rev, err := e.st.get(ctx, in.ID)
	if err != nil {
		return true, err
	}
	if rec != nil && !rec.Started.Equal(in.StartedAt) && rec.Started.Before(in.StartedAt) {
		// A record of an earlier occurrence whose resolution never came
		// through (dead-lettered): undo it first.
		prev := in
		prev.StartedAt, prev.Status = rec.Started, correlate.StatusResolved
		if r, err := e.resolve(ctx, prev, rec, rev); err != nil {
			return r, err
		}
		rec, rev = nil, 0
	}
	if in.Status == correlate.StatusResolved {
		if rec == nil || !rec.Started.Equal(in.StartedAt) {
			return false, nil
		}
		return e.resolve(ctx, in, rec, rev)
	}
	if rec != nil && rec.Started.Equal(in.StartedAt) {
		if rec.Published {
			return false, nil
		}
		return e.finishApply(ctx, in, rec, rev)
	}
	return e.apply(ctx, in)
}

// apply runs the guards and the action for a firing incident.
func (e *Executor) apply(ctx context.Context, in correlate.Incident) (bool, error) {
	now := e.cfg.Now()
	rec := &Record{Action: Action, Phase: PhaseApply, Incident: in.ID, Rule: in.Rule, Started: in.StartedAt,
		Node: in.Node, DryRun: *e.cfg.DryRun, At: now}
	skip := func(format string, args ...any) (bool, error) {
		rec.Result, rec.Reason = ResultSkipped, fmt.Sprintf(format, args...)
		return e.finishApply(ctx, in, rec, 0)
	}
	if in.Node == "" {
		return skip("the incident names no node")
	}
	stubs, _, err := e.nodes.List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return retryable(err), fmt.Errorf("list nodes: %w", err)
	}
	node := findNode(stubs, in.Node, nodeIDOf(in))
	if node == nil {
		return skip("Nomad knows no node named %s", in.Node)
	}
	rec.NodeID = node.ID
	if node.SchedulingEligibility == api.NodeSchedulingIneligible {
		return skip("node %s is ineligible already (someone else made it so; klaxon will not undo it)", in.Node)
	}
	if why := e.lastEligible(stubs, node); why != "" {
		return skip("%s", why)
	}
	ok, holders, err := e.st.reserve(ctx, change{Node: in.Node, Incident: in.ID, DryRun: rec.DryRun, At: now}, e.cfg.MaxPerHour, time.Hour, now)
	if err != nil {
		return true, fmt.Errorf("rate limit: %w", err)
	}
	if !ok {
		names := make([]string, len(holders))
		for i, h := range holders {
			names[i] = h.Node + " at " + h.At.UTC().Format(time.RFC3339)
		}
		return skip("the rate limit holds: %d node(s) made ineligible in the last hour (max_per_hour %d: %s)",
			len(holders), e.cfg.MaxPerHour, strings.Join(names, ", "))
	}
	if rec.DryRun {
		rec.Result = ResultWouldApply
		rec.Reason = "dry run (actions.nomad_node_eligibility.dry_run: true): nothing was changed"
		return e.finishApply(ctx, in, rec, 0)
	}
	resp, err := e.nodes.ToggleEligibility(node.ID, false, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		if retryable(err) {
			return true, fmt.Errorf("mark node %s ineligible: %w", in.Node, err)
		}
		_ = e.st.release(ctx, in.ID)
		rec.Result, rec.Reason = ResultFailed, "Nomad refused: "+err.Error()
		return e.finishApply(ctx, in, rec, 0)
	}
	rec.Result = ResultApplied
	rec.ModifyIndex = writeIndex(resp)
	return e.finishApply(ctx, in, rec, 0)
}

// finishApply stores the record (those the resolution undoes), publishes
// it and marks it published.
func (e *Executor) finishApply(ctx context.Context, in correlate.Incident, rec *Record, rev uint64) (bool, error) {
	var err error
	if rec.needsUndo() && rev == 0 {
		if rev, err = e.st.put(ctx, rec, 0); err != nil {
			// The change is made: a retry must find it, not make it again.
			return true, fmt.Errorf("store the record: %w", err)
		}
	}
	if err := e.publish(ctx, in, rec); err != nil {
		return true, err
	}
	if rec.needsUndo() {
		rec.Published = true
		if _, err := e.st.put(ctx, rec, rev); err != nil {
			e.log.Warn("record published but not marked so; an update of the incident may publish it again", "incident", in.ID, "err", err)
		}
	}
	e.count(rec)
	e.logRecord(rec)
	return false, nil
}

// resolve undoes the action of an incident that resolved.
func (e *Executor) resolve(ctx context.Context, in correlate.Incident, applied *Record, rev uint64) (bool, error) {
	if !applied.needsUndo() {
		return false, e.st.drop(ctx, in.ID)
	}
	rec := &Record{Action: Action, Phase: PhaseUndo, Incident: in.ID, Rule: in.Rule, Started: applied.Started,
		Node: applied.Node, NodeID: applied.NodeID, DryRun: applied.DryRun, At: e.cfg.Now()}
	switch {
	case !*e.cfg.Undo:
		rec.Result, rec.Reason = ResultKept, "undo is off (actions.nomad_node_eligibility.undo: false): make it eligible by hand"
	case applied.DryRun:
		rec.Result, rec.Reason = ResultWouldUndo, "dry run: nothing was changed"
	default:
		n, _, err := e.nodes.Info(applied.NodeID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil && statusOf(err) == 404 {
			rec.Result, rec.Reason = ResultKept, "Nomad no longer knows the node"
			break
		}
		if err != nil {
			return retryable(err), fmt.Errorf("read node %s: %w", applied.Node, err)
		}
		if why := changedSince(n, applied.ModifyIndex); why != "" {
			rec.Result, rec.Reason = ResultKept, why
			break
		}
		resp, err := e.nodes.ToggleEligibility(applied.NodeID, true, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			if retryable(err) {
				return true, fmt.Errorf("mark node %s eligible: %w", applied.Node, err)
			}
			rec.Result, rec.Reason = ResultFailed, "Nomad refused: "+err.Error()
			break
		}
		rec.Result, rec.ModifyIndex = ResultUndone, writeIndex(resp)
	}
	if err := e.publish(ctx, in, rec); err != nil {
		return true, err
	}
	e.count(rec)
	e.logRecord(rec)
	if err := e.st.drop(ctx, in.ID); err != nil {
		e.log.Warn("undo done but its record not dropped; a later occurrence undoes nothing twice", "incident", in.ID, "err", err)
	}
	return false, nil
}

// changedSince says why the undo must leave node alone: it is eligible
// already, it drains, or its latest eligibility change is not the one
// klaxon made at index (Nomad's node events record each change with its
// raft index). "" when klaxon's change is still the latest.
func changedSince(n *api.Node, index uint64) string {
	if n.SchedulingEligibility != api.NodeSchedulingIneligible {
		return "the node is eligible already (an operator made it so)"
	}
	if n.DrainStrategy != nil || n.Drain {
		return "the node is draining (an operator's drain): its eligibility is the operator's"
	}
	var last *api.NodeEvent
	for _, ev := range n.Events {
		if isEligibilityEvent(ev) && (last == nil || ev.CreateIndex > last.CreateIndex) {
			last = ev
		}
	}
	switch {
	case last != nil && last.CreateIndex > index:
		return fmt.Sprintf("its eligibility was changed since klaxon's change (index %d, then %q at index %d)", index, last.Message, last.CreateIndex)
	case last == nil && n.ModifyIndex != index:
		// Nomad keeps the node's last 10 events; klaxon's went out with
		// them: an operator may have changed it.
		return fmt.Sprintf("the node changed since klaxon's change (modify index %d, now %d) and its events no longer show who changed its eligibility last", index, n.ModifyIndex)
	}
	return ""
}

// writeIndex is the raft index of an eligibility change: the node's
// modify index when Nomad says it (the HTTP API leaves it 0 in 2.0), else
// the write's index, which is the CreateIndex of the node event recording
// the change.
func writeIndex(r *api.NodeEligibilityUpdateResponse) uint64 {
	if r.NodeModifyIndex != 0 {
		return r.NodeModifyIndex
	}
	return r.LastIndex
}

// isEligibilityEvent reports whether a node event records an eligibility
// change ("Node marked as eligible for scheduling", "... ineligible ...").
func isEligibilityEvent(ev *api.NodeEvent) bool {
	return ev != nil && strings.Contains(strings.ToLower(ev.Message), "eligible for scheduling")
}

// lastEligible says why node is one of the last KeepEligible eligible
// nodes of its pool or class ("" when it is not).
func (e *Executor) lastEligible(stubs []*api.NodeListStub, node *api.NodeListStub) string {
	var pool, class int
	for _, s := range stubs {
		if s.ID == node.ID || s.SchedulingEligibility != api.NodeSchedulingEligible || s.Status != "ready" || s.Drain {
			continue
		}
		if s.NodePool == node.NodePool {
			pool++
		}
		if node.NodeClass != "" && s.NodeClass == node.NodeClass {
			class++
		}
	}
	k := e.cfg.KeepEligible
	switch {
	case pool < k:
		return fmt.Sprintf("node %s is one of the last %d eligible nodes of node pool %q (%d other eligible, ready nodes; keep_eligible %d)", node.Name, k, poolName(node.NodePool), pool, k)
	case node.NodeClass != "" && class < k:
		return fmt.Sprintf("node %s is one of the last %d eligible nodes of node class %q (%d other eligible, ready nodes; keep_eligible %d)", node.Name, k, node.NodeClass, class, k)
	}
	return ""
}

func poolName(p string) string {
	if p == "" {
		return "default"
	}
	return p
}

// nodeIDOf returns the Nomad node ID the incident's evidence names for its
// node ("" when none does).
func nodeIDOf(in correlate.Incident) string {
	for i := len(in.Evidence) - 1; i >= 0; i-- {
		ev := in.Evidence[i]
		if ev.Node == in.Node {
			if id, _ := ev.Fields["node_id"].(string); id != "" {
				return id
			}
		}
	}
	return ""
}

// findNode picks the node of a klaxon node name (the lower-case short host
// name): by ID when known, else by name; among several of one name, a
// ready one, then the newest.
func findNode(stubs []*api.NodeListStub, name, id string) *api.NodeListStub {
	var best *api.NodeListStub
	for _, s := range stubs {
		if id != "" && s.ID == id {
			return s
		}
		n := strings.ToLower(s.Name)
		if short, _, ok := strings.Cut(n, "."); ok && short == name {
			n = short
		}
		if n != name {
			continue
		}
		if best == nil || better(s, best) {
			best = s
		}
	}
	return best
}

// better prefers a ready node, then the newer one.
func better(a, b *api.NodeListStub) bool {
	if ar, br := a.Status == "ready", b.Status == "ready"; ar != br {
		return ar
	}
	return a.CreateIndex > b.CreateIndex
}

// publish sends the record as an event on the node's events subject, with
// a message id that a retry repeats.
func (e *Executor) publish(ctx context.Context, in correlate.Incident, rec *Record) error {
	ev := RecordEvent(in, rec)
	data, err := natslayout.EncodeEvent(&ev)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: natslayout.EventSubject(ev.Source, ev.Node), Data: data}
	if _, err := e.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
		return fmt.Errorf("publish the record: %w", err)
	}
	return nil
}

// RecordEvent is the event of a record: source klaxon.action, kind the
// action, the incident's node, and fields incident_id, rule, group,
// started_at, phase, result, reason, dry_run, node_id and modify_index.
// The correlator puts it in the incident's evidence (correlate's Action
// handling reads these fields).
func RecordEvent(in correlate.Incident, rec *Record) ingest.Event {
	group := make(map[string]any, len(in.Group))
	for k, v := range in.Group {
		group[k] = v
	}
	f := map[string]any{
		"incident_id": in.ID,
		"rule":        in.Rule,
		"group":       group,
		"started_at":  rec.Started.UTC().Format(time.RFC3339Nano),
		"phase":       rec.Phase,
		"result":      rec.Result,
		"dry_run":     rec.DryRun,
	}
	if rec.Reason != "" {
		f["reason"] = rec.Reason
	}
	if rec.NodeID != "" {
		f["node_id"] = rec.NodeID
	}
	if rec.ModifyIndex != 0 {
		f["modify_index"] = strconv.FormatUint(rec.ModifyIndex, 10)
	}
	level := ingest.LevelInfo
	if rec.Result == ResultApplied || rec.Result == ResultFailed {
		level = ingest.LevelWarn
	}
	return ingest.Event{
		ID:     "action:" + in.ID + ":" + strconv.FormatInt(rec.Started.UnixNano(), 36) + ":" + rec.Phase,
		Time:   rec.At.UTC(),
		Node:   rec.Node,
		NodeID: rec.NodeID,
		Source: ingest.SourceAction,
		Kind:   Action,
		Level:  level,
		Msg:    rec.Message(),
		Fields: f,
	}
}

// Message says what was done, in a line.
func (r *Record) Message() string {
	n := r.Node
	var s string
	switch r.Result {
	case ResultApplied:
		s = "klaxon marked node " + n + " ineligible: Nomad places no new allocations there (running ones stay)"
	case ResultWouldApply:
		s = "dry run: klaxon would mark node " + n + " ineligible"
	case ResultSkipped:
		s = "klaxon did not mark node " + n + " ineligible"
	case ResultFailed:
		if r.Phase == PhaseUndo {
			s = "klaxon could not make node " + n + " eligible again"
		} else {
			s = "klaxon could not mark node " + n + " ineligible"
		}
	case ResultUndone:
		s = "klaxon made node " + n + " eligible again (the incident resolved)"
	case ResultWouldUndo:
		s = "dry run: klaxon would make node " + n + " eligible again (the incident resolved)"
	case ResultKept:
		s = "klaxon left node " + n + " ineligible"
	default:
		s = "klaxon " + r.Phase + " " + r.Result + " on node " + n
	}
	if r.Reason != "" {
		s += ": " + r.Reason
	}
	return s
}

func (e *Executor) count(r *Record) {
	switch r.Result {
	case ResultApplied:
		e.applied.Add(1)
	case ResultWouldApply:
		e.wouldApply.Add(1)
	case ResultSkipped:
		e.skipped.Add(1)
	case ResultFailed:
		e.failed.Add(1)
	case ResultUndone:
		e.undone.Add(1)
	case ResultWouldUndo:
		e.wouldUndo.Add(1)
	case ResultKept:
		e.kept.Add(1)
	}
}

func (e *Executor) logRecord(r *Record) {
	attrs := []any{"incident", r.Incident, "rule", r.Rule, "node", r.Node, "node_id", r.NodeID, "phase", r.Phase, "result", r.Result, "dry_run", r.DryRun}
	if r.Reason != "" {
		attrs = append(attrs, "reason", r.Reason)
	}
	switch r.Result {
	case ResultApplied, ResultUndone, ResultFailed:
		e.log.Warn(r.Message(), attrs...)
	default:
		e.log.Info(r.Message(), attrs...)
	}
}

// statusOf is the HTTP status of a Nomad API error (0: none).
func statusOf(err error) int {
	var sc interface {
		HasStatusCode() bool
		StatusCode() int
	}
	if errors.As(err, &sc) && sc.HasStatusCode() {
		return sc.StatusCode()
	}
	var v api.UnexpectedResponseError
	if errors.As(err, &v) && v.HasStatusCode() {
		return v.StatusCode()
	}
	return 0
}

// retryable: network errors, 5xx and 429 are worth another attempt; other
// answers (ACL denied, bad request, not found) are not.
func retryable(err error) bool {
	s := statusOf(err)
	return s == 0 || s == 429 || s >= 500
}
