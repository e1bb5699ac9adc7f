package bus

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startEmbedded starts a nats-server with JetStream storing in
// <DataDir>/jetstream, in-process only unless cfg.Listen is set, and waits
// until it accepts connections.
func startEmbedded(cfg Config, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "klaxon-embedded",
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoSigs:     true,
		DontListen: true,
	}
	if cfg.Listen != "" {
		host, port, err := splitListen(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats.listen: %w", err)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		if host == "" {
			host = "0.0.0.0"
		}
		opts.DontListen = false
		opts.Host = host
		opts.Port = port
		if cfg.Token.IsSet() {
			opts.Authorization = cfg.Token.Reveal()
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: embedded server: %w", err)
	}
	srv.SetLoggerV2(serverLogger{log: log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("nats: embedded server not ready within 10s (data_dir %s)", cfg.DataDir)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("nats: embedded server started without JetStream (data_dir %s)", cfg.DataDir)
	}
	return srv, nil
}

// serverLogger bridges the embedded server's log to slog: its notices go
// to debug, so that only warnings and errors show at the usual levels.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) logf(level slog.Level, format string, v []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (l serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }
func (l serverLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l serverLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l serverLogger) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug-4, format, v) }
func (l serverLogger) Tracef(format string, v ...any)  { l.logf(slog.LevelDebug-8, format, v) }

// clientConfig is the base TLS config; RootCAs and ClientCert options add
// the CA pool and the client certificate.
func (t TLSConfig) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit operator choice
	}
}
