// Package history searches the incident history kept in the
// KLAXON_INCIDENTS stream (every change of every incident, as the sinks
// received it, for nats.incidents_max_age, 30 days by default): by node,
// job, rule, status, severity and time, and one incident with all its
// changes and merged evidence. The web view (/history, /api/history) and
// `klaxon incidents list|show` use it; it reads the stream with a
// short-lived consumer and changes nothing.
package history

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/jspull"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Defaults of a Query.
const (
	DefaultLimit = 100
	MaxLimit     = 5000
	// Lookback is how long before Since the stream is read, so that an
	// incident that started earlier but was still open at Since is found
	// (its last change before Since tells it was open).
	Lookback = 24 * time.Hour
	// MaxEvidence caps the evidence merged for one incident.
	MaxEvidence = 500
)

// Status values of a Query: an open incident (its last change firing or
// updated) or a resolved one.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Query selects incident occurrences. Empty fields select everything.
type Query struct {
	// Node, Rule and Severity compare exactly; Job matches the group's
	// fields.job or the label job (the job an incident is about).
	Node, Job, Rule, Severity string
	// Status is "firing" (open: firing or updated) or "resolved".
	Status string
	// Text must occur in the title or summary (case-insensitive).
	Text string
	// Since and Until bound the time: an occurrence matches when it was
	// open at some point between them (started before Until, not resolved
	// before Since). Zero: unbounded.
	Since, Until time.Time
	// Limit caps the occurrences returned, newest start first (default
	// DefaultLimit, at most MaxLimit).
	Limit int
}

