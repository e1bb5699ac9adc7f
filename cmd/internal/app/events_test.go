package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nomadStreamServer serves a recorded event stream with Nomad's framing:
// NDJSON frames with Index >= the requested index, then heartbeats.
func nomadStreamServer(t *testing.T, capture string) *httptest.Server {
	t.Helper()
	f, err := os.Open(capture)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var frames [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		frames = append(frames, append([]byte(nil), sc.Bytes()...))
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/event/stream" {
			http.NotFound(w, r)
			return
		}
		from, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		w.Header().Set("Content-Type", "application/json")
		fl := w.(http.Flusher)
		for _, fr := range frames {
			var head struct{ Index uint64 }
			_ = json.Unmarshal(fr, &head)
			if head.Index != 0 && head.Index < from {
				continue
			}
			w.Write(fr)
			w.Write([]byte("\n"))
			fl.Flush()
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
				w.Write([]byte("{}\n"))
				fl.Flush()
			}
		}
	}))
}

// TestRunWithNomadEventStream: klaxon run with an event-stream source,
// against a server replaying the real recordings with Nomad's framing,
// fires the reconnect churn incident for win-client-2 with the jobs named,
// and the reschedule storm for job crashloop.
func TestRunWithNomadEventStream(t *testing.T) {
	tests := []struct {
		capture string
		rule    string
		want    []string // in the incident JSON
	}{
		{"nomad/captures/reconnect/events.ndjson", "nomad.client.reconnect_churn",
			[]string{`"node":"win-client-2"`, "edge-affine", "edge-pinned"}},
		{"nomad/captures/crashloop-gc-checkrestart/events.ndjson", "nomad.job.reschedule_storm",
			[]string{`"fields.job":"crashloop"`}},
	}
	for _, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			capture := needShared(t, tc.capture)
			srv := nomadStreamServer(t, capture)
			defer srv.Close()
			dir := t.TempDir()
			sinkPath := filepath.Join(dir, "incidents.jsonl")
			rulesDir, _ := filepath.Abs("../../../rules.d")
			cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: central
http: {listen: "127.0.0.1:0"}
rules_dir: %s
nomad:
  address: %s
sources:
  nomad_events:
    - namespace: "*"
sinks:
  - type: file
    path: %s
correlator:
  snapshot_interval: 100ms
  # The recording is from the past: keep the correlator's clock on event time.
  lateness: 8760h
`, rulesDir, srv.URL, sinkPath)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, Options{Log: quiet()}) }()
			deadline := time.Now().Add(20 * time.Second)
			for {
				var line string
				b, _ := os.ReadFile(sinkPath)
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, `"rule":"`+tc.rule+`"`) {
						line = l
					}
				}
				if line != "" {
					for _, w := range tc.want {
						if !strings.Contains(line, w) {
							t.Errorf("%s incident lacks %s: %s", tc.rule, w, line)
						}
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s incident; sink: %s", tc.rule, b)
				}
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
		})
	}
}
