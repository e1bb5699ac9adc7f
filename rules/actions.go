package rules

import (
	"strings"
)

// ActionNodeEligibility marks the incident's node ineligible while the
// incident fires (sinks/nomadaction carries it out, when configured).
const ActionNodeEligibility = "nomad.node.eligibility"

// KnownActions are the actions a rule may name in `actions:`.
var KnownActions = []string{ActionNodeEligibility}

// actions: the actions the rule names, a list of known action names. An
// action on the incident's node needs a rule grouped by node.
func (b *ruleBuilder) actions() {
	n := b.d.Actions
	if !n.ok() || n.null() {
		return
	}
	b.origin("actions", n)
	items, ok := listItems(n) // not null (above)
	if !ok {
		b.errf(n, "actions: expected a list of action names (%s)", strings.Join(KnownActions, ", "))
		return
	}
	b.eachScalar(n, items, "actions", func(it yn, s string) {
		switch {
		case !contains(KnownActions, s):
			msg := "actions: unknown action " + `"` + s + `"` + " (known: " + strings.Join(KnownActions, ", ") + ")"
			if sug := suggest(s, KnownActions); sug != "" {
				msg = "actions: unknown action " + `"` + s + `"` + ` (did you mean "` + sug + `"?)`
			}
			b.errf(it, "%s", msg)
		case contains(b.r.Actions, s):
			b.errf(it, "actions: %q given twice", s)
		case s == ActionNodeEligibility && !groupsByNode(b.r.By):
			b.errf(it, "actions: %s acts on the incident's node: the rule must group by node (correlate.by lists node)", s)
		default:
			b.r.Actions = append(b.r.Actions, s)
		}
	})
}

// groupsByNode reports whether by has the node path (alone or as the last
// alternative).
func groupsByNode(by []string) bool {
	for _, p := range by {
		if p == "node" || strings.HasSuffix(p, "|node") {
			return true
		}
	}
	return false
}
