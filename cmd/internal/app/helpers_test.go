package app

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
)

// shared is the team's shared test data (not copied: licence unknown).
const shared = "../../../../shared/testdata"

func needShared(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(shared, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test data absent: %v", err)
	}
	return p
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func logTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// bundledRules loads rules.d.
func bundledRules(t testing.TB) *rules.Set { return testkit.BundledRules(t) }
