package main

import (
	"context"
	"fmt"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/ruletest"
	"github.com/klaxon-dev/klaxon/rules"
)

const rulesUsage = `Usage:
  klaxon rules lint [--strict] [--show ID|all] [DIR]
                            check the rule files of DIR (default rules.d); print the
                            effective definition of every rule overrides change
  klaxon rules test [DIR]   run the rule tests (*_test.yaml) of DIR (default rules.d)
`

func cmdRules(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, args, stdout, stderr, rulesUsage, "rules", "rules: lint or test?", map[string]command{
		"lint": noContext(cmdRulesLint), "test": noContext(cmdRulesTest),
	})
}
func dirArg(fs interface{ Args() []string }) string {
	if a := fs.Args(); len(a) > 0 {
		return a[0]
	}
	return "rules.d"
}

func cmdRulesLint(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rules lint", "klaxon rules lint [--strict] [--show ID|all] [DIR]", stderr)
	strict := fs.Bool("strict", false, "fail on warnings too")
	show := fs.String("show", "", "print the effective definition of this rule (or of all), with where each part came from")
	if err := parse(fs, args); err != nil {
		return err
	}
	dir := dirArg(fs)
	set, err := rules.LoadDir(dir)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if *show != "" && *show != "all" && set.Rule(*show) == nil && set.DisabledRule(*show) == nil {
		return &exitError{code: 1, err: fmt.Errorf("rules lint: --show: no rule %q in %s", *show, dir)}
	}
	findings := rules.Lint(set)
	errs, warns := 0, 0
	for _, f := range findings {
		fmt.Fprintf(stdout, "%s:%d:%d: %s: rule %s: %s\n", f.File, f.Line, f.Col, f.Severity, f.Rule, f.Msg)
		if f.Severity == "error" {
			errs++
		} else {
			warns++
		}
	}
	changed := printEffective(stdout, set, *show)
	fmt.Fprintf(stdout, "%d rules in %d files: %d errors, %d warnings", len(set.Rules), len(set.Files()), errs, warns)
	if changed > 0 || len(set.Disabled()) > 0 {
		fmt.Fprintf(stdout, "; overrides change %d and disable %d", changed, len(set.Disabled()))
	}
	fmt.Fprintln(stdout)
	if errs > 0 || (*strict && warns > 0) {
		return &exitError{code: 1, err: fmt.Errorf("rules lint: %d errors, %d warnings", errs, warns)}
	}
	return nil
}

func cmdRulesTest(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rules test", "klaxon rules test [DIR]", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	passed, failed, err := ruletest.RunDir(dirArg(fs), stdout)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("rules test: %d failed", failed)}
	}
	return nil
}

// printEffective prints the effective definition of every rule overrides
// changed (and of the rule --show names, or of all), each value with where
// it came from, and the rules overrides disabled. It returns how many
// enabled rules overrides changed.
func printEffective(w io.Writer, set *rules.Set, show string) int {
	changed := 0
	all := append(append([]*rules.Rule(nil), set.Rules...), set.Disabled()...)
	for _, r := range all {
		_, off := r.DisabledBy()
		if r.Overridden() && !off {
			changed++
		}
		if !(show == "all" || show == r.ID || (show == "" && r.Overridden() && !off)) {
			continue
		}
		what := "effective definition"
		if r.Overridden() {
			what += ", changed by overrides"
		}
		fmt.Fprintf(w, "\n# rule %s (%s:%d:%d): %s\n%s", r.ID, r.File, r.Line, r.Col, what, r.EffectiveYAML())
	}
	for _, r := range set.Disabled() {
		o, _ := r.DisabledBy()
		fmt.Fprintf(w, "\n# rule %s (%s:%d:%d): disabled (enabled: false, %s)\n", r.ID, r.File, r.Line, r.Col, o)
	}
	if len(all) > 0 && (changed > 0 || len(set.Disabled()) > 0 || show != "") {
		fmt.Fprintln(w)
	}
	return changed
}
