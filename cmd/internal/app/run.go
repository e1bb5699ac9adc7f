package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/ingest/winevt"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Options are the process-level inputs of Run.
type Options struct {
	Log *slog.Logger
	// Stdout receives the stdout sink's lines (default os.Stdout).
	Stdout io.Writer
	// Reload delivers reload requests (SIGHUP in main).
	Reload <-chan struct{}
	// Now is the wall clock (default time.Now).
	Now func() time.Time
	// Ready, when set, is closed once every role runs.
	Ready chan<- struct{}
}

// Run runs every role in one process until ctx is done, then shuts down in
// order: sources → publisher drained → correlator flushed → sinks, under
// cfg.ShutdownTimeout.
func Run(ctx context.Context, cfg *Config, opts Options) error {
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
	set, err := rules.LoadDir(cfg.RulesDir)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	node := resolveNode(cfg, log)
	log.Info("starting", "node", node, "rules", len(set.Rules), "data_dir", cfg.DataDir)

	b, err := bus.Open(ctx, cfg.BusConfig(), log)
	if err != nil {
		return err
	}
	met := newMetrics()
	met.bus = b
	met.ruleErrors = set.Errors
	closeBus := func() {
		cctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := b.Close(cctx); err != nil {
			log.Warn("bus close", "err", err)
		}
	}

	// Sinks.
	sinkCtx, stopSinks := context.WithCancel(context.Background())
	var sinkWG sync.WaitGroup
	sil, err := openSilences(sinkCtx, b, log)
	if err != nil {
		stopSinks()
		closeBus()
		return err
	}
	met.silences = sil
	var built []sinks.Sink
	for i, sc := range cfg.Sinks {
		s, dc, err := buildSink(i, sc, sinkEnv{stdout: opts.Stdout, nc: b.NC, log: log})
		if err != nil {
			stopSinks()
			closeBus()
			for _, s := range built {
				_ = s.Close()
			}
			return err
		}
		built = append(built, s)
		dc.Silencer = sil
		d := sinks.NewDispatcher(b.JS, s, dc, log)
		met.dispatch = append(met.dispatch, namedDispatcher{s.Name(), d})
		sinkWG.Add(1)
		go func() {
			defer sinkWG.Done()
			if err := d.Run(sinkCtx); err != nil {
				log.Error("sink stopped", "sink", s.Name(), "err", err)
			}
		}()
	}

	// Correlator.
	corr, err := newCorrelatorRole(ctx, b, set, cfg.Correlator, opts.Now, log, met)
	if err != nil {
		stopSinks()
		closeBus()
		return err
	}
	corrCtx, stopCorr := context.WithCancel(context.Background())
	corrDone := make(chan error, 1)
	go func() { corrDone <- corr.run(corrCtx) }()

	watcher, err := rules.NewWatcher(cfg.RulesDir, log, corr.SetRules, func(err error) {
		log.Error("rules not reloaded; the running rules stay in place", "err", err)
	})
	if err != nil {
		log.Warn("rule file watching unavailable; reload with SIGHUP", "err", err)
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	if watcher != nil {
		go func() { _ = watcher.Run(watchCtx) }()
	}
	go func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-opts.Reload:
				if watcher == nil {
					if s, err := rules.LoadDir(cfg.RulesDir); err != nil {
						log.Error("rules not reloaded; the running rules stay in place", "err", err)
					} else {
						corr.SetRules(s)
					}
					continue
				}
				if err := watcher.Reload(); err != nil {
					log.Error("rules not reloaded; the running rules stay in place", "err", err)
				}
			}
		}
	}()

	// Sources → publisher.
	cps, err := ingest.OpenCheckpoints(filepath.Join(cfg.DataDir, "checkpoints.json"))
	if err != nil {
		stopWatch()
		stopCorr()
		stopSinks()
		closeBus()
		return err
	}
	ident := ingest.NewIdentity()
	var sources []ingest.Source
	stopAll := func() {
		stopWatch()
		stopCorr()
		stopSinks()
		closeBus()
	}
	for _, sc := range cfg.Sources.NomadLog {
		n := node
		if sc.Node != "" {
			n = sc.Node
		}
		t, err := nomadlog.New(nomadlog.Config{
			Paths: sc.Paths, ReadFrom: sc.ReadFrom, DefaultNode: n, Identity: ident,
			MaxLineBytes: sc.MaxLineBytes, PollInterval: sc.PollInterval,
			Checkpoints: cps, Now: opts.Now,
		}, log)
		if err != nil {
			stopAll()
			return err
		}
		sources = append(sources, t)
	}
	for _, sc := range cfg.Sources.NomadEvents {
		ncfg := nomadevents.Config{
			Address: sc.Address, Region: sc.Region, Namespace: sc.Namespace,
			Token: sc.Token, TokenFile: sc.TokenFile, Topics: sc.Topics,
			Checkpoints: cps, Identity: ident,
		}
		ncfg.TLS = nomadevents.TLSConfig{CACert: sc.TLS.CACert, ClientCert: sc.TLS.ClientCert, ClientKey: sc.TLS.ClientKey, ServerName: sc.TLS.ServerName, Insecure: sc.TLS.Insecure}
		s, err := nomadevents.New(ncfg, log)
		if err != nil {
			stopAll()
			return err
		}
		sources = append(sources, s)
	}
	for _, sc := range cfg.Sources.WinEvtFiles {
		s, err := winevt.New(winevt.Config{Paths: sc.Paths, ReadFrom: sc.ReadFrom, PollInterval: sc.PollInterval, Checkpoints: cps, Identity: ident}, log)
		if err != nil {
			stopAll()
			return err
		}
		sources = append(sources, s)
	}
	if wc := cfg.Sources.WinEvt; wc != nil {
		s, err := winevt.NewLive(winevt.LiveConfig{Channels: wc.Channels, Query: wc.Query, Checkpoints: cps, Identity: ident}, log)
		if err != nil {
			stopAll()
			return fmt.Errorf("sources.winevt: %w", err)
		}
		sources = append(sources, s)
	}
	srcCtx, stopSources := context.WithCancel(context.Background())
	events := make(chan ingest.Event, 1024)
	var srcWG sync.WaitGroup
	met.cps = cps
	for _, s := range sources {
		meter := &sourceMeter{src: s}
		met.sources = append(met.sources, meter)
		own := make(chan ingest.Event, 256)
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			done := make(chan struct{})
			go func() { meter.forward(own, events, opts.Now); close(done) }()
			if err := s.Run(srcCtx, own); err != nil && srcCtx.Err() == nil {
				log.Error("source stopped", "source", s.Name(), "err", err)
			}
			close(own)
			<-done
		}()
	}
	pub := b.NewPublisher(log, bus.PublisherOptions{})
	met.publisher = pub
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	reload := func() error {
		if watcher != nil {
			return watcher.Reload()
		}
		s, err := rules.LoadDir(cfg.RulesDir)
		if err != nil {
			return err
		}
		corr.SetRules(s)
		return nil
	}
	met.mountWebView(httpCtx, b, set, cfg, opts.Now, log)
	addr, err := met.serveHTTP(httpCtx, cfg.HTTP, reload, log)
	if err != nil {
		stopSources()
		stopAll()
		return err
	}
	if addr != "" {
		log.Info("http endpoint", "addr", addr, "paths", "/metrics /healthz /readyz POST /-/reload")
	}
	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pubCtx, events) }()

	met.ready.Store(true)
	if opts.Ready != nil {
		close(opts.Ready)
	}
	<-ctx.Done()
	log.Info("shutting down")
	met.ready.Store(false)
	deadline := time.Now().Add(cfg.ShutdownTimeout)
	wait := func(name string, done <-chan struct{}) {
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			log.Warn("shutdown step timed out", "step", name)
		}
	}
	// 1. sources
	stopSources()
	wait("sources", waitGroupDone(&srcWG))
	close(events)
	// 2. publisher: everything read is stored and committed
	pubStopped := make(chan struct{})
	go func() {
		if err := <-pubDone; err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("publisher", "err", err)
		}
		close(pubStopped)
	}()
	wait("publisher", pubStopped)
	stopPub()
	if err := cps.Flush(); err != nil {
		log.Error("checkpoints not saved", "err", err)
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

func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	return c
}

