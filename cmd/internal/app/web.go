package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/cmd/internal/replay"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/rules"
)

// mountWebView puts the web view on the role's HTTP endpoint (see
// serveHTTP): the live incidents followed from KLAXON_INCIDENTS through an
// ordered consumer until ctx is done, the rules, counters and inhibited
// groups the correlator goroutine publishes with its gauges (set until the
// first publication), the playground on the rules in use, the history
// (KLAXON_INCIDENTS) and the silences (changes need http.token when set).
// Nothing is mounted when the endpoint is off.
func (m *metrics) mountWebView(ctx context.Context, b *bus.Bus, set *rules.Set, cfg *Config, now func() time.Time, log *slog.Logger) {
	if cfg.HTTP.Listen == "off" {
		return
	}
	store := web.NewStore()
	go followIncidents(ctx, b, store, log)
	current := func() *rules.Set {
		if g := m.corr.Gauges(); g != nil && g.Rules != nil {
			return g.Rules
		}
		return set
	}
	wc := web.Config{
		Incidents:  store,
		Rules:      current,
		Stats:      m.ruleStats,
		Playground: replay.Playground(current, correlate.Options{MaxEvidence: cfg.Correlator.MaxEvidence, UpdateInterval: cfg.Correlator.UpdateInterval}, log),
		Now:        now,
		Log:        log,
		Token:      cfg.HTTP.Token,
		Inhibited: func() []correlate.Inhibited {
			if g := m.corr.Gauges(); g != nil {
				return g.Inhibited
			}
			return nil
		},
		History: func(ctx context.Context, q history.Query) (history.Result, error) {
			return history.Search(ctx, b.JS, q)
		},
		HistoryGet: func(ctx context.Context, id string, hint history.Hint) (history.Detail, error) {
			return history.Get(ctx, b.JS, id, hint)
		},
	}
	if m.silences != nil {
		wc.Silences = m.silences
	}
	h := web.New(wc)
	m.mount = h.Register
}

// followIncidents feeds the store until ctx is done or the connection
// closes, starting over after a failure.
func followIncidents(ctx context.Context, b *bus.Bus, store *web.Store, log *slog.Logger) {
	for {
		err := web.Follow(ctx, b.JS, store, log)
		if ctx.Err() != nil || b.NC.IsClosed() || b.NC.IsDraining() || err == nil {
			return
		}
		log.Warn("web view: following incidents failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// ruleStats reads the correlator's counters from its last gauges.
func (m *metrics) ruleStats() web.RuleStats {
	g := m.corr.Gauges()
	if g == nil {
		return web.RuleStats{}
	}
	return web.RuleStats{Events: g.Stats.Events, MatchesByRule: g.Stats.MatchesByRule, ActiveGroups: g.Groups}
}
