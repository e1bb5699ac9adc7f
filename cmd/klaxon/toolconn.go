package main

import (
	"context"
	"errors"
	"io"
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
	b   *bus.Bus
	api *httpSilences // the generic JSON client of silence.go
}

func openToolConn(ctx context.Context, config, logLevel string, stderr io.Writer) (*toolConn, error) {
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
			return &toolConn{cfg: cfg, api: &httpSilences{base: base, token: cfg.HTTP.Token.Reveal(), client: &http.Client{Timeout: 2 * time.Minute}}}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return &toolConn{cfg: cfg, b: b}, nil
}

func (c *toolConn) close() {
	if c.b != nil {
		closeToolBus(c.b)
	}
}
