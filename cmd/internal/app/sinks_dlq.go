package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"

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

// OpenToolBus connects a command-line tool to the bus of cfg
// (bus.OpenForTool).
func OpenToolBus(ctx context.Context, cfg *Config, log *slog.Logger) (*bus.Bus, error) {
	return bus.OpenForTool(ctx, cfg.BusConfig(), log)
}

// SinkNames lists the configured sink names.
func (c *Config) SinkNames() []string {
	out := make([]string, len(c.Sinks))
	for i, s := range c.Sinks {
		out[i] = s.Name
	}
	return out
}
