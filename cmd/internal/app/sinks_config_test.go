package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/sinkconfig"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks/pagerduty"
)

// Secret values used by the config tests: none may ever appear in an
// error, a log line or `config show`.
var testSecrets = []string{
	"PDROUTINGKEY0123456789abcdef", "hooks.slack.com/services/T000/B000/SLACKTOKENxyz", "SLACKTOKENxyz",
	"HMACSIGNINGKEY-42", "HEADERBEARER-77", "NATSPASSWORD-99", "NATSTOKEN-55", "NOMADTOKEN-33",
	"HTTPTOKEN-11", "AMBEARER-66", "EVENTSTOKEN-22", "WEBHOOKPATHTOKEN-88",
}

func assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range testSecrets {
		if strings.Contains(text, s) {
			t.Errorf("%s holds the secret %q:\n%s", what, s, text)
		}
	}
}

// TestSinkConfigErrors: unknown keys are errors with their line; a
// missing secret is an error naming its key; no error holds a secret.
func TestSinkConfigErrors(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KLAXON_TEST_UNSET_VAR", "")
	tests := []struct {
		name  string
		sinks string
		want  []string
	}{
		{"unknown key of a type, with its line", `
  - type: pagerduty
    routing_key: PDROUTINGKEY0123456789abcdef
    routing_kee: x`, []string{`line 5: unknown key "routing_kee" (a pagerduty sink takes `, "routing_key_file"}},
		{"unknown common key, with its line", `
  - type: stdout
    min_severty: error`, []string{`line 4: unknown key "min_severty" (a stdout sink takes format`}},
		{"a key of another type", `
  - type: file
    path: x.jsonl
    format: json`, []string{`line 5: unknown key "format"`}},
		{"nested unknown key", `
  - type: stdout
  - type: slack
    webhook_url: https://hooks.slack.com/services/T000/B000/SLACKTOKENxyz
    throttle: true
    match: {rule: x}
    timeout: 1s
    timeout_ms: 5`, []string{`line 9: unknown key "timeout_ms"`}},
		{"missing routing key", `
  - type: stdout
  - type: pagerduty
    name: pd`, []string{"sinks[1].routing_key: required (or routing_key_file, or routing_key_env)"}},
		{"routing key variable unset", `
  - type: pagerduty
    routing_key_env: KLAXON_TEST_UNSET_VAR`, []string{"sinks[0].routing_key_env: environment variable KLAXON_TEST_UNSET_VAR is not set or empty"}},
		{"routing key file missing", `
  - type: pagerduty
    routing_key_file: nope.key`, []string{"sinks[0].routing_key_file: open " + filepath.Join(dir, "nope.key")}},
		{"two ways to give a secret", `
  - type: pagerduty
    routing_key: PDROUTINGKEY0123456789abcdef
    routing_key_env: PD`, []string{"sinks[0].routing_key: give only one of"}},
		{"slack without url", `
  - type: slack`, []string{"sinks[0].webhook_url: required"}},
		{"slack url that is no URL", `
  - type: slack
    webhook_url: "SLACKTOKENxyz"`, []string{"sinks[0].webhook_url: want an http or https URL"}},
		{"webhook without url, bad template", `
  - type: webhook
    signing_key: HMACSIGNINGKEY-42
    body: '{{ .Nope'`, []string{"sinks[0].url: required", "sinks[0].body:"}},
		{"webhook signing key variable unset", `
  - type: webhook
    url: https://example.com/WEBHOOKPATHTOKEN-88
    signing_key_env: KLAXON_TEST_UNSET_VAR`, []string{"sinks[0].signing_key_env: environment variable KLAXON_TEST_UNSET_VAR"}},
		{"alertmanager without urls, resend too slow", `
  - type: alertmanager
    resend_interval: 6m
    bearer_token: AMBEARER-66`, []string{"sinks[0].urls: at least one", "sinks[0].resend_interval"}},
		{"nats wildcard subject", `
  - type: nats
    subject: "out.>"`, []string{`sinks[0].subject: "out.>" is not a literal subject`}},
		{"unknown type", `
  - type: pager`, []string{`sinks[0].type: "pager": want one of stdout, file, pagerduty`}},
		{"no type", `
  - name: x`, []string{"sinks[0].type: required"}},
		{"bad routing", `
  - type: stdout
    min_severity: loud
    match: {colour: red}
    match_re: {node: "("}`, []string{"sinks[0].min_severity: \"loud\"", "sinks[0].match.colour: unknown field", "sinks[0].match_re.node:"}},
		{"throttle off with throttle keys", `
  - type: pagerduty
    routing_key: PDROUTINGKEY0123456789abcdef
    throttle: false
    group_wait: 30s`, []string{"sinks[0].throttle: false, but group_wait"}},
		{"delivery settings", `
  - type: stdout
    max_attempts: -1
    min_backoff: 10s
    max_backoff: 1s`, []string{"sinks[0].max_attempts: must be at least 1", "sinks[0].max_backoff: 1s is below min_backoff"}},
		{"bad duration, with its line", `
  - type: stdout
    send_timeout: soon`, []string{"line 4: cannot unmarshal !!str `soon` into time.Duration"}},
		{"names", `
  - type: stdout
  - type: stdout
  - type: file
    name: "my file"
    path: x`, []string{`sinks[1].name: "stdout" is used twice`, `sinks[2].name: "my file": use letters`}},
		{"a sink that is not a mapping", `
  - stdout`, []string{"line 3: a sink is a mapping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte("data_dir: d\nsinks:"+tc.sinks+"\n"))
			if err == nil {
				t.Fatalf("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			assertNoSecrets(t, "the error", err.Error())
		})
	}
}

// TestSinkConfigDefaults: every type parses into its package's Config with
// its defaults; throttling is on for the paging sinks; routing and
// throttling reach the dispatcher; relative secret files are resolved
// against the config file; tool configs skip the secret variables.
func TestSinkConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pd.key"), []byte("PDROUTINGKEY0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KLAXON_TEST_SLACK_URL", "https://hooks.slack.com/services/T000/B000/SLACKTOKENxyz")
	text := `
sinks:
  - type: stdout
  - type: file
    path: out/incidents.jsonl
  - type: pagerduty
    name: pd-oncall
    routing_key_file: pd.key
    min_severity: error
    match: {labels.component: windows}
    match_re: {node: "win-.*"}
    group_wait: 30s
    send_timeout: 20s
    max_attempts: 3
  - type: slack
    webhook_url_env: KLAXON_TEST_SLACK_URL
    timeout: 30s
  - type: webhook
    url: https://hooks.example.com/in
    headers: {Authorization: "Bearer HEADERBEARER-77"}
    repeat_interval: 1h
  - type: alertmanager
    urls: [http://127.0.0.1:9093/]
  - type: nats
    subject: ext.incidents
    jetstream: true
`
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sinks
	if len(s) != 7 {
		t.Fatalf("%d sinks", len(s))
	}
	type want struct {
		name     string
		throttle bool
		timeout  time.Duration
	}
	for i, w := range []want{
		{"stdout", false, 10 * time.Second}, {"file", false, 10 * time.Second}, {"pd-oncall", true, 20 * time.Second},
		{"slack", true, 30 * time.Second}, {"webhook", true, 10 * time.Second}, {"alertmanager", false, 10 * time.Second},
		{"nats", false, 10 * time.Second},
	} {
		if s[i].Name != w.name || *s[i].Throttle != w.throttle || s[i].SendTimeout != w.timeout {
			t.Errorf("sinks[%d]: name %q throttle %v send_timeout %s, want %+v", i, s[i].Name, *s[i].Throttle, s[i].SendTimeout, w)
		}
	}
	if s[0].Format != "text" || s[1].Path != filepath.Join(dir, "out/incidents.jsonl") {
		t.Errorf("stdout format %q, file path %q", s[0].Format, s[1].Path)
	}
	pd := s[2].PagerDuty
	if pd == nil || pd.URL != pagerduty.DefaultURL || pd.RoutingKeyFile != filepath.Join(dir, "pd.key") || pd.RoutingKey.IsSet() {
		t.Errorf("pagerduty config %+v", pd)
	}
	if s[2].MaxAttempts != 3 || s[2].Grouping.GroupWait != 30*time.Second || s[2].Grouping.GroupInterval != 5*time.Minute {
		t.Errorf("pagerduty delivery %+v", s[2])
	}
	if s[3].Slack == nil || s[3].Slack.WebhookURLEnv != "KLAXON_TEST_SLACK_URL" {
		t.Errorf("slack config %+v", s[3].Slack)
	}
	if s[4].Webhook == nil || s[4].Webhook.Method != "POST" || s[4].Webhook.Headers["Authorization"].Reveal() != "Bearer HEADERBEARER-77" || s[4].Grouping.RepeatInterval != time.Hour {
		t.Errorf("webhook config %+v", s[4].Webhook)
	}
	if a := s[5].Alertmanager; a == nil || a.ResendInterval != time.Minute || len(a.URLs) != 1 {
		t.Errorf("alertmanager config %+v", a)
	}
	if n := s[6].NATS; n == nil || n.Subject != "ext.incidents" || !n.JetStream {
		t.Errorf("nats config %+v", n)
	}

	// Routing and throttling reach the dispatcher.
	dc, err := s[2].DispatcherConfig()
	if err != nil {
		t.Fatal(err)
	}
	if dc.Throttle == nil || dc.SendTimeout != 20*time.Second || dc.MaxAttempts != 3 || dc.Backoff == nil {
		t.Errorf("dispatcher config %+v", dc)
	}
	for _, tc := range []struct {
		in   correlate.Incident
		want bool
	}{
		{correlate.Incident{Severity: "critical", Node: "win-7", Labels: map[string]string{"component": "windows"}}, true},
		{correlate.Incident{Severity: "warning", Node: "win-7", Labels: map[string]string{"component": "windows"}}, false},
		{correlate.Incident{Severity: "critical", Node: "linux-1", Labels: map[string]string{"component": "windows"}}, false},
		{correlate.Incident{Severity: "error", Node: "win-7", Labels: map[string]string{"component": "nomad"}}, false},
	} {
		if got := dc.Route.Match(tc.in); got != tc.want {
			t.Errorf("route of %+v: %v, want %v", tc.in, got, tc.want)
		}
	}
	if dc, _ := s[0].DispatcherConfig(); dc.Throttle != nil || !dc.Route.Match(correlate.Incident{Severity: "info"}) {
		t.Errorf("stdout dispatcher %+v", dc)
	}

	// The sinks build, each of its package's type; the secret files and
	// variables are read.
	env := sinkconfig.Env{Stdout: os.Stdout, Log: quiet()}
	for i, want := range []string{"*stdout.Sink", "*file.Sink", "*pagerduty.Sink", "*slack.Sink", "*webhook.Sink", "*alertmanager.Sink"} {
		sk, _, err := sinkconfig.Build(i, s[i], env)
		if err != nil {
			t.Fatalf("sinks[%d]: %v", i, err)
		}
		if got := fmt.Sprintf("%T", sk); got != want || sk.Name() != s[i].Name {
			t.Errorf("sinks[%d] is a %s named %q", i, got, sk.Name())
		}
		sk.Close()
	}
	if _, _, err := sinkconfig.Build(6, s[6], env); err == nil {
		t.Error("a nats sink without a connection built")
	}
	if s[5].Alertmanager.URLs[0] != "http://127.0.0.1:9093/" {
		t.Errorf("building changed the config: %v", s[5].Alertmanager.URLs)
	}

	// A tool config does not need the secret variables.
	os.Unsetenv("KLAXON_TEST_SLACK_URL")
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), "sinks[3].webhook_url_env") {
		t.Errorf("run config without the variable: %v", err)
	}
	if _, err := LoadToolConfig(cfgPath); err != nil {
		t.Errorf("tool config without the variable: %v", err)
	}
}
