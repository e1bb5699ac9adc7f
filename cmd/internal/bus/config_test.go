package bus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSetDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	if c.Name != "klaxon" || c.Replicas != 1 || c.EventsMaxAge != 72*time.Hour ||
		c.EventsMaxBytes != 1<<30 || c.DuplicateWindow != 2*time.Minute || c.IncidentsMaxAge != 30*24*time.Hour {
		t.Errorf("defaults = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"embedded", Config{DataDir: dir}, nil},
		{"embedded no data dir", Config{}, []string{"data_dir:"}},
		{"embedded listen loopback", Config{DataDir: dir, Listen: "127.0.0.1:4222"}, nil},
		{"embedded listen localhost", Config{DataDir: dir, Listen: "localhost:0"}, nil},
		{"embedded listen any without token", Config{DataDir: dir, Listen: ":4222"}, []string{"nats.listen:", "nats.token"}},
		{"embedded listen public without token", Config{DataDir: dir, Listen: "10.1.2.3:4222"}, []string{"nats.listen:"}},
		{"embedded listen public with token", Config{DataDir: dir, Listen: "0.0.0.0:4222", Token: "t"}, nil},
		{"embedded listen bad", Config{DataDir: dir, Listen: "4222"}, []string{"nats.listen: want host:port"}},
		{"embedded listen bad port", Config{DataDir: dir, Listen: "127.0.0.1:99999"}, []string{"nats.listen: bad port"}},
		{"embedded with user", Config{DataDir: dir, User: "u", Password: "p"}, []string{"nats.user: only used with nats.url"}},
		{"embedded with tls", Config{DataDir: dir, TLS: TLSConfig{CAFile: file}}, []string{"nats.tls: only used"}},
		{"embedded replicas", Config{DataDir: dir, Replicas: 3}, []string{"nats.replicas:"}},
		{"external", Config{URL: "nats://a:4222, nats://b:4222"}, nil},
		{"external bare host", Config{URL: "nats.example:4222"}, nil},
		{"external tls scheme", Config{URL: "tls://a:4222", TLS: TLSConfig{CAFile: file, CertFile: file, KeyFile: file, ServerName: "a"}}, nil},
		{"external bad scheme", Config{URL: "http://a:4222"}, []string{"nats.url: server 1: unsupported scheme"}},
		{"external bad port", Config{URL: "nats://a:0"}, []string{"nats.url: server 1: bad port"}},
		{"external empty server", Config{URL: "nats://a:4222,"}, []string{"nats.url: server 2 is empty"}},
		{"external listen", Config{URL: "nats://a", Listen: "127.0.0.1:0"}, []string{"nats.listen: only for the embedded"}},
		{"user without password", Config{URL: "nats://a", User: "u"}, []string{"nats.password: required"}},
		{"password without user", Config{URL: "nats://a", Password: "p"}, []string{"nats.user: required"}},
		{"two methods", Config{URL: "nats://a", User: "u", Password: "p", Token: "t"}, []string{"nats: set only one"}},
		{"creds missing", Config{URL: "nats://a", CredsFile: missing}, []string{"nats.creds_file:"}},
		{"nkey missing", Config{URL: "nats://a", NKeySeedFile: missing}, []string{"nats.nkey_seed_file:"}},
		{"tls files missing", Config{URL: "nats://a", TLS: TLSConfig{CAFile: missing, CertFile: missing, KeyFile: missing}},
			[]string{"nats.tls.ca_file:", "nats.tls.cert_file:", "nats.tls.key_file:"}},
		{"tls cert without key", Config{URL: "nats://a", TLS: TLSConfig{CertFile: file}}, []string{"nats.tls.key_file: required"}},
		{"tls key without cert", Config{URL: "nats://a", TLS: TLSConfig{KeyFile: file}}, []string{"nats.tls.cert_file: required"}},
		{"tls dir", Config{URL: "nats://a", TLS: TLSConfig{CAFile: dir}}, []string{"nats.tls.ca_file:", "is a directory"}},
		{"external replicas", Config{URL: "nats://a", Replicas: 3}, nil},
		{"external replicas too many", Config{URL: "nats://a", Replicas: 7}, []string{"nats.replicas: must be 1 to 5"}},
		{"limits", Config{DataDir: dir, EventsMaxAge: -1, EventsMaxBytes: -1, IncidentsMaxAge: -1},
			[]string{"nats.events_max_age:", "nats.events_max_bytes:", "nats.incidents_max_age:"}},
		{"dup window over max age", Config{DataDir: dir, EventsMaxAge: time.Minute, DuplicateWindow: time.Hour},
			[]string{"nats.duplicate_window:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.SetDefaults()
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateHidesSecrets(t *testing.T) {
	c := Config{URL: "http://user:hunter2-pw@host:99999", Password: "pw-9981", Token: "tok-9981", User: "u"}
	c.SetDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, s := range []string{"hunter2-pw", "pw-9981", "tok-9981"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error leaks %q: %v", s, err)
		}
	}
}
