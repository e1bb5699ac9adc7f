package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
)

// toolConn is how a command reaches the streams of a config: the bus
// (nats.url, a running klaxon's fixed nats.listen, or the store in
// data_dir while klaxon is stopped), or, when a running klaxon holds the
// embedded store and has no fixed nats.listen, its HTTP endpoint (the same
// API its web view and `klaxon silence` use). Exactly one of b and api is
// set.
type toolConn struct {
	cfg *app.Config
	log *slog.Logger
	b   *bus.Bus
	api *httpSilences // the generic JSON client of silence.go
}

// toolFlags adds the flags of a command that reaches the streams of a
// config: --config and --log-level.
func toolFlags(fs *flag.FlagSet) (config, logLevel *string) {
	config = fs.String("config", "klaxon.yaml", "configuration file (YAML)")
	logLevel = fs.String("log-level", "warn", "log level: debug, info, warn, error")
	return config, logLevel
}

// connectTool opens the tool connection of a command that takes at most
// timeout (connecting included): it returns the command's context, and
// done, which closes the connection and ends the context.
func connectTool(ctx context.Context, timeout time.Duration, config, logLevel string, stderr io.Writer) (context.Context, *toolConn, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	c, err := dialTool(ctx, config, logLevel, stderr, 2*time.Minute)
	if err != nil {
		cancel()
		return ctx, nil, nil, err
	}
	return ctx, c, func() { c.close(); cancel() }, nil
}

// dialTool opens the tool connection of a config; httpTimeout bounds a
// request to a running klaxon's HTTP endpoint.
func dialTool(ctx context.Context, config, logLevel string, stderr io.Writer, httpTimeout time.Duration) (*toolConn, error) {
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return nil, err
	}
	cfg, err := app.LoadToolConfig(config)
	if err != nil {
		return nil, err
	}
	b, err := app.OpenToolBus(ctx, cfg, log)
	if errors.Is(err, bus.ErrDataDirInUse) {
		if base := httpBase(cfg.HTTP.Listen); base != "" {
			return &toolConn{cfg: cfg, log: log, api: &httpSilences{base: base, token: cfg.HTTP.Token.Reveal(), client: &http.Client{Timeout: httpTimeout}}}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return &toolConn{cfg: cfg, log: log, b: b}, nil
}

func (c *toolConn) close() {
	if c.b != nil {
		closeToolBus(c.b)
	}
}
