package app

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/cmd/internal/replay"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/correlate/durable"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// mountWebView puts the web view on the role's HTTP endpoint (see
// httpapi): the live incidents followed from KLAXON_INCIDENTS through an
// ordered consumer until ctx is done, the rules, counters and inhibited
// groups the correlator goroutine publishes with its gauges (set until the
// first publication), the playground on the rules in use, the history
// (KLAXON_INCIDENTS) and the silences (changes need http.token when set).
// Nothing is mounted when the endpoint is off.
func webView(ctx context.Context, b *bus.Bus, set *rules.Set, corr *durable.Metrics, sil *silence.Store, cfg *Config, now func() time.Time, log *slog.Logger) func(*http.ServeMux) {
	if cfg.HTTP.Listen == "off" {
		return nil
	}
	store := web.NewStore()
	go web.FollowRetrying(ctx, b.JS, store, func() bool { return b.NC.IsClosed() || b.NC.IsDraining() }, log)
	current := func() *rules.Set {
		if g := corr.Gauges(); g != nil && g.Rules != nil {
			return g.Rules
		}
		return set
	}
	wc := web.Config{
		Incidents:  store,
		Rules:      current,
		Stats:      func() web.RuleStats { return ruleStats(corr) },
		Playground: replay.Playground(current, correlate.Options{MaxEvidence: cfg.Correlator.MaxEvidence, UpdateInterval: cfg.Correlator.UpdateInterval}, log),
		Now:        now,
		Log:        log,
		Token:      cfg.HTTP.Token,
		Inhibited: func() []correlate.Inhibited {
			if g := corr.Gauges(); g != nil {
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
	if sil != nil {
		wc.Silences = sil
	}
	return web.New(wc).Register
}

// ruleStats reads the correlator's counters from its last gauges.
func ruleStats(corr *durable.Metrics) web.RuleStats {
	g := corr.Gauges()
	if g == nil {
		return web.RuleStats{}
	}
	return web.RuleStats{Events: g.Stats.Events, MatchesByRule: g.Stats.MatchesByRule, ActiveGroups: g.Groups}
}
