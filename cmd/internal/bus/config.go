package bus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Defaults applied by Config.SetDefaults.
const (
	DefaultName            = "klaxon"
	DefaultReplicas        = 1
	DefaultEventsMaxAge    = 72 * time.Hour
	DefaultEventsMaxBytes  = int64(1 << 30) // 1 GiB
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultIncidentsMaxAge = 30 * 24 * time.Hour
)

// Config says where the bus is (an external NATS server or cluster, or an
// embedded server) and how the klaxon streams are bounded. The key names used
// in errors are those of the config file ("nats.tls.cert_file").
type Config struct {
	// URL lists the NATS servers (comma-separated "nats://host:4222,...").
	// Empty runs an embedded server with JetStream under DataDir.
	URL string
	// DataDir is the data directory; the embedded server keeps its
	// JetStream store in <DataDir>/jetstream.
	DataDir string
	// Name is the connection name shown by the server (default "klaxon").
	Name string

	// User and Password authenticate with a user name and password.
	User     string
	Password ingest.Secret
	// Token authenticates with a token. For the embedded server with Listen
	// set, it is the token external clients must present.
	Token ingest.Secret
	// CredsFile is a NATS credentials file (user JWT and nkey seed).
	CredsFile string
	// NKeySeedFile is a file holding an nkey user seed ("SU...").
	NKeySeedFile string
	// TLS configures TLS to the external servers.
	TLS TLSConfig

	// Listen makes the embedded server also accept external clients on
	// "host:port" (port 0 picks a free one). Empty means in-process only.
	// A host that is not a loopback address requires Token.
	Listen string

	// Replicas is the replica count of the streams and buckets (default 1).
	Replicas int
	// Partitions splits KLAXON_EVENTS by node into this many partitions
	// (see PartitionSubjects). 0 keeps the stream's partitioning as it is
	// (a new stream is made unpartitioned); 1 removes it. More than 1 needs
	// nats-server 2.10 or later (stream subject transforms).
	Partitions int
	// LeaseTTL is the TTL of the KLAXON_LEASES bucket of correlator
	// partition leases. 0 keeps an existing bucket's (a new one gets
	// DefaultLeaseTTL).
	LeaseTTL time.Duration
	// EventsMaxAge bounds KLAXON_EVENTS by age (default 72h).
	EventsMaxAge time.Duration
	// EventsMaxBytes bounds KLAXON_EVENTS by size (default 1 GiB).
	EventsMaxBytes int64
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values to
	// drop re-sent events (default 2m).
	DuplicateWindow time.Duration
	// IncidentsMaxAge bounds KLAXON_INCIDENTS and KLAXON_DLQ by age
	// (default 30 days).
	IncidentsMaxAge time.Duration
}

// TLSConfig configures TLS to external NATS servers.
type TLSConfig struct {
	// CAFile is a PEM bundle of the CAs that sign the server certificates.
	CAFile string
	// CertFile and KeyFile are the client certificate and key (PEM), for
	// servers that verify clients.
	CertFile string
	KeyFile  string
	// ServerName overrides the name the server certificate is checked against.
	ServerName string
	// InsecureSkipVerify disables server certificate verification (tests only).
	InsecureSkipVerify bool
}

// Enabled reports whether any TLS setting is present.
func (t TLSConfig) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Embedded reports whether the config asks for an embedded server.
func (c *Config) Embedded() bool { return strings.TrimSpace(c.URL) == "" }

// SetDefaults fills in the zero values.
func (c *Config) SetDefaults() {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = DefaultEventsMaxAge
	}
	if c.EventsMaxBytes == 0 {
		c.EventsMaxBytes = DefaultEventsMaxBytes
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.IncidentsMaxAge == 0 {
		c.IncidentsMaxAge = DefaultIncidentsMaxAge
	}
}

