package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/httpapi"
	"github.com/klaxon-dev/klaxon/cmd/internal/ingestrole"
	"github.com/klaxon-dev/klaxon/cmd/internal/rulesync"
	"github.com/klaxon-dev/klaxon/correlate/durable"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald"
	"github.com/klaxon-dev/klaxon/ingest/nomadalloc"
	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/ingest/winevt"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// roleSet says which roles a process runs.
type roleSet struct {
	ingest    bool // sources → publisher
	correlate bool // correlator → incidents, sinks, rules, web view
}

func (r roleSet) String() string {
	switch {
	case r.ingest && r.correlate:
		return "all"
	case r.ingest:
		return "ingest"
	default:
		return "correlate"
	}
}

// Ingest runs the ingest role until ctx is done: the sources and the
// publisher, over the external NATS cluster at nats.url. Shutdown order:
// sources → publisher drained → checkpoints saved.
func Ingest(ctx context.Context, cfg *Config, opts Options) error {
	if err := requireURL(cfg, "ingest"); err != nil {
		return err
	}
	return runRoles(ctx, cfg, opts, roleSet{ingest: true})
}

// Correlate runs the correlate role until ctx is done: the correlator of the
// partitions this replica holds, the sinks, rule reloads and the HTTP
// endpoint, over the external NATS cluster at nats.url. Shutdown order:
// correlators flushed (each snapshots and releases its lease) → sinks.
func Correlate(ctx context.Context, cfg *Config, opts Options) error {
	if err := requireURL(cfg, "correlate"); err != nil {
		return err
	}
	return runRoles(ctx, cfg, opts, roleSet{correlate: true})
}

// requireURL: the split roles meet on an external NATS.
func requireURL(cfg *Config, role string) error {
	if cfg.NATS.URL == "" {
		return fmt.Errorf("%s: nats.url: required by klaxon %s (the roles meet on an external NATS cluster; klaxon run runs every role on an embedded server)", cfg.path, role)
	}
	return nil
}

// runRoles runs the roles of r in one process until ctx is done, then shuts
// down in order: sources → publisher drained → correlator flushed → sinks,
// under cfg.ShutdownTimeout.
func runRoles(ctx context.Context, cfg *Config, opts Options, r roleSet) error {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var set *rules.Set
	if r.correlate {
		var err error
		if set, err = rules.LoadDir(cfg.RulesDir); err != nil {
			return fmt.Errorf("rules: %w", err)
		}
	}
	var node string
	var agentAnswered bool
	if r.ingest {
		node, agentAnswered = resolveNode(cfg, log)
	}
	log.Info("starting", "roles", r.String(), "node", node, "rules", ruleCount(set), "data_dir", cfg.DataDir)

	bc := cfg.BusConfig()
	if !r.correlate {
		bc.LeaseTTL = 0 // the correlators' setting
	}
	b, err := bus.Open(ctx, bc, log)
	if err != nil {
		return err
	}
	met := newMetrics()
	met.bus.SetBus(b)
	met.sinks.WatchDLQ(b.JS, b.NC.IsConnected, log)
	// undo runs the cleanups of what started, last first, after an error.
	var cleanups []func()
	undo := func(err error) error {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		return err
	}
	closeBus := func() {
		cctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := b.Close(cctx); err != nil {
			log.Warn("bus close", "err", err)
		}
	}
	cleanups = append(cleanups, closeBus)

	// Sinks, correlators, rule reloads.
	sinkCtx, stopSinks := context.WithCancel(context.Background())
	cleanups = append(cleanups, stopSinks)
	var sinkWG sync.WaitGroup
	var built []sinks.Sink
	var sil *silence.Store
	var corr *durable.Correlators
	corrDone := make(chan error, 1)
	stopCorr := func() {}
	stopWatch := func() {}
	var reload func() error
	if r.correlate {
		if built, sil, err = startSinks(sinkCtx, cfg, b, opts.Stdout, met.sinks, log, &sinkWG); err != nil {
			return undo(err)
		}
		if corr, err = newCorrelators(ctx, b, set, cfg.Correlator, opts.Now, log, met.corr); err != nil {
			return undo(err)
		}
		var corrCtx context.Context
		corrCtx, stopCorr = context.WithCancel(context.Background())
		cleanups = append(cleanups, stopCorr)
		go func() { corrDone <- corr.Run(corrCtx) }()
		rulesync.Distribute(ctx, b.JS, set, log) // the sidecars' edge filters follow it
		reload, stopWatch = rules.WatchDir(cfg.RulesDir, func(s *rules.Set) {
			corr.SetRules(s)
			rulesync.Distribute(ctx, b.JS, s, log)
		}, opts.Reload, log)
		cleanups = append(cleanups, stopWatch)
	} else {
		close(corrDone)
		reload = func() error { return errors.New("klaxon ingest runs no rules") }
	}

	// Sources → publisher.
	var ing *ingestrole.Role
	if r.ingest {
		if ing, err = newIngestRole(cfg, node, opts.Now, met, log); err != nil {
			return undo(err)
		}
		srcCtx := ing.StartSources()
		cleanups = append(cleanups, ing.StopSources)
		if !agentAnswered && cfg.Node == "" && cfg.Nomad.Address != "" {
			// Asked until it answers: then the host name is an alias of
			// the agent's node name, and events are labelled with it.
			go nomadapi.LearnNodeName(srcCtx, cfg.Nomad.apiConfig(), node, ing.Identity(), log)
		}
	}

	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	if err := serveHTTP(httpCtx, cfg, b, set, met, sil, reload, r.correlate, opts.Now, log); err != nil {
		return undo(err)
	}
	if ing != nil {
		startPublisher(httpCtx, cfg, b, met, ing, log)
	}

	met.ready.Set(true)
	if opts.Ready != nil {
		close(opts.Ready)
	}
	<-ctx.Done()
	log.Info("shutting down")
	met.ready.Set(false)
	deadline := time.Now().Add(cfg.ShutdownTimeout)
	wait := func(name string, done <-chan struct{}) {
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			log.Warn("shutdown step timed out", "step", name)
		}
	}
	// 1. sources, 2. publisher: everything read is stored and committed
	if ing != nil {
		ing.Stop(wait)
	}
	// 3. correlator: process what is delivered, snapshot
	stopWatch()
	stopCorr()
	corrStopped := make(chan struct{})
	go func() { <-corrDone; close(corrStopped) }()
	wait("correlator", corrStopped)
	// 4. sinks
	stopSinks()
	wait("sinks", waitGroupDone(&sinkWG))
	for _, s := range built {
		_ = s.Close()
	}
	closeBus()
	log.Info("stopped")
	return nil
}

