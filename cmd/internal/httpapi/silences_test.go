package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks/silence"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSilencesHTTP: /api/silences on the HTTP endpoint, on a real embedded
// bus: changes need the bearer token, bad requests say why, an added
// silence mutes matching incidents at once, and expiring it ends that.
func TestSilencesHTTP(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bus.OpenEmbedded(ctx, t.TempDir(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	st, err := silence.Open(ctx, b.JS, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr, err := Serve(ctx, Config{Listen: "127.0.0.1:0", Token: "s3cret"}, Options{
		Gatherer: prometheus.NewRegistry(), Ready: func() bool { return true }, Reload: func() error { return nil },
		Silences: st, Now: time.Now, Log: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr + "/api/silences"
	call := func(method, url, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if body != "" && !strings.Contains(body, "as a form") {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.String()
	}
	add := `{"matchers":["rule=~nomad\\.task\\..*","node=vm"],"duration":"2h","created_by":"alice","comment":"maintenance"}`
	tests := []struct {
		name, method, url, token, body string
		code                           int
		want                           string
	}{
		{"add without token", "POST", base, "", add, http.StatusUnauthorized, "bearer token"},
		{"add with a wrong token", "POST", base, "nope", add, http.StatusUnauthorized, "bearer token"},
		{"bad matcher", "POST", base, "s3cret", `{"matchers":["rule=~("],"duration":"1h","comment":"x"}`, http.StatusBadRequest, "missing closing )"},
		{"no end", "POST", base, "s3cret", `{"matchers":["rule=x"],"comment":"x"}`, http.StatusBadRequest, "ends_at or duration is required"},
		{"unknown field", "POST", base, "s3cret", `{"matchers":["rule=x"],"duration":"1h","until":"x"}`, http.StatusBadRequest, "unknown field"},
		// Not JSON (a cross-site form can send text/plain without asking): refused.
		{"not declared JSON", "POST", base, "s3cret", `{"matchers":["rule=x"],"duration":"1h","comment":"as a form"}`, http.StatusUnsupportedMediaType, "application/json"},
		{"expire unknown", "DELETE", base + "/no-such-id", "s3cret", "", http.StatusNotFound, "not found"},
		{"add", "POST", base, "s3cret", add, http.StatusCreated, `"state":"active"`},
	}
	var created SilenceView
	for _, tc := range tests {
		code, body := call(tc.method, tc.url, tc.token, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q, want %d and %q", tc.name, code, body, tc.code, tc.want)
		}
		if tc.name == "add" {
			if err := json.Unmarshal([]byte(body), &created); err != nil {
				t.Fatal(err)
			}
		}
	}
	if created.ID == "" || created.CreatedBy != "alice" || created.EndsAt.Sub(created.StartsAt) != 2*time.Hour {
		t.Fatalf("created %+v", created)
	}
	crash := correlate.Incident{ID: "i1", Rule: "nomad.task.crash_loop", Node: "vm"}
	if id, ok := st.Silenced(crash, time.Now()); !ok || id != created.ID {
		t.Errorf("incident not silenced after POST: %q %v", id, ok)
	}
	if _, ok := st.Silenced(correlate.Incident{ID: "i2", Rule: "nomad.task.crash_loop", Node: "other"}, time.Now()); ok {
		t.Error("incident of another node silenced")
	}
	code, body := call("GET", base, "", "")
	var list []SilenceView
	if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0].ID != created.ID {
		t.Errorf("list: %d %s", code, body)
	}
	if code, body := call("DELETE", base+"/"+created.ID, "", ""); code != http.StatusUnauthorized {
		t.Errorf("expire without token: %d %s", code, body)
	}
	if code, body := call("DELETE", base+"/"+created.ID, "s3cret", ""); code != http.StatusOK || !strings.Contains(body, `"state":"expired"`) {
		t.Errorf("expire: %d %s", code, body)
	}
	if _, ok := st.Silenced(crash, time.Now()); ok {
		t.Error("incident still silenced after expire")
	}
	if code, body := call("DELETE", base+"/"+created.ID, "s3cret", ""); code != http.StatusConflict || !strings.Contains(body, "already expired") {
		t.Errorf("second expire: %d %s", code, body)
	}
	if all, err := st.List(ctx); err != nil || len(all) != 1 || all[0].State(time.Now()) != silence.StateExpired {
		t.Errorf("stored: %+v %v", all, err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