// resolveNode names this machine: config, else the local Nomad agent's
// node name, else the host name.
func resolveNode(cfg *Config, log *slog.Logger) string {
	if cfg.Node != "" {
		return ingest.CanonicalHost(cfg.Node)
	}
	if cfg.Nomad.Address != "" {
		if n, err := agentNodeName(cfg.Nomad); err == nil && n != "" {
			return ingest.CanonicalHost(n)
		} else if err != nil {
			log.Warn("node name from the Nomad agent unavailable; using the host name", "addr", cfg.Nomad.Address, "err", err)
		}
	}
	h, _ := os.Hostname()
	return ingest.CanonicalHost(h)
}

func agentNodeName(nc NomadConfig) (string, error) {
	conf := nomad.DefaultConfig()
	conf.Address = nc.Address
	conf.SecretID = nc.Token.Reveal()
	conf.HttpClient = &http.Client{Timeout: 3 * time.Second}
	c, err := nomad.NewClient(conf)
	if err != nil {
		return "", err
	}
	self, err := c.Agent().Self()
	if err != nil {
		// A proxy in front of the agent may echo the request: no token in logs.
		return "", errors.New(sinks.Scrub(err.Error(), nc.Token.Reveal()))
	}
	if n, ok := self.Config["NodeName"].(string); ok && n != "" {
		return n, nil
	}
	if n, ok := self.Stats["client"]["node_name"]; ok {
		return n, nil
	}
	return self.Member.Name, nil
}
