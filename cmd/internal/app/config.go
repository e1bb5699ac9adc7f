// Package app wires klaxon's roles (ingest, correlate, sinks) around the
// bus: configuration loading, lifecycle and shutdown order.
package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/httpapi"
	"github.com/klaxon-dev/klaxon/cmd/internal/sinkconfig"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/correlate/durable"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald"
	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// Config is the file given to `klaxon run --config`.
type Config struct {
	// Node names this machine in events of sources that do not carry a node.
	// Empty: the local Nomad agent's name (/v1/agent/self), else the host name.
	Node string `yaml:"node"`
	// DataDir holds the embedded NATS store and source checkpoints.
	DataDir string `yaml:"data_dir"`
	// RulesDir is the rules directory (rules.d).
	RulesDir string `yaml:"rules_dir"`
	// Nomad is the local agent, asked for the node name.
	Nomad NomadConfig `yaml:"nomad"`
	// NATS selects the embedded server (no url) or an external cluster.
	NATS NATSConfig `yaml:"nats"`
	// Sources lists the inputs.
	Sources SourcesConfig `yaml:"sources"`
	// Sinks lists where incidents go.
	Sinks []sinkconfig.Sink `yaml:"sinks"`
	// Actions configures the actions rules may name (actions.go); each is
	// off unless configured.
	Actions ActionsConfig `yaml:"actions"`
	// Correlator tunes the correlator.
	Correlator CorrelatorConfig `yaml:"correlator"`
	// HTTP is klaxon's own endpoint (metrics, health, reload).
	HTTP httpapi.Config `yaml:"http"`
	// ShutdownTimeout bounds the orderly shutdown (default 15s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// path of the file the config came from (for relative paths).
	path string
	// noSecrets skips loading secrets from files and variables in
	// Validate (LoadToolConfig: tools that do not send anything).
	noSecrets bool
}

// NomadConfig locates the Nomad agent klaxon asks for the node name and
// allocations' jobs, and that nomad_events sources stream from unless they
// set their own keys. Every key left empty takes Nomad's own variable (what
// nomad/api's DefaultConfig and the nomad CLI read).
type NomadConfig struct {
	Address   string         `yaml:"address"`   // default $NOMAD_ADDR, else http://127.0.0.1:4646; unix:// for the task API socket
	Token     ingest.Secret  `yaml:"token"`     // default $NOMAD_TOKEN (an ACL token or workload identity)
	Region    string         `yaml:"region"`    // default $NOMAD_REGION, else the agent's
	Namespace string         `yaml:"namespace"` // default $NOMAD_NAMESPACE, else the agent's default
	TLS       NomadTLSConfig `yaml:"tls"`
	// UIURL is where the Nomad UI is, for the links of incidents (job,
	// allocation, node). Default: the address when it was given (here or
	// in $NOMAD_ADDR) and is http(s); "off": no links.
	UIURL string `yaml:"ui_url"`
}

// NomadTLSConfig configures TLS to a Nomad agent (paths to PEM files).
type NomadTLSConfig struct {
	CACert     string `yaml:"ca_cert"`     // default $NOMAD_CACERT
	CAPath     string `yaml:"ca_path"`     // default $NOMAD_CAPATH
	ClientCert string `yaml:"client_cert"` // default $NOMAD_CLIENT_CERT
	ClientKey  string `yaml:"client_key"`  // default $NOMAD_CLIENT_KEY
	ServerName string `yaml:"server_name"` // default $NOMAD_TLS_SERVER_NAME
	Insecure   *bool  `yaml:"insecure"`    // default $NOMAD_SKIP_VERIFY, else false
}

// api returns the nomadapi form of the settings.
func (n NomadTLSConfig) api() nomadapi.TLS {
	return nomadapi.TLS{CACert: n.CACert, CAPath: n.CAPath, ClientCert: n.ClientCert, ClientKey: n.ClientKey, ServerName: n.ServerName, Insecure: n.Insecure}
}

