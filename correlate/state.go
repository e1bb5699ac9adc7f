package correlate

import (
	"encoding/json"
	"fmt"
	"time"
)

// snapshot is the serialised state of a correlator.
type snapshot struct {
	Version   int                     `json:"version"`
	Watermark time.Time               `json:"watermark"`
	Rules     map[string]ruleSnapshot `json:"rules"`
}

type ruleSnapshot struct {
	Hash   string   `json:"hash"`
	Groups []*group `json:"groups"`
}

// Snapshot serialises the windows and open incidents.
func (c *Correlator) Snapshot() ([]byte, error) {
	s := snapshot{Version: 1, Watermark: c.watermark, Rules: map[string]ruleSnapshot{}}
	for id, rs := range c.rules {
		if len(rs.groups) == 0 {
			continue
		}
		gs := make([]*group, 0, len(rs.groups))
		for _, k := range sortedKeys(rs.groups) {
			gs = append(gs, rs.groups[k])
		}
		s.Rules[id] = ruleSnapshot{Hash: rs.hash, Groups: gs}
	}
	return json.Marshal(s)
}

// Restore loads a snapshot taken by Snapshot. State of rules that are no
// longer loaded, or whose definition changed since, is dropped.
func (c *Correlator) Restore(b []byte) error {
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("correlator snapshot: %w", err)
	}
	if s.Version != 1 {
		return fmt.Errorf("correlator snapshot: unknown version %d", s.Version)
	}
	c.watermark = s.Watermark
	for id, rsnap := range s.Rules {
		rs, ok := c.rules[id]
		if !ok || rs.hash != rsnap.Hash {
			continue
		}
		rs.groups = make(map[string]*group, len(rsnap.Groups))
		for _, g := range rsnap.Groups {
			if len(g.Counts) != len(rs.rule.Selectors) {
				continue
			}
			rs.groups[g.Key] = g
		}
	}
	return nil
}
