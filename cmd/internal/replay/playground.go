package replay

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

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
		hide := func(err error) error {
			return errors.New(strings.TrimPrefix(err.Error(), "replay: "))
		}
		in, err := openBytes("input", req.Input)
		if err != nil {
			return nil, hide(err)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ident := ingest.NewIdentity()
		in.start(ctx, Options{Node: req.Node, Log: log}, ident)

		res := &web.PlaygroundResult{Format: in.format.Name, Events: []web.PlaygroundEvent{}, Incidents: []correlate.Incident{}}
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