// inherit fills the keys n leaves empty from from.
func (n *NomadTLSConfig) inherit(from NomadTLSConfig) {
	for _, kv := range []struct {
		dst *string
		v   string
	}{
		{&n.CACert, from.CACert}, {&n.CAPath, from.CAPath}, {&n.ClientCert, from.ClientCert},
		{&n.ClientKey, from.ClientKey}, {&n.ServerName, from.ServerName},
	} {
		if *kv.dst == "" {
			*kv.dst = kv.v
		}
	}
	if n.Insecure == nil && from.Insecure != nil {
		v := *from.Insecure
		n.Insecure = &v
	}
}

// files lists the files the settings name, by key.
func (n NomadTLSConfig) files() [][2]string {
	return [][2]string{{"ca_cert", n.CACert}, {"ca_path", n.CAPath}, {"client_cert", n.ClientCert}, {"client_key", n.ClientKey}}
}

// validate checks the files exist (at names the place).
func (n NomadTLSConfig) validate(at string) []error {
	var errs []error
	for _, f := range n.files() {
		if f[1] == "" {
			continue
		}
		if _, err := os.Stat(f[1]); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", at, f[0], err))
		}
	}
	if (n.ClientCert == "") != (n.ClientKey == "") {
		errs = append(errs, fmt.Errorf("%s.client_cert and client_key: give both or neither", at))
	}
	return errs
}

// apiConfig is the nomadapi form of the agent's settings.
func (n NomadConfig) apiConfig() nomadapi.Config {
	return nomadapi.Config{Address: n.Address, Region: n.Region, Namespace: n.Namespace, Token: n.Token, TLS: n.TLS.api()}
}

// uiBase is the Nomad UI's base URL for links, "" for none.
func (n NomadConfig) uiBase() string {
	if n.UIURL == "off" {
		return ""
	}
	return strings.TrimRight(n.UIURL, "/")
}

// NATSConfig mirrors bus.Config in the file.
type NATSConfig struct {
	URL          string        `yaml:"url"`
	User         string        `yaml:"user"`
	Password     ingest.Secret `yaml:"password"`
	Token        ingest.Secret `yaml:"token"`
	CredsFile    string        `yaml:"creds_file"`
	NKeySeedFile string        `yaml:"nkey_seed_file"`
	TLS          struct {
		CAFile             string `yaml:"ca_file"`
		CertFile           string `yaml:"cert_file"`
		KeyFile            string `yaml:"key_file"`
		ServerName         string `yaml:"server_name"`
		InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	} `yaml:"tls"`
	Listen   string `yaml:"listen"`
	Replicas int    `yaml:"replicas"`
}

// SourcesConfig lists the inputs by kind.
type SourcesConfig struct {
	NomadLog    []NomadLogConfig    `yaml:"nomad_log"`
	NomadEvents []NomadEventsConfig `yaml:"nomad_events"`
	WinEvtFiles []WinEvtFilesConfig `yaml:"winevt_files"`
	// Journald follows systemd units in the journal (Linux).
	Journald []JournaldConfig `yaml:"journald"`
	// WinEvt subscribes to Windows Event Log channels (Windows only).
	WinEvt *WinEvtLiveConfig `yaml:"winevt"`
	// WindowsFacts publishes the node's desktop heap size (Windows only,
	// on by default there; actions.go).
	WindowsFacts *WindowsFactsConfig `yaml:"windows_facts"`
	// EdgeFilter publishes only the events some rule the correlator runs
	// can use (cmd/internal/rulesync: the rules reach the sidecars through
	// the KLAXON_RULES bucket). Off: every event is published.
	EdgeFilter bool `yaml:"edge_filter"`
}

// WinEvtLiveConfig is the live Windows Event Log subscription.
type WinEvtLiveConfig struct {
	Channels []string `yaml:"channels"` // default System and Application
	Query    string   `yaml:"query"`    // XPath, default "*"
}

// NomadEventsConfig is one Nomad event-stream subscription. The keys it
// leaves empty come from the top-level nomad block (and so from Nomad's
// variables).
type NomadEventsConfig struct {
	Address   string         `yaml:"address"`   // default nomad.address
	Region    string         `yaml:"region"`    // default nomad.region
	Namespace string         `yaml:"namespace"` // default nomad.namespace, else "*"
	Token     ingest.Secret  `yaml:"token"`     // default nomad.token ($NOMAD_TOKEN)
	TokenFile string         `yaml:"token_file"`
	TLS       NomadTLSConfig `yaml:"tls"`    // each key defaults to nomad.tls's
	Topics    []string       `yaml:"topics"` // default: what the bundled rules need
}

