// Package nomadapi makes the nomad/api clients klaxon talks to Nomad with,
// following Nomad's own conventions: every client starts from
// api.DefaultConfig(), which reads the environment the nomad CLI reads
// (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE, NOMAD_CACERT,
// NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME,
// NOMAD_SKIP_VERIFY, NOMAD_HTTP_AUTH), and the keys of klaxon's
// configuration override it. Addresses may be http://, https:// or
// unix:// (the task API socket, ${NOMAD_SECRETS_DIR}/api.sock).
package nomadapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
)

// TLS configures TLS to the Nomad agent (paths to PEM files). Empty keys
// keep what the environment says.
type TLS struct {
	// CACert is a CA certificate file, CAPath a directory of them
	// ($NOMAD_CACERT, $NOMAD_CAPATH).
	CACert, CAPath string
	// ClientCert and ClientKey are the client certificate and its key
	// ($NOMAD_CLIENT_CERT, $NOMAD_CLIENT_KEY).
	ClientCert, ClientKey string
	// ServerName is the SNI and verified host name, e.g.
	// "server.global.nomad" ($NOMAD_TLS_SERVER_NAME).
	ServerName string
	// Insecure skips verification of the agent's certificate; nil keeps
	// $NOMAD_SKIP_VERIFY.
	Insecure *bool
}

// Config locates a Nomad agent. Empty fields keep what api.DefaultConfig()
// takes from the environment.
type Config struct {
	Address   string
	Region    string
	Namespace string
	// Token is the ACL token or workload identity ($NOMAD_TOKEN).
	Token ingest.Secret
	TLS   TLS
}

// APIConfig returns api.DefaultConfig() with c's keys on top.
func (c Config) APIConfig() *api.Config {
	conf := api.DefaultConfig()
	if c.Address != "" {
		conf.Address = c.Address
	}
	if c.Region != "" {
		conf.Region = c.Region
	}
	if c.Namespace != "" {
		conf.Namespace = c.Namespace
	}
	if c.Token.IsSet() {
		conf.SecretID = c.Token.Reveal()
	}
	t := conf.TLSConfig
	for _, kv := range []struct {
		dst *string
		v   string
	}{{&t.CACert, c.TLS.CACert}, {&t.CAPath, c.TLS.CAPath}, {&t.ClientCert, c.TLS.ClientCert}, {&t.ClientKey, c.TLS.ClientKey}, {&t.TLSServerName, c.TLS.ServerName}} {
		if kv.v != "" {
			*kv.dst = kv.v
		}
	}
	if c.TLS.Insecure != nil {
		t.Insecure = *c.TLS.Insecure
	}
	return conf
}

// NewClient returns a client of the agent c names. It has no overall
// timeout (event streams are long requests): bound each request with a
// context (api.QueryOptions.WithContext). Setting api.Config.HttpClient
// would drop the TLS configuration and the unix socket, so it is not done.
func NewClient(c Config) (*api.Client, error) {
	conf := c.APIConfig()
	addr := conf.Address
	client, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("nomad %s: %w", addr, err)
	}
	return client, nil
}

// CheckAddress checks that addr is a URL nomad/api can use.
func CheckAddress(addr string) error {
	u, err := url.Parse(addr)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix":
		return errors.New("want http://, https:// or unix://")
	case u.Host == "" && u.Scheme != "unix":
		return errors.New("no host")
	case u.Scheme == "unix" && u.Path == "":
		return errors.New("no socket path")
	}
	return nil
}

// Explain adds what to check to an error of a request to the agent at
// addr when it comes from TLS (see Hint): the operator sees the address and
// the keys and variables that decide it. Other errors are returned as they
// are. The error never holds the token (nomad/api sends it as a header).
func Explain(addr string, err error) error {
	h := Hint(err)
	if h == "" {
		return err
	}
	return fmt.Errorf("nomad agent %s: %w (%s)", addr, err, h)
}

// Hint says what to check for an error of a request that comes from TLS:
// the agent's certificate not trusted or not naming the host, a client
// certificate required, http against https and back. "" for other errors.
func Hint(err error) string {
	if err == nil {
		return ""
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA) || strings.Contains(msg, "certificate signed by unknown authority"):
		return "the agent's certificate is not signed by a CA klaxon trusts: set nomad.tls.ca_cert (or $NOMAD_CACERT) to the CA of the agent's certificate"
	case errors.As(err, &hostname) || strings.Contains(msg, "certificate is valid for"):
		return "the agent's certificate does not name this host: set nomad.tls.server_name (or $NOMAD_TLS_SERVER_NAME), e.g. server.<region>.nomad or client.<region>.nomad"
	case errors.As(err, &invalid) || errors.As(err, &verify):
		return "the agent's certificate is not valid for klaxon: check nomad.tls.ca_cert and the certificate's dates"
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate"):
		return "the agent wants a client certificate (tls { verify_https_client = true }): set nomad.tls.client_cert and client_key (or $NOMAD_CLIENT_CERT and $NOMAD_CLIENT_KEY)"
	case errors.As(err, &header) || strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return "the agent does not speak TLS here: use an http:// address"
	case strings.Contains(msg, "HTTP request to an HTTPS server"):
		return "the agent serves HTTPS: use an https:// address (and nomad.tls.ca_cert or $NOMAD_CACERT)"
	}
	return ""
}
