package correlate

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// snapshot is the serialised state of a correlator. Version 1 is extended
// compatibly: fields added since are optional. G is the form of a group:
// *group when written, *groupJSON when read back.
type snapshot[G any] struct {
	Version   int                        `json:"version"`
	Watermark time.Time                  `json:"watermark"`
	Rules     map[string]ruleSnapshot[G] `json:"rules"`
	// Proc is the latest time passed to Advance.
	Proc time.Time `json:"proc,omitzero"`
	// Clocks are the sources' clocks by source and node.
	Clocks map[string]map[string]*clock `json:"clocks,omitempty"`
	// Retired are incidents of changed or removed rules not yet resolved.
	Retired []Incident `json:"retired,omitempty"`
}

type ruleSnapshot[G any] struct {
	Hash   string `json:"hash"`
	Groups []G    `json:"groups"`
}

// Snapshot serialises the windows, open incidents, the per-group state of
// sequences, absences, for and keep_firing_for, inhibitions, and the
// sources' clocks.
func (c *Correlator) Snapshot() ([]byte, error) {
	s := snapshot[*group]{Version: 1, Watermark: c.watermark, Rules: map[string]ruleSnapshot[*group]{}, Proc: c.proc, Clocks: c.clocks.m, Retired: c.retired}
	for id, rs := range c.rules {
		if len(rs.groups) == 0 {
			continue
		}
		gs := make([]*group, 0, len(rs.groups))
		for _, k := range slices.Sorted(maps.Keys(rs.groups)) {
			gs = append(gs, rs.groups[k])
		}
		s.Rules[id] = ruleSnapshot[*group]{Hash: rs.hash, Groups: gs}
	}
	return json.Marshal(s)
}

// Restore loads a snapshot taken by Snapshot. State of rules that are no
// longer loaded, or whose definition changed since, is dropped. Every item
// of the restored state counts as changed for the next Checkpoint (a
// snapshot is migrated to incremental checkpoints by writing it all once).
func (c *Correlator) Restore(b []byte) error {
	var s snapshot[*groupJSON]
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("correlator snapshot: %w", err)
	}
	if s.Version != 1 {
		return fmt.Errorf("correlator snapshot: unknown version %d", s.Version)
	}
	c.watermark = s.Watermark
	c.proc = s.Proc
	c.retired = s.Retired
	c.clocks = newClocks()
	for src, m := range s.Clocks {
		for node, cl := range m {
			if cl != nil {
				c.clocks.set(src, node, cl)
			}
		}
	}
	c.clocks.restore()
	for _, rs := range c.rules {
		rs.groups = map[string]*group{}
	}
	for id, rsnap := range s.Rules {
		for _, gj := range rsnap.Groups {
			if gj != nil {
				// Changed or removed while klaxon was down: its open
				// incidents are resolved (see SetRules).
				c.restoreGroup(id, rsnap.Hash, gj)
			}
		}
	}
	c.rebuild()
	clear(c.ckpt.dirty)
	c.ckpt.pending = nil
	c.touchAll()
	return nil
}
