// Package bus connects klaxon to NATS JetStream: an embedded server (the
// default, data under the data dir) or an external server or cluster. It
// owns the NATS layout of DESIGN.md (the KLAXON_EVENTS, KLAXON_INCIDENTS and
// KLAXON_DLQ streams, the KLAXON_STATE and KLAXON_SILENCES buckets), the
// subject names, the event codec and the event Publisher that commits source
// positions only after JetStream stored the events.
//
// Only stream and KV features of nats-server 2.9 are used, so that Debian's
// nats-server (2.9.10) works as an external server; the one exception is
// partitioning KLAXON_EVENTS across correlator replicas (Config.Partitions
// above 1), which needs 2.10's stream subject transforms.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bus is a NATS connection with JetStream, and the embedded server when
// there is one.
type Bus struct {
	// NC is the NATS connection.
	NC *nats.Conn
	// JS is the JetStream context of NC.
	JS jetstream.JetStream

	cfg     Config
	log     *slog.Logger
	srv     *server.Server // nil with an external server
	lock    *dirLock       // held on the data dir while srv runs
	secrets []string       // values to redact from errors
	closed  chan struct{}  // closed by the connection's ClosedHandler

	closeOnce sync.Once
	closeErr  error
}

// OpenEmbedded starts an embedded server storing under dataDir, with the
// default limits, and connects to it in-process: the convenience for other
// packages' tests and for single-process use.
func OpenEmbedded(ctx context.Context, dataDir string, log *slog.Logger) (*Bus, error) {
	return Open(ctx, Config{DataDir: dataDir}, log)
}

// Open connects to the bus described by cfg (defaults applied, then
// validated) and ensures the klaxon streams and buckets exist with cfg's
// limits. With an empty URL it starts an embedded server first. A nil log
// discards. Open fails at once on authentication and TLS errors; while the
// servers refuse connections it retries with back-off until ctx is done.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, log: log, closed: make(chan struct{})}
	for _, s := range []string{cfg.Password.Reveal(), cfg.Token.Reveal()} {
		if s != "" {
			b.secrets = append(b.secrets, s)
		}
	}
	b.secrets = append(b.secrets, urlSecrets(cfg.URL)...)
	if err := b.open(ctx); err != nil {
		b.abort()
		return nil, b.redact(err)
	}
	return b, nil
}

func (b *Bus) open(ctx context.Context) error {
	opts, err := b.connOptions()
	if err != nil {
		return err
	}
	if b.cfg.Embedded() {
		lock, err := lockDataDir(b.cfg.DataDir)
		if err != nil {
			return err
		}
		b.lock = lock
		srv, err := startEmbedded(b.cfg, b.log)
		if err != nil {
			return err
		}
		b.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
		if b.cfg.Token.IsSet() && b.cfg.Listen != "" {
			opts = append(opts, nats.Token(b.cfg.Token.Reveal()))
		}
		nc, err := nats.Connect("", opts...)
		if err != nil {
			return fmt.Errorf("nats: connect to embedded server: %w", err)
		}
		b.NC = nc
		if b.cfg.Listen != "" {
			b.log.Info("nats: embedded server accepts clients", "url", srv.ClientURL())
		}
	} else {
		nc, err := b.connect(ctx, opts)
		if err != nil {
			return err
		}
		b.NC = nc
	}
	if b.srv != nil {
		b.log.Info("nats: embedded server started", "server_version", b.NC.ConnectedServerVersion(),
			"store_dir", filepath.Join(b.cfg.DataDir, "jetstream"))
	} else {
		b.log.Info("nats: connected", "url", b.NC.ConnectedUrlRedacted(),
			"server_version", b.NC.ConnectedServerVersion())
	}
	js, err := jetstream.New(b.NC)
	if err != nil {
		return fmt.Errorf("nats: jetstream: %w", err)
	}
	b.JS = js
	return b.ensureRetrying(ctx)
}

// connOptions are the options of the connection: name, reconnects, event
// logging, and for an external server its authentication and TLS.
func (b *Bus) connOptions() ([]nats.Option, error) {
	log := b.log
	opts := []nats.Option{
		nats.Name(b.cfg.Name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats: disconnected", "err", b.redact(err))
			} else {
				log.Debug("nats: disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.DiscoveredServersHandler(func(nc *nats.Conn) {
			log.Debug("nats: discovered servers", "servers", len(nc.DiscoveredServers()))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats: async error", "subject", sub.Subject, "err", b.redact(err))
			} else {
				log.Warn("nats: async error", "err", b.redact(err))
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug("nats: connection closed")
			close(b.closed)
		}),
	}
	if b.cfg.Embedded() {
		return opts, nil
	}
	c := b.cfg
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password.Reveal()))
	case c.Token.IsSet():
		opts = append(opts, nats.Token(c.Token.Reveal()))
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		opts = append(opts, o)
	}
	if c.TLS.Enabled() {
		opts = append(opts, nats.Secure(c.TLS.clientConfig()))
		if c.TLS.CAFile != "" {
			opts = append(opts, nats.RootCAs(c.TLS.CAFile))
		}
		if c.TLS.CertFile != "" {
			opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
		}
	}
	return opts, nil
}

