package nomadapi

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/redact"
)

// LearnNodeName asks the agent for its node name until it answers (with a
// growing delay, up to a minute) and then makes host an alias of it: events
// labelled with the host name so far are labelled with the node's name.
func LearnNodeName(ctx context.Context, nc Config, host string, ident *ingest.Identity, log *slog.Logger) {
	bo := backoff.New(time.Second, time.Minute)
	for attempt := 1; ; attempt++ {
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
		n, err := NodeName(nc)
		if err != nil || n == "" {
			continue
		}
		name := ingest.CanonicalHost(n)
		ident.Learn("", name, host)
		log.Info("node name from the Nomad agent", "node", name, "was", host, "attempts", attempt)
		return
	}
}

// NodeName asks the agent nc names for its node name (3 s at most); an
// error names no token.
func NodeName(nc Config) (string, error) {
	c, err := NewClient(nc)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var self api.AgentSelf
	if _, err := c.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		// A proxy in front of the agent may echo the request: no token in logs.
		return "", errors.New(redact.Scrub(Explain(nc.Address, err).Error(), nc.Token.Reveal()))
	}
	if n, ok := self.Config["NodeName"].(string); ok && n != "" {
		return n, nil
	}
	if n, ok := self.Stats["client"]["node_name"]; ok {
		return n, nil
	}
	return self.Member.Name, nil
}
