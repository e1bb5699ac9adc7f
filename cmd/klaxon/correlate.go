package main

import (
	"context"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
)

func cmdCorrelate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cmdRole(ctx, "correlate", args, stdout, stderr, app.Correlate)
}
