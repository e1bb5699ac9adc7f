package main

import (
	"context"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cmdRole(ctx, "run", args, stdout, stderr, app.Run)
}