// connect dials the external servers, retrying with back-off while none
// accepts connections; any other error (authentication, TLS) is returned.
func (b *Bus) connect(ctx context.Context, opts []nats.Option) (*nats.Conn, error) {
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(b.cfg.URL, opts...)
		if err == nil {
			return nc, nil
		}
		if !retryableConnectErr(err) {
			return nil, fmt.Errorf("nats: connect: %w", err)
		}
		d := reconnectDelay(attempt)
		b.log.Warn("nats: no server available, retrying", "attempt", attempt, "in", d, "err", b.redact(err))
		if !backoff.Sleep(ctx, d) {
			return nil, fmt.Errorf("nats: connect: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

func retryableConnectErr(err error) bool {
	if errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// reconnectDelay is an exponential back-off from 250ms to 10s with jitter.
var reconnectDelay = backoff.Exponential(250*time.Millisecond, 10*time.Second)

// limitsStream is the config of one of klaxon's streams: file storage,
// limits retention discarding the oldest, the bus's duplicate window and
// replicas.
func (c Config) limitsStream(name, desc, subjects string, maxAge time.Duration, maxBytes int64) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: desc,
		Subjects:    []string{subjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
}

// ensure creates or updates the streams and buckets.
func (b *Bus) ensure(ctx context.Context) error {
	c := b.cfg
	transform, err := b.eventsPartitioning(ctx)
	if err != nil {
		return err
	}
	events := c.limitsStream(natslayout.EventsStream, "klaxon events of every source: klaxon.events.<source>.<node>",
		natslayout.EventsSubjects, c.EventsMaxAge, c.EventsMaxBytes)
	events.SubjectTransform = transform // partitions by node (nats-server 2.10+), see partition.go
	streams := []jetstream.StreamConfig{
		events,
		c.limitsStream(natslayout.IncidentsStream, "klaxon incident changes: klaxon.incidents.<severity>.<rule>",
			natslayout.IncidentsSubjects, c.IncidentsMaxAge, -1),
		c.limitsStream(natslayout.DLQStream, "klaxon incidents a sink gave up on: klaxon.dlq.<sink>",
			natslayout.DLQSubjects, c.IncidentsMaxAge, -1),
	}
	for _, sc := range streams {
		st, err := b.JS.CreateOrUpdateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamSubjectTransformNotSupported) {
			return b.partitioningUnsupported(transform)
		}
		if err != nil {
			return fmt.Errorf("nats: stream %s: %w", sc.Name, err)
		}
		if sc.Name == natslayout.EventsStream {
			if err := b.checkPartitioning(transform, st.CachedInfo()); err != nil {
				return err
			}
		}
	}
	buckets := []jetstream.KeyValueConfig{
		{
			Bucket:      natslayout.StateBucket,
			Description: "klaxon correlator state snapshots",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
		},
		{
			Bucket:      natslayout.SilencesBucket,
			Description: "klaxon silences",
			History:     5,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
		},
		{
			Bucket:      natslayout.RulesBucket,
			Description: "klaxon rules the correlator runs, for the sidecars' edge filters",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
		},
	}
	for _, kc := range buckets {
		if _, err := b.JS.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("nats: bucket %s: %w", kc.Bucket, err)
		}
	}
	return b.ensureLeases(ctx)
}

// Embedded reports whether the bus runs an embedded server.
func (b *Bus) Embedded() bool { return b.srv != nil }

// ClientURL is the URL external clients use: the embedded server's listen
// address when Listen is set, else the connected server's URL (redacted).
func (b *Bus) ClientURL() string {
	if b.srv != nil {
		if b.cfg.Listen == "" {
			return ""
		}
		return b.srv.ClientURL()
	}
	return b.NC.ConnectedUrlRedacted()
}

// Close drains the connection (in-flight messages are processed, pending
// publishes flushed) and then shuts the embedded server down, within ctx.
// It is safe to call more than once.
func (b *Bus) Close(ctx context.Context) error {
	b.closeOnce.Do(func() { b.closeErr = b.close(ctx) })
	return b.closeErr
}

func (b *Bus) close(ctx context.Context) error {
	var errs []error
	if b.NC != nil {
		if err := b.NC.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("nats: drain: %w", b.redact(err)))
			b.NC.Close()
		}
		select {
		case <-b.closed:
		case <-ctx.Done():
			b.NC.Close()
			errs = append(errs, fmt.Errorf("nats: drain: %w", ctx.Err()))
		}
	}
	if b.srv != nil {
		done := make(chan struct{})
		go func() {
			b.srv.Shutdown()
			b.srv.WaitForShutdown()
			close(done)
		}()
		select {
		case <-done:
			b.lock.unlock()
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("nats: embedded server shutdown: %w", ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

// abort tears down what open built after a failure.
func (b *Bus) abort() {
	if b.NC != nil {
		b.NC.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	b.lock.unlock()
}

// urlSecrets returns the passwords and tokens written into server URLs
// ("nats://user:pass@host", "nats://token@host").
func urlSecrets(urls string) []string {
	var out []string
	for _, raw := range strings.Split(urls, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || u.User == nil {
			continue
		}
		if p, ok := u.User.Password(); ok && p != "" {
			out = append(out, p)
		} else if n := u.User.Username(); n != "" {
			out = append(out, n) // a lone user part is a token
		}
	}
	return out
}

// redact replaces the configured password and token in err's text.
func (b *Bus) redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range b.secrets {
		if strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "<secret>")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return redactedError{msg: msg, err: err}
}

// redactedError shows a redacted text but still matches errors.Is/As.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }
