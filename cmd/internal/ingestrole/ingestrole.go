// Package ingestrole runs the ingest role: every source, each through its
// meter, into the publisher that stores the events in KLAXON_EVENTS; and
// stops them in order, so that everything read is stored and committed.
package ingestrole

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/meter"
	"github.com/klaxon-dev/klaxon/ingest/nomadalloc"
)

// Config is what the role runs.
type Config struct {
	// Sources are the configured sources.
	Sources []ingest.Source
	// Checkpoints are the sources' positions, saved when the role stops.
	Checkpoints *ingest.Checkpoints
	// Identity is the sources' shared node identity map.
	Identity *ingest.Identity
	// Allocs gives log lines the job of their allocation.
	Allocs *nomadalloc.Cache
	// Metrics counts what each source reads.
	Metrics *meter.Metrics
	// Now is the clock of the meters.
	Now func() time.Time
	// Log receives the role's diagnostics.
	Log *slog.Logger
}

// Publisher stores events until ctx is done or events is closed.
type Publisher interface {
	Run(ctx context.Context, events <-chan ingest.Event) error
}

// Role is the sources feeding the publisher.
type Role struct {
	cfg    Config
	events chan ingest.Event

	srcCtx  context.Context
	stopSrc context.CancelFunc
	srcWG   sync.WaitGroup
	stopPub context.CancelFunc
	pubDone chan error
}

// New makes the role of cfg; nothing runs before StartSources.
func New(cfg Config) *Role {
	return &Role{cfg: cfg, events: make(chan ingest.Event, 1024)}
}

// Identity is the sources' shared node identity map.
func (r *Role) Identity() *ingest.Identity { return r.cfg.Identity }

// StartSources runs every source, each through its meter, and returns the
// context they run under (done once they are stopped).
func (r *Role) StartSources() context.Context {
	r.srcCtx, r.stopSrc = context.WithCancel(context.Background())
	r.cfg.Metrics.SetCheckpoints(r.cfg.Checkpoints)
	for _, s := range r.cfg.Sources {
		meter := r.cfg.Metrics.Meter(s, r.observe)
		own := make(chan ingest.Event, 256)
		r.srcWG.Add(1)
		go func() {
			defer r.srcWG.Done()
			done := make(chan struct{})
			go func() { meter.Forward(own, r.events, r.cfg.Now); close(done) }()
			if err := s.Run(r.srcCtx, own); err != nil && r.srcCtx.Err() == nil {
				r.cfg.Log.Error("source stopped", "source", s.Name(), "err", err)
			}
			close(own)
			<-done
		}()
	}
	return r.srcCtx
}

// StopSources stops the sources (after a failed start; Stop stops in order).
func (r *Role) StopSources() { r.stopSrc() }

// observe gives an event what the ingest role knows beyond its source:
// the job of the allocation a log line names.
func (r *Role) observe(ev *ingest.Event) {
	r.cfg.Allocs.Observe(r.srcCtx, ev)
}

// StartPublisher publishes the events through pub.
func (r *Role) StartPublisher(pub Publisher) {
	var pubCtx context.Context
	pubCtx, r.stopPub = context.WithCancel(context.Background())
	r.pubDone = make(chan error, 1)
	go func() { r.pubDone <- pub.Run(pubCtx, r.events) }()
}

// Stop stops the sources, lets the publisher store and commit everything
// read, and saves the checkpoints; wait bounds each step.
func (r *Role) Stop(wait func(step string, done <-chan struct{})) {
	r.stopSrc()
	srcStopped := make(chan struct{})
	go func() { r.srcWG.Wait(); close(srcStopped) }()
	wait("sources", srcStopped)
	close(r.events)
	pubStopped := make(chan struct{})
	go func() {
		if err := <-r.pubDone; err != nil && !errors.Is(err, context.Canceled) {
			r.cfg.Log.Warn("publisher", "err", err)
		}
		close(pubStopped)
	}()
	wait("publisher", pubStopped)
	r.stopPub()
	if err := r.cfg.Checkpoints.Flush(); err != nil {
		r.cfg.Log.Error("checkpoints not saved", "err", err)
	}
}
