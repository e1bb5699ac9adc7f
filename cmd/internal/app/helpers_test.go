package app

import (
	"io"
	"log/slog"
	"testing"

	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
)

// needShared is the path of rel in the team's shared test data, or a skip.
func needShared(t *testing.T, rel string) string { return testkit.NeedShared(t, rel) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func logTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// bundledRules loads rules.d.
func bundledRules(t testing.TB) *rules.Set { return testkit.BundledRules(t) }
