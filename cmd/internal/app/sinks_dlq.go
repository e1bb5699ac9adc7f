package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
)

// LoadToolConfig reads a config file for a tool that only needs the bus
// and the sink names (`klaxon dlq`): everything is checked as for `klaxon
// run`, except that secrets kept in files or environment variables are not
// loaded, so the tool runs in a shell that lacks them.
func LoadToolConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(&Config{path: path, noSecrets: true}, b)
}

// OpenToolBus connects a command-line tool to the bus of cfg:
//
//   - with nats.url, to those servers;
//   - with the embedded server and a fixed nats.listen address that
//     answers, to the running klaxon through it;
//   - otherwise it opens the embedded store in data_dir itself, which works
//     only while no klaxon runs on it (the store is locked by the process
//     that runs it: two servers on one store would corrupt it).
func OpenToolBus(ctx context.Context, cfg *Config, log *slog.Logger) (*bus.Bus, error) {
	bc := cfg.BusConfig()
	if !bc.Embedded() {
		return bus.Open(ctx, bc, log)
	}
	if addr := dialAddr(bc.Listen); addr != "" {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			conn.Close()
			return bus.Open(ctx, bus.Config{URL: "nats://" + addr, Token: bc.Token, Name: "klaxon-tool"}, log)
		}
	}
	b, err := bus.Open(ctx, bc, log)
	if errors.Is(err, bus.ErrDataDirInUse) {
		hint := "give `klaxon run` a fixed nats.listen address (e.g. 127.0.0.1:4222) so that tools connect to it, or stop it"
		if bc.Listen != "" {
			hint = fmt.Sprintf("nats.listen %s does not answer (a port of 0 cannot be reached); use a fixed port, or stop klaxon", bc.Listen)
		}
		return nil, fmt.Errorf("%w: a running klaxon holds the embedded NATS store in %s: %s", err, cfg.DataDir, hint)
	}
	return b, err
}

// dialAddr is where a tool reaches the embedded server's listener ("" when
// the port is not fixed); a wildcard host is reached on the loopback.
func dialAddr(listen string) string {
	if listen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p == 0 {
		return ""
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// SinkNames lists the configured sink names.
func (c *Config) SinkNames() []string {
	out := make([]string, len(c.Sinks))
	for i, s := range c.Sinks {
		out[i] = s.Name
	}
	return out
}
