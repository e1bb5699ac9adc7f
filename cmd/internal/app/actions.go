package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/winfact"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/nomadaction"
)

// ActionsConfig configures the actions rules may name (issue #14). Each
// is off unless its block is present.
type ActionsConfig struct {
	// NodeEligibility carries out nomad.node.eligibility: the node of an
	// incident is made ineligible while it fires.
	NodeEligibility *NodeEligibilityConfig `yaml:"nomad_node_eligibility"`
}

// NodeEligibilityConfig configures the nomad.node.eligibility action. It
// talks to Nomad as the top-level nomad block says (address, token, region,
// TLS, and Nomad's variables for what it leaves out); the token needs
// node:write.
type NodeEligibilityConfig struct {
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

func (a *ActionsConfig) setDefaults() {
	n := a.NodeEligibility
	if n == nil {
		return
	}
	t := true
	if n.DryRun == nil {
		n.DryRun = &t
	}
	if n.Undo == nil {
		u := true
		n.Undo = &u
	}
	if n.MaxPerHour == 0 {
		n.MaxPerHour = nomadaction.DefaultMaxPerHour
	}
	if n.KeepEligible == nil {
		k := nomadaction.DefaultKeepEligible
		n.KeepEligible = &k
	}
	if n.SendTimeout <= 0 {
		n.SendTimeout = 30 * time.Second
	}
	if n.MaxAttempts <= 0 {
		n.MaxAttempts = 8
	}
}

func (a *ActionsConfig) validate() []error {
	n := a.NodeEligibility
	if n == nil {
		return nil
	}
	var errs []error
	if n.MaxPerHour < 0 {
		errs = append(errs, fmt.Errorf("actions.nomad_node_eligibility.max_per_hour: %d: want at least 1", n.MaxPerHour))
	}
	if n.KeepEligible != nil && *n.KeepEligible < 0 {
		errs = append(errs, fmt.Errorf("actions.nomad_node_eligibility.keep_eligible: %d: must not be negative", *n.KeepEligible))
	}
	return errs
}

// executorConfig is the nomadaction form of the settings.
func (n *NodeEligibilityConfig) executorConfig(replicas int) nomadaction.Config {
	keep := nomadaction.DefaultKeepEligible
	if n.KeepEligible != nil {
		keep = *n.KeepEligible
		if keep == 0 {
			keep = -1 // nomadaction: negative is none
		}
	}
	return nomadaction.Config{DryRun: n.DryRun, Undo: n.Undo, MaxPerHour: n.MaxPerHour, KeepEligible: keep, Replicas: replicas}
}

// startActions runs the configured actions as sinks: each has its own
// durable consumer on KLAXON_INCIDENTS through a dispatcher (silences do
// not hold actions back: a silence mutes pages, not the guard).
func startActions(ctx context.Context, cfg *Config, b *bus.Bus, met *sinks.Metrics, log *slog.Logger, wg *sync.WaitGroup) ([]sinks.Sink, error) {
	n := cfg.Actions.NodeEligibility
	if n == nil {
		return nil, nil
	}
	c, err := nomadClient(cfg.Nomad)
	if err != nil {
		return nil, fmt.Errorf("actions.nomad_node_eligibility: nomad client: %w", err)
	}
	ex, err := nomadaction.New(ctx, n.executorConfig(cfg.NATS.Replicas), c.Nodes(), b.JS, log)
	if err != nil {
		return nil, fmt.Errorf("actions.nomad_node_eligibility: %w", err)
	}
	d := sinks.NewDispatcher(b.JS, ex, sinks.DispatcherConfig{SendTimeout: n.SendTimeout, MaxAttempts: n.MaxAttempts}, log)
	met.Add(ex.Name(), d)
	log.Info("action nomad.node.eligibility armed", "dry_run", *n.DryRun, "max_per_hour", n.MaxPerHour,
		"keep_eligible", *n.KeepEligible, "undo", *n.Undo, "nomad", cfg.Nomad.Address)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.Run(ctx); err != nil {
			log.Error("action stopped", "action", nomadaction.Action, "err", err)
		}
	}()
	return []sinks.Sink{ex}, nil
}

// WindowsFactsConfig publishes facts about a Windows node (ingest/winfact):
// the size of its non-interactive desktop heap, and samples of its kernel
// pools.
type WindowsFactsConfig struct {
	// Enabled: default true on Windows, where it is the only place it runs.
	Enabled *bool `yaml:"enabled"`
	// Interval is how often the registry is read (default 5m).
	Interval time.Duration `yaml:"interval"`
	// Pool samples the kernel pools and the processes' pool charge and
	// handles every PoolInterval (default true, every 1m), for
	// windows.pool_leak.
	Pool         *bool         `yaml:"pool"`
	PoolInterval time.Duration `yaml:"pool_interval"`
}

func (s *SourcesConfig) windowsFactsDefaults() {
	if s.WindowsFacts == nil {
		s.WindowsFacts = &WindowsFactsConfig{}
	}
	w := s.WindowsFacts
	if w.Enabled == nil {
		on := runtime.GOOS == "windows"
		w.Enabled = &on
	}
	if w.Interval <= 0 {
		w.Interval = winfact.DefaultInterval
	}
	if w.Pool == nil {
		on := true
		w.Pool = &on
	}
	if w.PoolInterval <= 0 {
		w.PoolInterval = winfact.DefaultPoolInterval
	}
}

func (s *SourcesConfig) validateWindowsFacts() []error {
	if w := s.WindowsFacts; w != nil && w.Enabled != nil && *w.Enabled && runtime.GOOS != "windows" {
		return []error{errors.New("sources.windows_facts.enabled: the Windows registry is only available on Windows")}
	}
	return nil
}

// windowsFactsSources are the fact sources of this node (none when off):
// the desktop heap, and the kernel pool samples.
func windowsFactsSources(cfg *Config, node string, cps *ingest.Checkpoints, now func() time.Time, log *slog.Logger) ([]ingest.Source, error) {
	w := cfg.Sources.WindowsFacts
	if w == nil || w.Enabled == nil || !*w.Enabled {
		return nil, nil
	}
	s, err := winfact.New(winfact.Config{Node: node, Interval: w.Interval, Checkpoints: cps, Now: now}, log)
	if err != nil {
		return nil, fmt.Errorf("sources.windows_facts: %w", err)
	}
	out := []ingest.Source{s}
	if w.Pool != nil && *w.Pool {
		p, err := winfact.NewPool(winfact.PoolConfig{Node: node, Interval: w.PoolInterval, Now: now}, log)
		if err != nil {
			return nil, fmt.Errorf("sources.windows_facts.pool: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}
