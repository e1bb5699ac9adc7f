package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
)

// nomadVars are the variables nomad/api's DefaultConfig reads.
var nomadVars = []string{"NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_REGION", "NOMAD_NAMESPACE", "NOMAD_CACERT", "NOMAD_CAPATH",
	"NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY", "NOMAD_TLS_SERVER_NAME", "NOMAD_SKIP_VERIFY", "NOMAD_HTTP_AUTH"}

// clearNomadEnv unsets the NOMAD_* variables for the test.
func clearNomadEnv(t *testing.T) {
	for _, k := range nomadVars {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in dir.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
}

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA " + filepath.Base(dir)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := testPKI{ca: write("ca.pem", "CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"server.global.nomad"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kd)
	}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("cli", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// TestNomadConfigConventions: the nomad block and nomad_events sources
// take what the file leaves out from Nomad's variables (as the nomad CLI
// does), the file's keys win, sources inherit the nomad block key by key,
// relative paths are the file's, and config show prints it all without the
// token.
func TestNomadConfigConventions(t *testing.T) {
	clearNomadEnv(t)
	dir := t.TempDir()
	pki := newTestPKI(t, filepath.Join(dir, "pki"))
	t.Setenv("NOMAD_ADDR", "https://nomad.example.com:4646")
	t.Setenv("NOMAD_TOKEN", "NOMADTOKEN-1234")
	t.Setenv("NOMAD_REGION", "eu")
	t.Setenv("NOMAD_NAMESPACE", "prod")
	t.Setenv("NOMAD_CACERT", pki.ca)
	t.Setenv("NOMAD_CLIENT_CERT", pki.clientCert)
	t.Setenv("NOMAD_CLIENT_KEY", pki.clientKey)
	t.Setenv("NOMAD_TLS_SERVER_NAME", "server.eu.nomad")
	t.Setenv("NOMAD_SKIP_VERIFY", "true")

	// Only the variables.
	cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), []byte("sources:\n  nomad_events:\n    - {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Nomad
	if n.Address != "https://nomad.example.com:4646" || n.Token.Reveal() != "NOMADTOKEN-1234" || n.Region != "eu" || n.Namespace != "prod" ||
		n.TLS.CACert != pki.ca || n.TLS.ClientCert != pki.clientCert || n.TLS.ClientKey != pki.clientKey ||
		n.TLS.ServerName != "server.eu.nomad" || n.TLS.Insecure == nil || !*n.TLS.Insecure {
		t.Errorf("nomad from the variables: %+v tls %+v", n, n.TLS)
	}
	if n.UIURL != "https://nomad.example.com:4646" || cfg.Correlator.nomadUI != n.UIURL {
		t.Errorf("ui_url %q (correlator %q), want the address", n.UIURL, cfg.Correlator.nomadUI)
	}
	s := cfg.Sources.NomadEvents[0]
	if s.Address != n.Address || s.Region != "eu" || s.Namespace != "prod" || s.Token.Reveal() != "NOMADTOKEN-1234" || s.TLS.CACert != pki.ca ||
		s.TLS.ClientKey != pki.clientKey || s.TLS.ServerName != "server.eu.nomad" || s.TLS.Insecure == nil || !*s.TLS.Insecure {
		t.Errorf("source does not inherit the nomad block: %+v tls %+v", s, s.TLS)
	}
	if api := n.apiConfig().APIConfig(); api.TLSConfig.CACert != pki.ca || api.Namespace != "prod" || api.SecretID != "NOMADTOKEN-1234" {
		t.Errorf("api config %+v", api)
	}

	// The file's keys win; relative paths are the file's; a source's own
	// keys win over the block's, key by key.
	if err := os.WriteFile(filepath.Join(dir, "own-ca.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := `nomad:
  address: https://10.0.0.1:4646
  token: FILETOKEN-5678
  region: us
  namespace: "*"
  ui_url: https://nomad-ui.example.com/
  tls:
    ca_cert: own-ca.pem
    insecure: false
sources:
  nomad_events:
    - {}
    - address: unix:///secrets/api.sock
      namespace: ops
      tls: {server_name: client.us.nomad, insecure: true}
`
	cfg, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	n = cfg.Nomad
	ownCA := filepath.Join(dir, "own-ca.pem")
	if n.Address != "https://10.0.0.1:4646" || n.Token.Reveal() != "FILETOKEN-5678" || n.Region != "us" || n.Namespace != "*" ||
		n.TLS.CACert != ownCA || *n.TLS.Insecure || n.TLS.ClientCert != pki.clientCert {
		t.Errorf("file keys over the variables: %+v tls %+v", n, n.TLS)
	}
	if n.uiBase() != "https://nomad-ui.example.com" || cfg.Correlator.nomadUI != "https://nomad-ui.example.com" {
		t.Errorf("ui base %q", n.uiBase())
	}
	s0, s1 := cfg.Sources.NomadEvents[0], cfg.Sources.NomadEvents[1]
	if s0.Address != n.Address || s0.Namespace != "*" || s0.Region != "us" || s0.TLS.CACert != ownCA || *s0.TLS.Insecure {
		t.Errorf("source 0 %+v tls %+v", s0, s0.TLS)
	}
	if s1.Address != "unix:///secrets/api.sock" || s1.Namespace != "ops" || s1.TLS.ServerName != "client.us.nomad" || !*s1.TLS.Insecure || s1.TLS.CACert != ownCA {
		t.Errorf("source 1 %+v tls %+v", s1, s1.TLS)
	}

	// config show prints the keys, the token as <secret>.
	out, err := cfg.ShowYAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"region: us", "namespace: '*'", "ca_cert: " + ownCA, "client_cert: " + pki.clientCert,
		"ca_path: \"\"", "server_name: server.eu.nomad", "insecure: false", "ui_url: https://nomad-ui.example.com/", "token: <secret>", "namespace: ops"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "FILETOKEN") || strings.Contains(string(out), "NOMADTOKEN") {
		t.Errorf("config show prints the token:\n%s", out)
	}
}

// TestNomadConfigDefaultsAndErrors: without NOMAD_ADDR the local agent is
// asked but incidents get no links to it (a loopback link is no use to a
// pager); "off" turns links off; missing files, a bad address and a bad
// ui_url are errors naming the key.
func TestNomadConfigDefaultsAndErrors(t *testing.T) {
	clearNomadEnv(t)
	dir := t.TempDir()
	cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nomad.Address != "http://127.0.0.1:4646" || cfg.Nomad.UIURL != "" || cfg.Correlator.nomadUI != "" || cfg.Nomad.TLS.Insecure == nil || *cfg.Nomad.TLS.Insecure {
		t.Errorf("defaults %+v", cfg.Nomad)
	}
	cfg, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte("nomad: {address: http://nomad:4646, ui_url: \"off\"}\n"))
	if err != nil || cfg.Correlator.nomadUI != "" {
		t.Errorf("ui_url off: %v %q", err, cfg.Correlator.nomadUI)
	}
	cfg, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte("nomad: {address: unix:///run/api.sock}\n"))
	if err != nil || cfg.Nomad.UIURL != "" {
		t.Errorf("unix socket: %v ui_url %q", err, cfg.Nomad.UIURL)
	}
	t.Setenv("NOMAD_CLIENT_KEY", filepath.Join(dir, "missing-key.pem"))
	_, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte(`nomad:
  address: ftp://nomad
  ui_url: nomad.example.com
  tls: {ca_cert: missing.pem}
sources:
  nomad_events:
    - address: "http://"
`))
	var stat *os.PathError // os.Stat's error names its call: stat, GetFileAttributesEx on Windows
	if _, serr := os.Stat(filepath.Join(dir, "missing.pem")); !errors.As(serr, &stat) {
		t.Fatalf("stat of a missing file: %v", serr)
	}
	for _, want := range []string{"nomad.address: \"ftp://nomad\"", "nomad.ui_url", "nomad.tls.ca_cert: " + stat.Op + " " + filepath.Join(dir, "missing.pem"),
		"nomad.tls.client_key: " + stat.Op + " " + filepath.Join(dir, "missing-key.pem"), "nomad.tls.client_cert and client_key: give both",
		"sources.nomad_events[0].address: \"http://\": no host", "sources.nomad_events[0].tls.ca_cert"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestAgentNodeNameTLS: the node-name question follows NOMAD_CACERT,
// NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY to an agent that wants client
// certificates; with the wrong CA it says so, naming the address and
// the key to set, and no token.
func TestAgentNodeNameTLS(t *testing.T) {
	clearNomadEnv(t)
	dir := t.TempDir()
	pki := newTestPKI(t, filepath.Join(dir, "pki"))
	other := newTestPKI(t, filepath.Join(dir, "other"))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Nomad-Token") != "TLSTOKEN-42" {
			http.Error(w, "Permission denied", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, `{"config":{"NodeName":"tls-node"},"member":{},"stats":{}}`)
	}))
	cert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool}
	srv.StartTLS()
	defer srv.Close()

	t.Setenv("NOMAD_ADDR", srv.URL)
	t.Setenv("NOMAD_TOKEN", "TLSTOKEN-42")
	t.Setenv("NOMAD_CACERT", pki.ca)
	t.Setenv("NOMAD_CLIENT_CERT", pki.clientCert)
	t.Setenv("NOMAD_CLIENT_KEY", pki.clientKey)
	cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := nomadapi.NodeName(cfg.Nomad.apiConfig()); err != nil || n != "tls-node" {
		t.Fatalf("node name over TLS from the variables: %q, %v", n, err)
	}

	for name, env := range map[string][2]string{
		"wrong CA":              {"NOMAD_CACERT", other.ca},
		"no client certificate": {"NOMAD_CLIENT_CERT", ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(env[0], env[1])
			if env[1] == "" {
				t.Setenv("NOMAD_CLIENT_KEY", "")
			}
			cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = nomadapi.NodeName(cfg.Nomad.apiConfig())
			want := map[string]string{"wrong CA": "NOMAD_CACERT", "no client certificate": "NOMAD_CLIENT_CERT"}[name]
			if err == nil || !strings.Contains(err.Error(), srv.URL) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "TLSTOKEN") {
				t.Errorf("error %v: want the address %s and %s, no token", err, srv.URL, want)
			}
		})
	}
}
