package testkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/klaxon-dev/klaxon/rules"
)

// repoRoot is the repository's directory, found from the test's directory
// upwards (its go.mod).
func repoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// NeedShared returns the path of rel in the team's shared test data
// (../shared/testdata beside the repository; not copied: licence
// unknown), and skips the test when it is absent.
func NeedShared(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join(repoRoot(tb), "..", "shared", "testdata", rel)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("shared test data absent: %v", err)
	}
	return p
}

// BundledRules loads the repository's rules.d.
func BundledRules(tb testing.TB) *rules.Set {
	tb.Helper()
	set, err := rules.LoadDir(filepath.Join(repoRoot(tb), "rules.d"))
	if err != nil {
		tb.Fatal(err)
	}
	return set
}