// Occurrence is one occurrence of an incident (an id fires again after it
// resolved: another occurrence, another started_at) as of its latest
// change in the stream, without evidence.
type Occurrence struct {
	correlate.Incident
	// Job is the job the incident is about ("" when none or several).
	Job string `json:"job,omitempty"`
	// Changes counts its changes read; FirstSeq and LastSeq are the
	// stream sequences of the first and last of them.
	Changes  int    `json:"changes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// Open reports whether the occurrence was open at its last change.
func (o *Occurrence) Open() bool { return o.Status != correlate.StatusResolved }

// Result is what Search found.
type Result struct {
	Occurrences []Occurrence `json:"occurrences"`
	// Total counts the matching occurrences (Occurrences holds at most the
	// query's limit of them).
	Total int `json:"total"`
	// Scanned counts the incident changes read.
	Scanned int `json:"scanned"`
	// Oldest is the time of the oldest change the stream still holds
	// (nothing older can be found).
	Oldest time.Time `json:"oldest,omitzero"`
}

// Change is one change of an incident as the stream holds it.
type Change struct {
	StreamSeq uint64    `json:"stream_seq"`
	Seq       int       `json:"seq"`
	Status    string    `json:"status"`
	Severity  string    `json:"severity"`
	Count     int       `json:"count"`
	At        time.Time `json:"at"`
	Summary   string    `json:"summary"`
}

// Detail is one incident: its chosen occurrence with the evidence of all
// its changes merged, the changes, and every occurrence of its id found.
type Detail struct {
	Incident    correlate.Incident `json:"incident"`
	Changes     []Change           `json:"changes"`
	Occurrences []Occurrence       `json:"occurrences"`
}

// ErrNotFound is returned by Get for an id the stream does not hold.
var ErrNotFound = errors.New("no such incident in the history")

// Normalize checks the query and fills in its defaults.
func (q *Query) Normalize() error {
	var errs []error
	switch q.Status {
	case "", StatusFiring, StatusResolved:
	case "open", "updated":
		q.Status = StatusFiring
	default:
		errs = append(errs, fmt.Errorf("status %q: want firing or resolved", q.Status))
	}
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	q.Limit = min(q.Limit, MaxLimit)
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		errs = append(errs, fmt.Errorf("until %s is before since %s", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}

// Match reports whether an occurrence passes the query's filters.
func (q *Query) Match(o *Occurrence) bool {
	switch {
	case q.Node != "" && o.Node != q.Node,
		q.Rule != "" && o.Rule != q.Rule,
		q.Severity != "" && !strings.EqualFold(o.Severity, q.Severity),
		q.Job != "" && o.Job != q.Job && o.Group["fields.job"] != q.Job && o.Labels["job"] != q.Job,
		q.Status == StatusFiring && !o.Open(),
		q.Status == StatusResolved && o.Open():
		return false
	}
	if !q.Until.IsZero() && o.StartedAt.After(q.Until) {
		return false
	}
	if !q.Since.IsZero() && o.ResolvedAt != nil && o.ResolvedAt.Before(q.Since) {
		return false
	}
	if q.Text != "" {
		t := strings.ToLower(q.Text)
		if !strings.Contains(strings.ToLower(o.Title), t) && !strings.Contains(strings.ToLower(o.Summary), t) {
			return false
		}
	}
	return true
}

// light is an incident change without its evidence (skipped, not
// allocated, when decoding).
type light struct {
	correlate.Incident
	Evidence json.RawMessage `json:"evidence"`
}

// scanBatch is how many changes one pull request of a scan asks for.
const scanBatch = 2048

// scan reads the changes of KLAXON_INCIDENTS from since (zero: the
// start), of one rule's subjects when rule is set, and calls f with each
// one's stream sequence and raw body, in order, up to the last message
// stored when the scan began.
func scan(ctx context.Context, js jetstream.JetStream, since time.Time, rule string, f func(seq uint64, data []byte) error) (oldest time.Time, err error) {
	st, err := js.Stream(ctx, natslayout.IncidentsStream)
	if err != nil {
		return time.Time{}, fmt.Errorf("history: %s: %w", natslayout.IncidentsStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("history: %s: %w", natslayout.IncidentsStream, err)
	}
	oldest = info.State.FirstTime
	if info.State.Msgs == 0 || (!since.IsZero() && info.State.LastTime.Before(since)) {
		return oldest, nil
	}
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		FilterSubject:     natslayout.IncidentsSubjects,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Description:       "klaxon history scan",
	}
	if rule != "" {
		cfg.FilterSubject = natslayout.IncidentsPrefix + ".*." + natslayout.Tokens(rule)
	}
	if !since.IsZero() && since.After(info.State.FirstTime) {
		t := since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return oldest, fmt.Errorf("history: consumer on %s: %w", natslayout.IncidentsStream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	if cons.CachedInfo().NumPending == 0 {
		return oldest, nil
	}
	last := info.State.LastSeq
	// One pull request at a time (internal/jspull: nats.go's iterator
	// could wait out its heartbeat timeout in the middle of a scan).
	msgs := make(chan jetstream.Msg, scanBatch)
	pullCtx, stop := context.WithCancel(ctx)
	defer stop()
	go jspull.Pull(pullCtx, cons, scanBatch, msgs, slog.Default())
	for m := range msgs {
		if ctx.Err() != nil {
			break
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		if md.Sequence.Stream > last {
			return oldest, nil // stored after the scan began
		}
		if err := f(md.Sequence.Stream, m.Data()); err != nil {
			return oldest, err
		}
		if md.NumPending == 0 || md.Sequence.Stream == last {
			return oldest, nil
		}
	}
	if ctx.Err() != nil {
		return oldest, ctx.Err()
	}
	return oldest, fmt.Errorf("history: reading %s: %w", natslayout.IncidentsStream, nats.ErrConnectionClosed)
}

type occKey struct {
	id      string
	started int64
}

// fold adds one change to the occurrences.
func fold(occ map[occKey]*Occurrence, seq uint64, in *correlate.Incident) {
	k := occKey{in.ID, in.StartedAt.UnixNano()}
	o := occ[k]
	if o == nil {
		o = &Occurrence{FirstSeq: seq}
		occ[k] = o
	}
	o.Changes++
	o.LastSeq = seq
	if o.Changes == 1 || in.Seq >= o.Seq {
		in.Evidence = nil
		o.Incident = *in
	}
}

// Search finds the incident occurrences the query selects, newest start
// first.
func Search(ctx context.Context, js jetstream.JetStream, q Query) (Result, error) {
	if err := q.Normalize(); err != nil {
		return Result{}, err
	}
	var res Result
	occ := map[occKey]*Occurrence{}
	var from time.Time
	if !q.Since.IsZero() {
		from = q.Since.Add(-Lookback)
	}
	// Changes that cannot match are skipped before decoding: the node or
	// job asked for must occur in the change as the correlator encodes it
	// (a JSON string), or the change is not one of them.
	var must [][]byte
	for _, v := range []string{q.Node, q.Job} {
		if v != "" {
			b, _ := json.Marshal(v)
			must = append(must, b)
		}
	}
	oldest, err := scan(ctx, js, from, q.Rule, func(seq uint64, data []byte) error {
		res.Scanned++
		for _, m := range must {
			if !bytes.Contains(data, m) {
				return nil
			}
		}
		var c light
		if json.Unmarshal(data, &c) != nil || c.ID == "" {
			return nil
		}
		if q.Node != "" && c.Node != q.Node { // cheap filters before folding
			return nil
		}
		if !q.Until.IsZero() && c.StartedAt.After(q.Until) {
			return nil
		}
		fold(occ, seq, &c.Incident)
		return nil
	})
	res.Oldest = oldest
	if err != nil {
		return res, err
	}
	for _, o := range occ {
		_, o.Job = correlate.IncidentJob(&o.Incident)
		if o.Job == "" {
			o.Job = o.Labels["job"]
		}
		if q.Match(o) {
			res.Occurrences = append(res.Occurrences, *o)
		}
	}
	slices.SortFunc(res.Occurrences, func(a, b Occurrence) int {
		return cmp.Or(b.StartedAt.Compare(a.StartedAt), cmp.Compare(a.ID, b.ID))
	})
	res.Total = len(res.Occurrences)
	if len(res.Occurrences) > q.Limit {
		res.Occurrences = res.Occurrences[:q.Limit]
	}
	return res, nil
}

// Hint narrows Get's scan: the incident's rule (its subjects only) and a
// time at or before its start. Zero values read everything.
type Hint struct {
	Rule  string
	Since time.Time
	// Started picks an occurrence by its start (zero: the newest).
	Started time.Time
}

// Get returns one incident from the history: the occurrence hint.Started
// names (the newest by default) with every change and the evidence of all
// its changes merged (oldest first, at most MaxEvidence, newest kept).
func Get(ctx context.Context, js jetstream.JetStream, id string, hint Hint) (Detail, error) {
	type change struct {
		seq uint64
		in  correlate.Incident
	}
	var all []change
	_, err := scan(ctx, js, hint.Since, hint.Rule, func(seq uint64, data []byte) error {
		if !bytes.Contains(data, []byte(id)) {
			return nil // most changes are skipped undecoded
		}
		var in correlate.Incident
		if json.Unmarshal(data, &in) != nil || in.ID != id {
			return nil
		}
		all = append(all, change{seq, in})
		return nil
	})
	if err != nil {
		return Detail{}, err
	}
	if len(all) == 0 {
		return Detail{}, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	occ := map[occKey]*Occurrence{}
	for _, c := range all {
		in := c.in
		fold(occ, c.seq, &in)
	}
	var d Detail
	for _, o := range occ {
		_, o.Job = correlate.IncidentJob(&o.Incident)
		d.Occurrences = append(d.Occurrences, *o)
	}
	slices.SortFunc(d.Occurrences, func(a, b Occurrence) int { return b.StartedAt.Compare(a.StartedAt) })
	chosen := d.Occurrences[0]
	if !hint.Started.IsZero() {
		found := false
		for _, o := range d.Occurrences {
			if o.StartedAt.Equal(hint.Started) {
				chosen, found = o, true
			}
		}
		if !found {
			return Detail{}, fmt.Errorf("incident %s started at %s: %w", id, hint.Started.Format(time.RFC3339), ErrNotFound)
		}
	}
	var changes []correlate.Incident
	for _, c := range all {
		if c.in.StartedAt.Equal(chosen.StartedAt) {
			changes = append(changes, c.in)
			d.Changes = append(d.Changes, Change{StreamSeq: c.seq, Seq: c.in.Seq, Status: c.in.Status, Severity: c.in.Severity,
				Count: c.in.Count, At: c.in.UpdatedAt, Summary: c.in.Summary})
		}
	}
	d.Incident = chosen.Incident
	d.Incident.Evidence = MergeEvidence(changes, MaxEvidence)
	return d, nil
}

// MergeEvidence merges the evidence of an incident's changes: each event
// once (by id, else time, source, kind and message), oldest first, the
// newest max kept.
func MergeEvidence(changes []correlate.Incident, max int) []correlate.Evidence {
	seen := map[string]bool{}
	var out []correlate.Evidence
	for _, in := range changes {
		for _, e := range in.Evidence {
			k := e.ID
			if k == "" {
				k = e.Time.UTC().Format(time.RFC3339Nano) + "\x00" + e.Source + "\x00" + e.Kind + "\x00" + e.Msg
			}
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b correlate.Evidence) int { return a.Time.Compare(b.Time) })
	if max > 0 && len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}