// WinEvtFilesConfig follows EVTX files as they grow.
type WinEvtFilesConfig struct {
	Paths        []string      `yaml:"paths"`
	ReadFrom     string        `yaml:"read_from"`
	PollInterval time.Duration `yaml:"poll_interval"`
}

// setDefaults resolves relative paths and fills what the file left out
// from Nomad's variables (api.DefaultConfig), so that config show prints
// what runs.
func (n *NomadConfig) setDefaults(rel func(string) string) {
	env := nomad.DefaultConfig()
	known := n.Address != "" || os.Getenv("NOMAD_ADDR") != ""
	if n.Address == "" {
		// $NOMAD_ADDR, else the local agent (nomad/api's default).
		n.Address = env.Address
	}
	if n.Token == "" {
		n.Token = ingest.Secret(env.SecretID)
	}
	if n.Region == "" {
		n.Region = env.Region
	}
	if n.Namespace == "" {
		n.Namespace = env.Namespace
	}
	n.TLS.relative(rel) // the file's paths; the variables' are the process's
	n.TLS.inherit(NomadTLSConfig{
		CACert: env.TLSConfig.CACert, CAPath: env.TLSConfig.CAPath,
		ClientCert: env.TLSConfig.ClientCert, ClientKey: env.TLSConfig.ClientKey,
		ServerName: env.TLSConfig.TLSServerName, Insecure: &env.TLSConfig.Insecure,
	})
	if n.UIURL == "" && known && (strings.HasPrefix(n.Address, "http://") || strings.HasPrefix(n.Address, "https://")) {
		n.UIURL = n.Address
	}
}

// relative resolves the file paths against the config's directory.
func (n *NomadTLSConfig) relative(rel func(string) string) {
	n.CACert, n.CAPath, n.ClientCert, n.ClientKey = rel(n.CACert), rel(n.CAPath), rel(n.ClientCert), rel(n.ClientKey)
}

// JournaldConfig follows the agent's log in the systemd journal through
// journalctl.
type JournaldConfig struct {
	Units        []string `yaml:"units"`          // default [nomad.service]
	Directory    string   `yaml:"directory"`      // a journal directory instead of the system journal
	Files        []string `yaml:"files"`          // journal files instead of the system journal
	ReadFrom     string   `yaml:"read_from"`      // end (default) or beginning
	Node         string   `yaml:"node"`           // overrides each entry's _HOSTNAME
	MaxLineBytes int      `yaml:"max_line_bytes"` // default 1 MiB
	Journalctl   string   `yaml:"journalctl"`     // command or path, default journalctl
}

// NomadLogConfig is one agent-log tailer.
type NomadLogConfig struct {
	Paths        []string      `yaml:"paths"`
	ReadFrom     string        `yaml:"read_from"`
	Node         string        `yaml:"node"`
	MaxLineBytes int           `yaml:"max_line_bytes"`
	PollInterval time.Duration `yaml:"poll_interval"`
}

