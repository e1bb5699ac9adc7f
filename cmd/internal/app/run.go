package app

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/sinkconfig"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/silence"
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
// cfg.ShutdownTimeout. Ingest and Correlate run the roles apart.
func Run(ctx context.Context, cfg *Config, opts Options) error {
	return runRoles(ctx, cfg, opts, roleSet{ingest: true, correlate: true})
}

// startSinks builds every configured sink and runs a dispatcher for each
// until ctx is done (wg counts them). On an error the caller cancels ctx.
func startSinks(ctx context.Context, cfg *Config, b *bus.Bus, w io.Writer, met *sinks.Metrics, log *slog.Logger, wg *sync.WaitGroup) ([]sinks.Sink, *silence.Store, error) {
	sil, err := openSilences(ctx, b, log)
	if err != nil {
		return nil, nil, err
	}
	var built []sinks.Sink
	for i, sc := range cfg.Sinks {
		s, dc, err := sinkconfig.Build(i, sc, sinkconfig.Env{Stdout: w, NC: b.NC, Log: log})
		if err != nil {
			for _, s := range built {
				_ = s.Close()
			}
			return nil, nil, err
		}
		built = append(built, s)
		dc.Silencer = sil
		d := sinks.NewDispatcher(b.JS, s, dc, log)
		met.Add(s.Name(), d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(ctx); err != nil {
				log.Error("sink stopped", "sink", s.Name(), "err", err)
			}
		}()
	}
	acts, err := startActions(ctx, cfg, b, met, log, wg)
	if err != nil {
		for _, s := range built {
			_ = s.Close()
		}
		return nil, nil, err
	}
	return append(built, acts...), sil, nil
}

// openSilences opens the silences bucket and follows it until ctx is done:
// the dispatchers ask it which incident changes are muted.
func openSilences(ctx context.Context, b *bus.Bus, log *slog.Logger) (*silence.Store, error) {
	st, err := silence.Open(ctx, b.JS, log)
	if err != nil {
		return nil, err
	}
	if err := st.Start(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	return c
}

// resolveNode names this machine: config, else the local Nomad agent's
// node name, else the host name.
func resolveNode(cfg *Config, log *slog.Logger) (node string, agentAnswered bool) {
	if cfg.Node != "" {
		return ingest.CanonicalHost(cfg.Node), false
	}
	h, _ := os.Hostname()
	if cfg.Nomad.Address != "" {
		if n, err := nomadapi.NodeName(cfg.Nomad.apiConfig()); err == nil && n != "" {
			return ingest.CanonicalHost(n), true
		} else if err != nil {
			log.Warn("node name from the Nomad agent unavailable; using the host name until the agent answers", "addr", cfg.Nomad.Address, "host", ingest.CanonicalHost(h), "err", err)
		}
	}
	return ingest.CanonicalHost(h), false
}

// nomadClient is a client of the Nomad agent nc names: nomad/api's
// DefaultConfig (the NOMAD_* variables) with nc on top (TLS, region,
// namespace and unix:// sockets included). It has no overall timeout:
// requests are bounded by their context.
func nomadClient(nc NomadConfig) (*nomad.Client, error) {
	return nomadapi.NewClient(nc.apiConfig())
}
