package testkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/klaxon-dev/klaxon/rules"
)

// BundledRules loads the repository's rules.d, found from the test's
// directory upwards.
func BundledRules(tb testing.TB) *rules.Set {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	set, err := rules.LoadDir(filepath.Join(dir, "rules.d"))
	if err != nil {
		tb.Fatal(err)
	}
	return set
}
