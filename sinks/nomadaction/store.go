package nomadaction

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Results of a Record.
const (
	// Apply phase.
	ResultApplied    = "applied"     // the node was made ineligible
	ResultWouldApply = "would_apply" // dry run: it would have been
	ResultSkipped    = "skipped"     // a guard held (Reason says which)
	ResultFailed     = "failed"      // Nomad refused (Reason has its answer)
	// Undo phase.
	ResultUndone    = "undone"     // the node was made eligible again
	ResultWouldUndo = "would_undo" // dry run: it would have been
	ResultKept      = "kept"       // left as it is (an operator changed the node since)
)

// Phases of a Record.
const (
	PhaseApply = "apply"
	PhaseUndo  = "undo"
)

// Record is one action on one incident and its result: what the
// incident's evidence shows and what the bucket keeps until the undo.
type Record struct {
	Action   string    `json:"action"`
	Phase    string    `json:"phase"`
	Incident string    `json:"incident"`
	Rule     string    `json:"rule"`
	Started  time.Time `json:"started"` // the incident occurrence's start
	Node     string    `json:"node"`
	NodeID   string    `json:"node_id,omitempty"`
	DryRun   bool      `json:"dry_run"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason,omitempty"`
	// ModifyIndex is the node's modify index Nomad answered the
	// eligibility change with; the undo compares the node's later
	// eligibility changes with it.
	ModifyIndex uint64    `json:"modify_index,omitempty"`
	At          time.Time `json:"at"`
	// Published is set once the record went out as an event.
	Published bool `json:"published,omitempty"`
}

// needsUndo reports whether the record is one the resolution undoes (or,
// in a dry run, says it would).
func (r *Record) needsUndo() bool {
	return r.Result == ResultApplied || r.Result == ResultWouldApply
}

// store keeps the records in the KLAXON_ACTIONS bucket: per incident the
// apply record awaiting the undo ("<prefix>.inc.<incident>"), and the
// history of the last hour's changes for the rate limit
// ("<prefix>.history"), both written with compare-and-set so that several
// correlator replicas share them.
type store struct {
	kv     jetstream.KeyValue
	prefix string
}

// openStore opens (or creates) the bucket.
func openStore(ctx context.Context, js jetstream.JetStream, replicas int, prefix string) (*store, error) {
	kv, err := js.KeyValue(ctx, natslayout.ActionsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      natslayout.ActionsBucket,
			Description: "klaxon actions on incidents (what to undo, rate limits)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("nomadaction: bucket %s: %w", natslayout.ActionsBucket, err)
	}
	return &store{kv: kv, prefix: prefix}, nil
}

func (s *store) incKey(id string) string { return s.prefix + ".inc." + natslayout.Token(id) }
func (s *store) historyKey() string      { return s.prefix + ".history" }

// get returns the record of an incident and its revision (0: none).
func (s *store) get(ctx context.Context, incident string) (*Record, uint64, error) {
	e, err := s.kv.Get(ctx, s.incKey(incident))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, e.Revision(), fmt.Errorf("record of incident %s: %w", incident, err)
	}
	return &r, e.Revision(), nil
}

// put writes the record of its incident over revision rev (0: new).
func (s *store) put(ctx context.Context, r *Record, rev uint64) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	if rev == 0 {
		return s.kv.Create(ctx, s.incKey(r.Incident), b)
	}
	return s.kv.Update(ctx, s.incKey(r.Incident), b, rev)
}

// drop forgets the record of an incident.
func (s *store) drop(ctx context.Context, incident string) error {
	err := s.kv.Delete(ctx, s.incKey(incident))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// change is one entry of the rate limit's history.
type change struct {
	Node     string    `json:"node"`
	Incident string    `json:"incident"`
	DryRun   bool      `json:"dry_run,omitempty"`
	At       time.Time `json:"at"`
}

// reserve takes a place in the rate limit: at most max changes (of the
// same dry-run mode) within per before now. An incident that already holds
// one keeps it. It returns the changes that hold the places when none is
// left.
func (s *store) reserve(ctx context.Context, c change, max int, per time.Duration, now time.Time) (ok bool, holders []change, err error) {
	for try := 0; try < 20; try++ {
		var hist []change
		var rev uint64
		e, err := s.kv.Get(ctx, s.historyKey())
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, nil, err
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &hist); err != nil {
				hist = nil // unreadable: start over rather than block every action
			}
		}
		keep := hist[:0]
		var same []change
		for _, h := range hist {
			if now.Sub(h.At) >= per {
				continue
			}
			keep = append(keep, h)
			if h.DryRun == c.DryRun {
				if h.Incident == c.Incident {
					return true, nil, nil
				}
				same = append(same, h)
			}
		}
		if len(same) >= max {
			return false, same, nil
		}
		keep = append(keep, c)
		b, err := json.Marshal(keep)
		if err != nil {
			return false, nil, err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, s.historyKey(), b)
		} else {
			_, err = s.kv.Update(ctx, s.historyKey(), b, rev)
		}
		if err == nil {
			return true, nil, nil
		}
		if !isConflict(err) {
			return false, nil, err
		}
	}
	return false, nil, errors.New("the rate limit's history keeps changing under this writer")
}

// release gives back the place an incident holds (its change failed).
func (s *store) release(ctx context.Context, incident string) error {
	for try := 0; try < 20; try++ {
		e, err := s.kv.Get(ctx, s.historyKey())
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var hist []change
		_ = json.Unmarshal(e.Value(), &hist)
		keep := hist[:0]
		for _, h := range hist {
			if h.Incident != incident {
				keep = append(keep, h)
			}
		}
		b, _ := json.Marshal(keep)
		if _, err = s.kv.Update(ctx, s.historyKey(), b, e.Revision()); err == nil || !isConflict(err) {
			return err
		}
	}
	return errors.New("the rate limit's history keeps changing under this writer")
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence")
}
