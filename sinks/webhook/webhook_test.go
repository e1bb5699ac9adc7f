package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

func TestWebhook(t *testing.T) {
	var gotBody []byte
	var gotHdr http.Header
	var method string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotBody, _ = io.ReadAll(r.Body)
		gotHdr, method = r.Header, r.Method
		if r.Header.Get("Authorization") != "Bearer T0KEN-SECRET" {
			w.WriteHeader(401)
			io.WriteString(w, "bad token T0KEN-SECRET")
		}
	}))
	defer srv.Close()
	in := sinktest.Lifecycle("w1", "n1", 0)[0]

	// Default body: the Incident JSON, signed.
	s, err := New("wh", Config{URL: srv.URL + "/hook?token=abc", Headers: map[string]ingest.Secret{"Authorization": "Bearer T0KEN-SECRET"}, SigningKey: "k3y-SECRET"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	var back correlate.Incident
	if err := json.Unmarshal(gotBody, &back); err != nil || back.ChangeID() != in.ChangeID() || method != "POST" {
		t.Fatalf("body %s: %v", gotBody, err)
	}
	if sig := gotHdr.Get("X-Klaxon-Signature"); sig != Sign([]byte("k3y-SECRET"), gotBody) || !strings.HasPrefix(sig, "sha256=") {
		t.Errorf("signature %q", sig)
	}
	if gotHdr.Get("Idempotency-Key") != in.ChangeID() || gotHdr.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", gotHdr)
	}

	// A template body, PUT.
	s, err = New("wh", Config{URL: srv.URL, Method: "put", Headers: map[string]ingest.Secret{"Authorization": "Bearer T0KEN-SECRET"},
		Body: `{"text": {{ printf "%s: %s" .Status .Title | json }}, "n": {{ .Count }}, "short": {{ .Rule | truncate 6 | json }}}`})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(gotBody, &m); err != nil || m["text"] != "firing: "+in.Title || m["n"] != float64(in.Count) || m["short"] != "nomad…" || method != "PUT" {
		t.Fatalf("templated body %s: %v", gotBody, err)
	}
	if gotHdr.Get("X-Klaxon-Signature") != "" {
		t.Error("signed without a key")
	}

	// A 401 echoing the token: not retryable, no secret in the error.
	s, _ = New("wh", Config{URL: srv.URL + "/hook?token=abcdefgh", Headers: map[string]ingest.Secret{"Authorization": "Bearer wrong"}})
	r, err := s.Send(context.Background(), in)
	if err == nil || r || strings.Contains(err.Error(), "abcdefgh") {
		t.Errorf("401: %v %v", r, err)
	}

	// Config errors name keys.
	c := Config{URL: "x", Method: "GET", Body: "{{ .Nope", SigningKey: "a", SigningKeyEnv: "B"}
	c.SetDefaults()
	err = c.Validate("sinks[5]")
	for _, want := range []string{"sinks[5].url", "sinks[5].method", "sinks[5].body", "sinks[5].signing_key"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate lacks %s: %v", want, err)
		}
	}
	if _, err := New("wh", Config{URL: srv.URL, Body: "{{ .NoSuchField }}"}); err == nil {
		t.Error("a template referring to a missing field was accepted")
	}
}