// serveHTTP runs the HTTP endpoint until ctx is done: metrics, health and
// reload, and with the correlate role the web view, the silences and the
// dead letters.
func serveHTTP(ctx context.Context, cfg *Config, b *bus.Bus, set *rules.Set, met *metrics, sil *silence.Store, reload func() error, correlate bool, now func() time.Time, log *slog.Logger) error {
	paths := "/metrics /healthz /readyz"
	var mount func(*http.ServeMux)
	if correlate {
		mount = webView(ctx, b, set, met.corr, sil, cfg, now, log)
		paths = "/metrics /healthz /readyz POST /-/reload, web view on /"
	}
	addr, err := httpapi.Serve(ctx, cfg.HTTP, httpapi.Options{
		Gatherer: met.reg, Ready: met.ready.Ready, Reload: reload, Mount: mount,
		Silences: sil, JS: b.JS, SinkNames: met.sinks.Names, Now: time.Now, Log: log,
	})
	if err != nil {
		return err
	}
	if addr != "" {
		log.Info("http endpoint", "addr", addr, "paths", paths)
	}
	return nil
}

// newCorrelators makes the durable correlators of the partitions of
// KLAXON_EVENTS this process may hold: with leases on an external NATS
// cluster, all of them without on the embedded server.
func newCorrelators(ctx context.Context, b *bus.Bus, set *rules.Set, cfg CorrelatorConfig, now func() time.Time, log *slog.Logger, met *durable.Metrics) (*durable.Correlators, error) {
	n, err := b.Partitions(ctx)
	if err != nil {
		return nil, fmt.Errorf("correlator: %w", err)
	}
	o := durable.Options{JS: b.JS, Partitions: n, Rules: set, Now: now, Log: log, Metrics: met}
	if !b.Embedded() {
		if o.Leases, err = b.Leases(ctx); err != nil {
			return nil, fmt.Errorf("correlator: %w", err)
		}
	}
	return durable.New(cfg.durable(), o)
}

// startPublisher publishes the ingest role's events, through the edge
// filter (following the correlator's rules until ctx is done) when
// sources.edge_filter is on.
func startPublisher(ctx context.Context, cfg *Config, b *bus.Bus, met *metrics, ing *ingestrole.Role, log *slog.Logger) {
	var po bus.PublisherOptions
	if cfg.Sources.EdgeFilter {
		f := rulesync.NewFilter(log)
		met.reg.MustRegister(f.Collectors()...)
		go f.Follow(ctx, b.JS)
		po.Keep = f.Keep
	}
	pub := b.NewPublisher(log, po)
	met.bus.SetPublisher(pub)
	ing.StartPublisher(pub)
}

