package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
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
		Playground: Playground(current, correlate.Options{MaxEvidence: cfg.Correlator.MaxEvidence, UpdateInterval: cfg.Correlator.UpdateInterval}, log),
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

// Playground returns the web view's playground: pasted input goes through
// the decoders `klaxon replay` uses (format auto-detected), the rules
// current() returns and a correlator of its own, so the running pipeline is
// not touched. The result lists every event with the rules and selectors
// it matched, and the last change of every incident it raises.
func Playground(current func() *rules.Set, opts correlate.Options, log *slog.Logger) web.PlaygroundFunc {
	return func(ctx context.Context, req web.PlaygroundRequest) (*web.PlaygroundResult, error) {
		set := current()
		if set == nil {
			return nil, errors.New("playground: no rules loaded")
		}
		// Replay's inputs are files (EVTX is read by name): the input goes
		// to a temporary file for the time of the run.
		f, err := os.CreateTemp("", "klaxon-playground-*")
		if err != nil {
			return nil, fmt.Errorf("playground: %w", err)
		}
		name := f.Name()
		defer os.Remove(name)
		_, err = f.Write(req.Input)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("playground: %w", err)
		}
		hide := func(err error) error {
			return errors.New(strings.ReplaceAll(strings.TrimPrefix(err.Error(), "replay: "), name, "input"))
		}
		in, err := openInput(name)
		if err != nil {
			return nil, hide(err)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ident := ingest.NewIdentity()
		in.start(ctx, ReplayOptions{Node: req.Node, Log: log}, ident)

		res := &web.PlaygroundResult{Format: in.kind, Events: []web.PlaygroundEvent{}, Incidents: []correlate.Incident{}}
		last := map[string]int{} // incident id → index in res.Incidents
		emit := func(inc correlate.Incident) {
			res.Changes++
			inc.Evidence = nil
			if i, ok := last[inc.ID]; ok {
				res.Incidents[i] = inc
				return
			}
			last[inc.ID] = len(res.Incidents)
			res.Incidents = append(res.Incidents, inc)
		}
		feed := &feeder{corr: correlate.New(set, opts)}
		for ctx.Err() == nil && in.next() {
			ev := in.head()
			if ev.NodeID != "" {
				if n, ok := ident.NameOf(ev.NodeID); ok {
					ev.Node = n
				}
			}
			res.EventsTotal++
			var matches []web.RuleMatch
			set.Match(ev, func(r *rules.Rule, mask uint64) {
				m := web.RuleMatch{Rule: r.ID}
				for i, s := range r.Selectors {
					if mask&(1<<i) != 0 {
						m.Selectors = append(m.Selectors, s.Name)
					}
				}
				matches = append(matches, m)
			})
			if len(matches) > 0 {
				res.Matched++
			}
			if len(res.Events) < web.MaxEvents {
				res.Events = append(res.Events, web.PlaygroundEvent{
					Time: ev.Time, Node: ev.Node, Source: ev.Source, Kind: ev.Kind, Level: ev.Level, Msg: ev.Msg, Fields: ev.Fields, Matches: matches,
				})
			}
			feed.process(ev, emit)
		}
		if ctx.Err() == nil {
			feed.finish(emit)
		}
		cancel()
		in.wait()
		res.Lines, res.Unparsed = in.stats.Lines, in.stats.Unparsed+in.stats.Oversize
		slices.SortStableFunc(res.Incidents, func(a, b correlate.Incident) int { return a.StartedAt.Compare(b.StartedAt) })
		if in.err != nil && !errors.Is(in.err, context.Canceled) && !errors.Is(in.err, context.DeadlineExceeded) {
			return res, hide(in.err)
		}
		return res, nil
	}
}
