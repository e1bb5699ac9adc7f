package nomadapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

func clearEnv(t *testing.T) {
	for _, k := range []string{"NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_REGION", "NOMAD_NAMESPACE", "NOMAD_CACERT", "NOMAD_CAPATH",
		"NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY", "NOMAD_TLS_SERVER_NAME", "NOMAD_SKIP_VERIFY", "NOMAD_HTTP_AUTH"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// TestAPIConfig: the variables nomad/api reads, each overridden by a key.
func TestAPIConfig(t *testing.T) {
	clearEnv(t)
	t.Setenv("NOMAD_ADDR", "https://env:4646")
	t.Setenv("NOMAD_TOKEN", "envtoken")
	t.Setenv("NOMAD_REGION", "eu")
	t.Setenv("NOMAD_NAMESPACE", "prod")
	t.Setenv("NOMAD_CACERT", "/env/ca.pem")
	t.Setenv("NOMAD_CAPATH", "/env/cas")
	t.Setenv("NOMAD_CLIENT_CERT", "/env/cli.pem")
	t.Setenv("NOMAD_CLIENT_KEY", "/env/cli-key.pem")
	t.Setenv("NOMAD_TLS_SERVER_NAME", "server.eu.nomad")
	t.Setenv("NOMAD_SKIP_VERIFY", "true")
	c := Config{}.APIConfig()
	tc := c.TLSConfig
	if c.Address != "https://env:4646" || c.SecretID != "envtoken" || c.Region != "eu" || c.Namespace != "prod" || tc.CACert != "/env/ca.pem" ||
		tc.CAPath != "/env/cas" || tc.ClientCert != "/env/cli.pem" || tc.ClientKey != "/env/cli-key.pem" || tc.TLSServerName != "server.eu.nomad" || !tc.Insecure {
		t.Errorf("from the variables: %+v %+v", c, tc)
	}
	no := false
	c = Config{Address: "http://cfg:4646", Token: "cfgtoken", Region: "us", Namespace: "*", TLS: TLS{CACert: "/cfg/ca.pem", CAPath: "/cfg/cas",
		ClientCert: "/cfg/c.pem", ClientKey: "/cfg/k.pem", ServerName: "client.us.nomad", Insecure: &no}}.APIConfig()
	tc = c.TLSConfig
	if c.Address != "http://cfg:4646" || c.SecretID != "cfgtoken" || c.Region != "us" || c.Namespace != "*" || tc.CACert != "/cfg/ca.pem" ||
		tc.CAPath != "/cfg/cas" || tc.ClientCert != "/cfg/c.pem" || tc.ClientKey != "/cfg/k.pem" || tc.TLSServerName != "client.us.nomad" || tc.Insecure {
		t.Errorf("keys over the variables: %+v %+v", c, tc)
	}
}

func TestCheckAddress(t *testing.T) {
	for addr, ok := range map[string]bool{"http://a:4646": true, "https://a": true, "unix:///secrets/api.sock": true,
		"ftp://a": false, "http://": false, "unix://": false, "a:4646": false} {
		if err := CheckAddress(addr); (err == nil) != ok {
			t.Errorf("CheckAddress(%q) = %v", addr, err)
		}
	}
}

// TestExplainTLS: requests that fail in TLS say what to check, naming the
// address; other errors pass unchanged.
func TestExplainTLS(t *testing.T) {
	clearEnv(t)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }))
	defer tlsSrv.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }))
	defer plain.Close()
	ask := func(addr string) error {
		c, err := NewClient(Config{Address: addr, Token: "SECRETTOKEN-1"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var out map[string]any
		_, err = c.Raw().Query("/v1/agent/self", &out, (&api.QueryOptions{}).WithContext(ctx))
		return Explain(addr, err)
	}
	for _, tc := range []struct{ name, addr, want string }{
		{"unknown CA", tlsSrv.URL, "nomad.tls.ca_cert (or $NOMAD_CACERT)"},
		{"https to a plain agent", strings.Replace(plain.URL, "http:", "https:", 1), "use an http:// address"},
	} {
		err := ask(tc.addr)
		if err == nil || !strings.Contains(err.Error(), "nomad agent "+tc.addr) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "SECRETTOKEN") {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := ask(plain.URL); err != nil {
		t.Errorf("plain agent: %v", err)
	}
	other := context.DeadlineExceeded
	if Explain("http://x", other) != other || Hint(nil) != "" {
		t.Error("other errors changed")
	}
}
