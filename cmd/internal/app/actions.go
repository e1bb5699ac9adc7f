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
	NodeEligibility *nomadaction.EligibilityConfig `yaml:"nomad_node_eligibility"`
}

func (a *ActionsConfig) setDefaults() {
	if a.NodeEligibility != nil {
		a.NodeEligibility.SetDefaults()
	}
}

func (a *ActionsConfig) validate() []error {
	if a.NodeEligibility == nil {
		return nil
	}
	return a.NodeEligibility.Validate("actions.nomad_node_eligibility")
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
	ex, err := nomadaction.New(ctx, n.ExecutorConfig(cfg.NATS.Replicas), c.Nodes(), b.JS, log)
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