// Validate checks the config (after SetDefaults). All problems are returned
// joined, each naming its config key. Errors never contain secrets.
func (c *Config) Validate() error {
	var p problems
	if c.Embedded() {
		c.validateEmbedded(&p)
	} else {
		c.validateRemote(&p)
	}
	if c.Partitions < 0 || c.Partitions > MaxPartitions {
		p.add("correlator.partitions", "must be 1 to %d, got %d", MaxPartitions, c.Partitions)
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < time.Second {
		p.add("correlator.lease_ttl", "must be at least 1s, got %s", c.LeaseTTL)
	}
	if c.EventsMaxAge <= 0 {
		p.add("nats.events_max_age", "must be positive, got %s", c.EventsMaxAge)
	}
	if c.EventsMaxBytes <= 0 {
		p.add("nats.events_max_bytes", "must be positive, got %d", c.EventsMaxBytes)
	}
	if c.DuplicateWindow <= 0 {
		p.add("nats.duplicate_window", "must be positive, got %s", c.DuplicateWindow)
	} else if c.EventsMaxAge > 0 && c.DuplicateWindow > c.EventsMaxAge {
		p.add("nats.duplicate_window", "%s exceeds nats.events_max_age %s", c.DuplicateWindow, c.EventsMaxAge)
	}
	if c.IncidentsMaxAge <= 0 {
		p.add("nats.incidents_max_age", "must be positive, got %s", c.IncidentsMaxAge)
	} else if c.DuplicateWindow > c.IncidentsMaxAge {
		p.add("nats.duplicate_window", "%s exceeds nats.incidents_max_age %s", c.DuplicateWindow, c.IncidentsMaxAge)
	}
	return errors.Join(p.errs...)
}

// problems collects the problems of a config, each naming its key.
type problems struct{ errs []error }

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// fileExists checks that path, when given, is a file.
func (p *problems) fileExists(key, path string) {
	if path == "" {
		return
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		p.add(key, "%v", err)
	case st.IsDir():
		p.add(key, "%s is a directory", path)
	}
}

// validateEmbedded checks the settings of the embedded server.
func (c *Config) validateEmbedded(p *problems) {
	if c.DataDir == "" {
		p.add("data_dir", "required for the embedded NATS server (or set nats.url)")
	}
	if c.User != "" || c.Password.IsSet() {
		p.add("nats.user", "only used with nats.url (the embedded server takes nats.token for nats.listen)")
	}
	if c.CredsFile != "" {
		p.add("nats.creds_file", "only used with nats.url")
	}
	if c.NKeySeedFile != "" {
		p.add("nats.nkey_seed_file", "only used with nats.url")
	}
	if c.TLS.Enabled() {
		p.add("nats.tls", "only used with nats.url")
	}
	if c.Replicas != 1 {
		p.add("nats.replicas", "must be 1 with the embedded server, got %d", c.Replicas)
	}
	if c.Listen != "" {
		if err := validateListen(c.Listen, c.Token.IsSet()); err != nil {
			p.add("nats.listen", "%v", err)
		}
	}
}

// validateRemote checks the settings of a connection to nats.url.
func (c *Config) validateRemote(p *problems) {
	for _, err := range validateURLs(c.URL) {
		p.add("nats.url", "%v", err)
	}
	if c.Listen != "" {
		p.add("nats.listen", "only for the embedded server (nats.url is set)")
	}
	methods := 0
	if c.User != "" || c.Password.IsSet() {
		methods++
		if c.User == "" {
			p.add("nats.user", "required with nats.password")
		}
		if !c.Password.IsSet() {
			p.add("nats.password", "required with nats.user")
		}
	}
	if c.Token.IsSet() {
		methods++
	}
	if c.CredsFile != "" {
		methods++
		p.fileExists("nats.creds_file", c.CredsFile)
	}
	if c.NKeySeedFile != "" {
		methods++
		p.fileExists("nats.nkey_seed_file", c.NKeySeedFile)
	}
	if methods > 1 {
		p.add("nats", "set only one of user/password, token, creds_file and nkey_seed_file")
	}
	p.fileExists("nats.tls.ca_file", c.TLS.CAFile)
	p.fileExists("nats.tls.cert_file", c.TLS.CertFile)
	p.fileExists("nats.tls.key_file", c.TLS.KeyFile)
	if c.TLS.CertFile != "" && c.TLS.KeyFile == "" {
		p.add("nats.tls.key_file", "required with nats.tls.cert_file")
	}
	if c.TLS.KeyFile != "" && c.TLS.CertFile == "" {
		p.add("nats.tls.cert_file", "required with nats.tls.key_file")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		p.add("nats.replicas", "must be 1 to 5, got %d", c.Replicas)
	}
}

// validateURLs checks a comma-separated server list. Its errors never quote
// the URL, which may hold a password.
func validateURLs(s string) []error {
	var errs []error
	for i, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			errs = append(errs, fmt.Errorf("server %d is empty", i+1))
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %d is not a valid URL", i+1))
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			errs = append(errs, fmt.Errorf("server %d: unsupported scheme %q (nats, tls, ws, wss)", i+1, u.Scheme))
		}
		if u.Hostname() == "" {
			errs = append(errs, fmt.Errorf("server %d has no host", i+1))
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				errs = append(errs, fmt.Errorf("server %d: bad port %q", i+1, p))
			}
		}
	}
	return errs
}

// validateListen checks "host:port" and that a non-loopback host has a token.
func validateListen(listen string, haveToken bool) error {
	host, port, err := splitListen(listen)
	if err != nil {
		return err
	}
	_ = port
	if !isLoopback(host) && !haveToken {
		return fmt.Errorf("%q accepts clients from other hosts: set nats.token", listen)
	}
	return nil
}

// splitListen parses "host:port" (port 0 means any free port).
func splitListen(listen string) (string, int, error) {
	host, ps, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port: %v", err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, port, nil
}

// isLoopback reports whether host names only the local machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