// CorrelatorConfig tunes the correlator role.
type CorrelatorConfig struct {
	UpdateInterval   time.Duration `yaml:"update_interval"`
	MaxEvidence      int           `yaml:"max_evidence"`
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// CheckpointMaxAge is how long the correlator may go without storing
	// its state (a checkpoint, or nothing to store) before /readyz says
	// not ready (default 2m).
	CheckpointMaxAge time.Duration `yaml:"checkpoint_max_age"`
	// Lateness is how far behind the wall clock the correlator's time runs,
	// so that events that arrive a little late still count (default 5s).
	Lateness time.Duration `yaml:"lateness"`
	// Idle is how long a source (an agent log or Event Log per node, the
	// event stream) may deliver nothing before it stops holding the
	// watermark back (default: lateness). A quiet source that is caught up
	// must not keep pending updates and resolutions waiting.
	Idle time.Duration `yaml:"idle"`
	// Partitions splits the events by node across correlator replicas
	// (nats-server 2.10+). Unset (0) keeps what KLAXON_EVENTS has (1 for a
	// new stream). Give every role's config the same value.
	Partitions int `yaml:"partitions"`
	// Partition is the partition this replica prefers (0 … partitions-1):
	// it claims it at once and is handed it back by a replica that took it
	// over. Unset: the replica prefers every partition (one replica), or,
	// with more, takes the partitions nobody holds.
	Partition *int `yaml:"partition"`
	// LeaseTTL is how long a partition stays with a replica that stopped
	// renewing its lease (dead or cut off) before another takes it over
	// (default 10s; only with nats.url).
	LeaseTTL time.Duration `yaml:"lease_ttl"`

	// nomadUI is nomad.ui_url's base for the incidents' links ("": none).
	nomadUI string
}

// durable is the durable correlators' form of the settings.
func (c CorrelatorConfig) durable() durable.Config {
	return durable.Config{
		UpdateInterval: c.UpdateInterval, MaxEvidence: c.MaxEvidence, SnapshotInterval: c.SnapshotInterval,
		CheckpointMaxAge: c.CheckpointMaxAge, Lateness: c.Lateness, Idle: c.Idle,
		Partition: c.Partition, LeaseTTL: c.LeaseTTL, NomadUI: c.nomadUI,
	}
}

// LoadConfig reads and validates a config file. Unknown keys are errors
// with their line.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(path, b)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// ParseConfig parses config text; name is used in errors and to resolve
// relative paths.
func ParseConfig(name string, b []byte) (*Config, error) {
	return parseConfig(&Config{path: name}, b)
}

