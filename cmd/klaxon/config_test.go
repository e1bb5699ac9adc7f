package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Secrets of the config show test; none may appear in any output.
var showSecrets = []string{
	"PDROUTINGKEY0123456789abcdef", "SLACKTOKENxyz", "HMACSIGNINGKEY-42", "HEADERBEARER-77",
	"NATSPASSWORD-99", "NATSTOKEN-55", "NOMADTOKEN-33", "HTTPTOKEN-11", "AMBEARER-66", "EVENTSTOKEN-22",
	"WEBHOOKPATHTOKEN-88", "URLPASS-44",
}

// showConfigs: every secret of the config file, on the external NATS
// (user/password in keys and in the URL) and on the embedded one (token).
func showConfigs(dir string) map[string]string {
	sinks := `
sinks:
  - type: pagerduty
    routing_key: PDROUTINGKEY0123456789abcdef
  - type: slack
    webhook_url: https://hooks.slack.com/services/T000/B000/SLACKTOKENxyz
  - type: webhook
    url: https://hooks.example.com/in/WEBHOOKPATHTOKEN-88?k=WEBHOOKPATHTOKEN-88
    signing_key: HMACSIGNINGKEY-42
    headers: {Authorization: "Bearer HEADERBEARER-77"}
  - type: alertmanager
    urls: [http://127.0.0.1:9093]
    bearer_token: AMBEARER-66
  - type: pagerduty
    name: pd-from-env
    routing_key_env: KLAXON_SHOW_TEST_PD
  - type: slack
    name: slack-from-file
    webhook_url_file: slack.url
`
	common := `
data_dir: ` + filepath.Join(dir, "data") + `
nomad:
  address: http://127.0.0.1:4646
  token: NOMADTOKEN-33
http:
  listen: 0.0.0.0:9464
  token: HTTPTOKEN-11
sources:
  nomad_events:
    - token: EVENTSTOKEN-22
`
	return map[string]string{
		"external": common + sinks + `
nats:
  url: nats://natsuser:URLPASS-44@127.0.0.1:4222,nats://127.0.0.1:4223
  user: natsuser
  password: NATSPASSWORD-99
`,
		"embedded": common + sinks + `
nats:
  listen: 0.0.0.0:4222
  token: NATSTOKEN-55
`,
	}
}

// TestConfigShow: `klaxon config show` prints the effective config (the
// defaults filled in) as YAML that reads back, and no secret: every one is
// "<secret>", files and variables are named. Its errors hold no secret.
func TestConfigShow(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KLAXON_SHOW_TEST_PD", "PDROUTINGKEY0123456789abcdef")
	if err := os.WriteFile(filepath.Join(dir, "slack.url"), []byte("https://hooks.slack.com/services/T000/B000/SLACKTOKENxyz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, text := range showConfigs(dir) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"config", "show", "--config", path}, &stdout, &stderr)
			if err != nil {
				t.Fatalf("config show: %v\n%s", err, stderr.String())
			}
			out := stdout.String()
			for _, s := range showSecrets {
				if strings.Contains(out+stderr.String(), s) {
					t.Errorf("config show prints the secret %q:\n%s", s, out)
				}
			}
			var shown map[string]any
			if err := yaml.Unmarshal(stdout.Bytes(), &shown); err != nil {
				t.Fatalf("output is not YAML: %v\n%s", err, out)
			}
			wantSecrets := 9 // nomad, http, events token, pd key, slack url, signing key, header, am token, nats password or token
			if got := strings.Count(out, "<secret>"); got < wantSecrets {
				t.Errorf("%d <secret> in the output, want at least %d:\n%s", got, wantSecrets, out)
			}
			for _, want := range []string{
				"routing_key_env: KLAXON_SHOW_TEST_PD", "webhook_url_file: " + filepath.Join(dir, "slack.url"),
				"url: https://events.pagerduty.com/v2/enqueue", "group_interval: 5m0s", "send_timeout: 10s",
				"url: https://hooks.example.com/<secret>", "resend_interval: 1m0s", "shutdown_timeout: 15s",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if name == "external" && !strings.Contains(out, "url: nats://<secret>@127.0.0.1:4222,nats://127.0.0.1:4223") {
				t.Errorf("nats.url not redacted as expected:\n%s", out)
			}
		})
	}

	// Errors (an unknown key, a missing variable) name the key and hold
	// no secret.
	ext := showConfigs(dir)["external"]
	for _, tc := range []struct{ text, want string }{
		{ext + "\n  colour: red\n", "field colour not found"},
		{strings.Replace(ext, "KLAXON_SHOW_TEST_PD", "KLAXON_SHOW_TEST_UNSET", 1), "sinks[4].routing_key_env: environment variable KLAXON_SHOW_TEST_UNSET is not set"},
	} {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"config", "show", "--config", path}, &stdout, &stderr)
		if err == nil {
			t.Fatal("a bad config was shown")
		}
		all := err.Error() + stdout.String() + stderr.String()
		for _, s := range showSecrets {
			if strings.Contains(all, s) {
				t.Errorf("the error holds the secret %q: %s", s, all)
			}
		}
		if !strings.Contains(all, tc.want) {
			t.Errorf("error lacks %q: %s", tc.want, all)
		}
		if exitCode(err) != 1 {
			t.Errorf("exit %d", exitCode(err))
		}
	}
}