func ruleCount(set *rules.Set) int {
	if set == nil {
		return 0
	}
	return len(set.Rules)
}

// newIngestRole opens the checkpoints and builds the configured sources.
func newIngestRole(cfg *Config, node string, now func() time.Time, met *metrics, log *slog.Logger) (*ingestrole.Role, error) {
	cps, err := ingest.OpenCheckpoints(filepath.Join(cfg.DataDir, "checkpoints.json"))
	if err != nil {
		return nil, err
	}
	ident := ingest.NewIdentity()
	ir := ingestrole.Config{Checkpoints: cps, Identity: ident, Allocs: newAllocCache(cfg, log), Metrics: met.src, Now: now, Log: log}
	for _, sc := range cfg.Sources.NomadLog {
		n := node
		if sc.Node != "" {
			n = sc.Node
		}
		t, err := nomadlog.New(nomadlog.Config{
			Paths: sc.Paths, ReadFrom: sc.ReadFrom, DefaultNode: n, Identity: ident,
			MaxLineBytes: sc.MaxLineBytes, PollInterval: sc.PollInterval,
			Checkpoints: cps, Now: now,
		}, log)
		if err != nil {
			return nil, err
		}
		ir.Sources = append(ir.Sources, t)
	}
	for i, sc := range cfg.Sources.Journald {
		s, err := journald.New(journald.Config{
			Units: sc.Units, Directory: sc.Directory, Files: sc.Files, ReadFrom: sc.ReadFrom,
			Node: sc.Node, DefaultNode: node, Identity: ident, MaxLineBytes: sc.MaxLineBytes,
			Journalctl: sc.Journalctl, Checkpoints: cps, Now: now,
		}, log)
		if err != nil {
			return nil, fmt.Errorf("sources.journald[%d]: %w", i, err)
		}
		ir.Sources = append(ir.Sources, s)
	}
	for _, sc := range cfg.Sources.NomadEvents {
		ncfg := nomadevents.Config{
			Address: sc.Address, Region: sc.Region, Namespace: sc.Namespace,
			Token: sc.Token, TokenFile: sc.TokenFile, Topics: sc.Topics,
			Checkpoints: cps, Identity: ident,
		}
		ncfg.TLS = sc.TLS.api()
		s, err := nomadevents.New(ncfg, log)
		if err != nil {
			return nil, err
		}
		ir.Sources = append(ir.Sources, s)
	}
	for _, sc := range cfg.Sources.WinEvtFiles {
		s, err := winevt.New(winevt.Config{Paths: sc.Paths, ReadFrom: sc.ReadFrom, PollInterval: sc.PollInterval, Checkpoints: cps, Identity: ident}, log)
		if err != nil {
			return nil, err
		}
		ir.Sources = append(ir.Sources, s)
	}
	if wc := cfg.Sources.WinEvt; wc != nil {
		s, err := winevt.NewLive(winevt.LiveConfig{Channels: wc.Channels, Query: wc.Query, Checkpoints: cps, Identity: ident}, log)
		if err != nil {
			return nil, fmt.Errorf("sources.winevt: %w", err)
		}
		ir.Sources = append(ir.Sources, s)
	}
	wf, err := windowsFactsSources(cfg, node, cps, now, log)
	if err != nil {
		return nil, err
	}
	ir.Sources = append(ir.Sources, wf...)
	if len(ir.Sources) == 0 {
		log.Warn("no sources configured (sources: nomad_log, journald, nomad_events, winevt_files, winevt)")
	}
	return ingestrole.New(ir), nil
}

// newAllocCache learns allocations' jobs from the event stream and asks
// the agent (nomad.address, else the first event-stream source's) for
// those it has not seen.
func newAllocCache(cfg *Config, log *slog.Logger) *nomadalloc.Cache {
	nc := cfg.Nomad
	if nc.Address == "" && len(cfg.Sources.NomadEvents) > 0 {
		s := cfg.Sources.NomadEvents[0]
		nc.Address, nc.Token, nc.Region, nc.TLS = s.Address, s.Token, s.Region, s.TLS
	}
	acfg := nomadalloc.Config{Log: log}
	if nc.Address != "" {
		if c, err := nomadClient(nc); err != nil {
			log.Warn("nomad: allocations' jobs will be learnt from the event stream only", "err", err)
		} else {
			acfg.Lookup = nomadalloc.APILookup(c, nc.Token.Reveal())
			acfg.JobLookup = nomadalloc.APIJobLookup(c, nc.Token.Reveal())
		}
	}
	return nomadalloc.New(acfg)
}