func parseConfig(cfg *Config, b []byte) (*Config, error) {
	name := cfg.path
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// SetDefaults fills what the file left out. Relative paths are taken
// relative to the config file's directory.
func (c *Config) SetDefaults() {
	base := "."
	if c.path != "" {
		base = filepath.Dir(c.path)
	}
	rel := func(p string) string {
		// A path rooted without a drive (/var/lib/klaxon, \klaxon) is not
		// absolute on Windows, yet names a place on the current drive, not
		// below the config file's directory.
		if p == "" || filepath.IsAbs(p) || os.IsPathSeparator(p[0]) {
			return p
		}
		return filepath.Join(base, p)
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	c.DataDir = rel(c.DataDir)
	if c.RulesDir == "" {
		c.RulesDir = "rules.d"
	}
	c.RulesDir = rel(c.RulesDir)
	c.Nomad.setDefaults(rel)
	c.Correlator.nomadUI = c.Nomad.uiBase()
	for i := range c.Sources.NomadLog {
		s := &c.Sources.NomadLog[i]
		followDefaults(s.Paths, &s.ReadFrom, rel)
		if s.MaxLineBytes == 0 {
			s.MaxLineBytes = nomadlog.DefaultMaxLineBytes
		}
		if s.PollInterval <= 0 {
			s.PollInterval = nomadlog.DefaultPollInterval
		}
	}
	for i := range c.Sources.Journald {
		s := &c.Sources.Journald[i]
		if len(s.Units) == 0 {
			s.Units = []string{journald.DefaultUnit}
		}
		s.Directory = rel(s.Directory)
		followDefaults(s.Files, &s.ReadFrom, rel)
		switch {
		case s.Journalctl == "":
			s.Journalctl = journald.DefaultJournalctl
		case filepath.Base(s.Journalctl) != s.Journalctl:
			s.Journalctl = rel(s.Journalctl) // a path, not a command name
		}
		if s.MaxLineBytes == 0 {
			s.MaxLineBytes = nomadlog.DefaultMaxLineBytes
		}
	}
	for i := range c.Sources.NomadEvents {
		s := &c.Sources.NomadEvents[i]
		if s.Address == "" {
			s.Address = c.Nomad.Address
		}
		if s.Region == "" {
			s.Region = c.Nomad.Region
		}
		if s.Namespace == "" {
			s.Namespace = c.Nomad.Namespace
		}
		if s.Namespace == "" {
			s.Namespace = "*"
		}
		if len(s.Topics) == 0 {
			s.Topics = slices.Clone(nomadevents.DefaultTopics)
		}
		if s.Token == "" && s.TokenFile == "" {
			s.Token = c.Nomad.Token
		}
		s.TokenFile = rel(s.TokenFile)
		s.TLS.relative(rel)
		s.TLS.inherit(c.Nomad.TLS)
	}
	for i := range c.Sources.WinEvtFiles {
		s := &c.Sources.WinEvtFiles[i]
		followDefaults(s.Paths, &s.ReadFrom, rel)
	}
	c.Sources.windowsFactsDefaults()
	c.Actions.setDefaults()
	if len(c.Sinks) == 0 {
		c.Sinks = []sinkconfig.Sink{{Type: sinkconfig.TypeStdout}}
	}
	for i := range c.Sinks {
		c.Sinks[i].SetDefaults(rel)
	}
	if c.Correlator.UpdateInterval <= 0 {
		c.Correlator.UpdateInterval = correlate.DefaultUpdateInterval
	}
	if c.Correlator.MaxEvidence <= 0 {
		c.Correlator.MaxEvidence = correlate.DefaultMaxEvidence
	}
	if c.Correlator.SnapshotInterval <= 0 {
		c.Correlator.SnapshotInterval = time.Second
	}
	if c.Correlator.CheckpointMaxAge <= 0 {
		c.Correlator.CheckpointMaxAge = durable.DefaultCheckpointMaxAge
	}
	if c.Correlator.Lateness <= 0 {
		c.Correlator.Lateness = 5 * time.Second
	}
	if c.Correlator.Idle <= 0 {
		c.Correlator.Idle = c.Correlator.Lateness
	}
	if c.Correlator.LeaseTTL <= 0 {
		c.Correlator.LeaseTTL = 10 * time.Second
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9464"
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
}

// followDefaults fills in what the file-following sources (nomad_log,
// journald files, winevt_files) default alike: their paths relative to the
// config file's directory (rel), and read_from "end".
func followDefaults(paths []string, readFrom *string, rel func(string) string) {
	for i, p := range paths {
		paths[i] = rel(p)
	}
	if *readFrom == "" {
		*readFrom = ingest.ReadFromEnd
	}
}

// Validate checks the config; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	for i, s := range c.Sources.NomadLog {
		if len(s.Paths) == 0 {
			errs = append(errs, fmt.Errorf("sources.nomad_log[%d].paths: at least one path or glob is required", i))
		}
		if s.ReadFrom != "end" && s.ReadFrom != "beginning" {
			errs = append(errs, fmt.Errorf("sources.nomad_log[%d].read_from: %q: want end or beginning", i, s.ReadFrom))
		}
		if s.MaxLineBytes < 0 {
			errs = append(errs, fmt.Errorf("sources.nomad_log[%d].max_line_bytes: must not be negative", i))
		}
	}
	for i, s := range c.Sources.Journald {
		errs = append(errs, s.validate(fmt.Sprintf("sources.journald[%d]", i))...)
	}
	if err := nomadapi.CheckAddress(c.Nomad.Address); err != nil {
		errs = append(errs, fmt.Errorf("nomad.address: %q: %w", c.Nomad.Address, err))
	}
	if u := c.Nomad.uiBase(); u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("nomad.ui_url: %q: want an http:// or https:// URL, or off", c.Nomad.UIURL))
		}
	}
	if !c.noSecrets {
		errs = append(errs, c.Nomad.TLS.validate("nomad.tls")...)
	}
	for i, s := range c.Sources.NomadEvents {
		at := fmt.Sprintf("sources.nomad_events[%d]", i)
		if s.Address == "" {
			errs = append(errs, fmt.Errorf("%s.address: required (or nomad.address / $NOMAD_ADDR)", at))
		} else if err := nomadapi.CheckAddress(s.Address); err != nil {
			errs = append(errs, fmt.Errorf("%s.address: %q: %w", at, s.Address, err))
		}
		errs = append(errs, s.TLS.validate(at+".tls")...)
	}
	for i, s := range c.Sources.WinEvtFiles {
		if len(s.Paths) == 0 {
			errs = append(errs, fmt.Errorf("sources.winevt_files[%d].paths: at least one path or glob is required", i))
		}
		if s.ReadFrom != "end" && s.ReadFrom != "beginning" {
			errs = append(errs, fmt.Errorf("sources.winevt_files[%d].read_from: %q: want end or beginning", i, s.ReadFrom))
		}
	}
	names := map[string]bool{}
	for i, s := range c.Sinks {
		if err := s.Validate(i, !c.noSecrets); err != nil {
			errs = append(errs, err)
		}
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("sinks[%d].name: %q is used twice", i, s.Name))
		}
		names[s.Name] = true
	}
	errs = append(errs, c.Sources.validateWindowsFacts()...)
	errs = append(errs, c.Actions.validate()...)
	if c.HTTP.Listen != "off" && !httpapi.IsLoopbackListen(c.HTTP.Listen) && !c.HTTP.Token.IsSet() {
		errs = append(errs, fmt.Errorf("http.token: required when http.listen (%s) is not a loopback address", c.HTTP.Listen))
	}
	if p := c.Correlator.Partition; p != nil && (*p < 0 || (c.Correlator.Partitions > 0 && *p >= c.Correlator.Partitions)) {
		errs = append(errs, fmt.Errorf("correlator.partition: %d: want 0 to correlator.partitions-1 (%d)", *p, max(c.Correlator.Partitions, 1)-1))
	}
	if c.Correlator.CheckpointMaxAge <= c.Correlator.SnapshotInterval {
		errs = append(errs, fmt.Errorf("correlator.checkpoint_max_age: %s: want more than snapshot_interval (%s)", c.Correlator.CheckpointMaxAge, c.Correlator.SnapshotInterval))
	}
	if c.Correlator.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("correlator.lease_ttl: %s: want at least 1s", c.Correlator.LeaseTTL))
	}
	bc := c.BusConfig()
	if err := bc.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s JournaldConfig) validate(at string) []error {
	var errs []error
	if runtime.GOOS == "windows" {
		errs = append(errs, fmt.Errorf("%s: the systemd journal is not available on Windows", at))
	}
	for j, u := range s.Units {
		if strings.TrimSpace(u) == "" {
			errs = append(errs, fmt.Errorf("%s.units[%d]: empty", at, j))
		}
	}
	if s.Directory != "" && len(s.Files) > 0 {
		errs = append(errs, fmt.Errorf("%s: directory and files: give one of them (or neither, for the system journal)", at))
	}
	for j, f := range s.Files {
		if f == "" {
			errs = append(errs, fmt.Errorf("%s.files[%d]: empty", at, j))
		}
	}
	if s.ReadFrom != "end" && s.ReadFrom != "beginning" {
		errs = append(errs, fmt.Errorf("%s.read_from: %q: want end or beginning", at, s.ReadFrom))
	}
	if s.MaxLineBytes < 0 {
		errs = append(errs, fmt.Errorf("%s.max_line_bytes: must not be negative", at))
	}
	return errs
}

// BusConfig returns the bus configuration.
func (c *Config) BusConfig() bus.Config {
	n := c.NATS
	bc := bus.Config{
		URL:          n.URL,
		DataDir:      c.DataDir,
		Name:         "klaxon",
		User:         n.User,
		Password:     n.Password,
		Token:        n.Token,
		CredsFile:    n.CredsFile,
		NKeySeedFile: n.NKeySeedFile,
		Listen:       n.Listen,
		Replicas:     n.Replicas,
		Partitions:   c.Correlator.Partitions,
		LeaseTTL:     c.Correlator.LeaseTTL,
	}
	bc.TLS.CAFile = n.TLS.CAFile
	bc.TLS.CertFile = n.TLS.CertFile
	bc.TLS.KeyFile = n.TLS.KeyFile
	bc.TLS.ServerName = n.TLS.ServerName
	bc.TLS.InsecureSkipVerify = n.TLS.InsecureSkipVerify
	bc.SetDefaults()
	return bc
}
