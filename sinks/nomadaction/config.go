package nomadaction

import (
	"fmt"
	"time"
)

// EligibilityConfig is the nomad.node.eligibility action in the
// configuration file (actions.nomad_node_eligibility). It talks to Nomad
// as the top-level nomad block says (address, token, region,
// TLS, and Nomad's variables for what it leaves out); the token needs
// node:write.
type EligibilityConfig struct {
	// DryRun records what would be done and changes nothing (default true).
	DryRun *bool `yaml:"dry_run"`
	// MaxPerHour is how many nodes are made ineligible in a rolling hour at
	// most, over every klaxon process (default 1).
	MaxPerHour int `yaml:"max_per_hour"`
	// KeepEligible is how many other eligible, ready nodes must stay in
	// the node's pool and in its node class (default 1; 0: no such guard).
	KeepEligible *int `yaml:"keep_eligible"`
	// Undo makes the node eligible again when the incident resolves, unless
	// someone changed its eligibility since (default true).
	Undo *bool `yaml:"undo"`
	// SendTimeout bounds one attempt (default 30s) and MaxAttempts the
	// attempts before the change goes to the dead letters
	// (klaxon.dlq.action_nomad_node_eligibility; default 8).
	SendTimeout time.Duration `yaml:"send_timeout"`
	MaxAttempts int           `yaml:"max_attempts"`
}

// SetDefaults fills in what the file leaves out.
func (n *EligibilityConfig) SetDefaults() {
	t := true
	if n.DryRun == nil {
		n.DryRun = &t
	}
	if n.Undo == nil {
		u := true
		n.Undo = &u
	}
	if n.MaxPerHour == 0 {
		n.MaxPerHour = DefaultMaxPerHour
	}
	if n.KeepEligible == nil {
		k := DefaultKeepEligible
		n.KeepEligible = &k
	}
	if n.SendTimeout <= 0 {
		n.SendTimeout = 30 * time.Second
	}
	if n.MaxAttempts <= 0 {
		n.MaxAttempts = 8
	}
}

// Validate checks the settings after SetDefaults; at names the block in
// errors.
func (n *EligibilityConfig) Validate(at string) []error {
	var errs []error
	if n.MaxPerHour < 0 {
		errs = append(errs, fmt.Errorf("%s.max_per_hour: %d: want at least 1", at, n.MaxPerHour))
	}
	if n.KeepEligible != nil && *n.KeepEligible < 0 {
		errs = append(errs, fmt.Errorf("%s.keep_eligible: %d: must not be negative", at, *n.KeepEligible))
	}
	return errs
}

// ExecutorConfig is the executor's form of the settings; replicas is the
// KLAXON_ACTIONS bucket's.
func (n *EligibilityConfig) ExecutorConfig(replicas int) Config {
	keep := DefaultKeepEligible
	if n.KeepEligible != nil {
		keep = *n.KeepEligible
		if keep == 0 {
			keep = -1 // nomadaction: negative is none
		}
	}
	return Config{DryRun: n.DryRun, Undo: n.Undo, MaxPerHour: n.MaxPerHour, KeepEligible: keep, Replicas: replicas}
}
