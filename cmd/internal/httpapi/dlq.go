package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks"
)

// DLQSinks lists the sinks that have dead letters in KLAXON_DLQ (their
// subject tokens), sorted.
func DLQSinks(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	st, err := js.Stream(ctx, natslayout.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(natslayout.DLQPrefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	var out []string
	for subj := range info.State.Subjects {
		out = append(out, strings.TrimPrefix(subj, natslayout.DLQPrefix+"."))
	}
	sort.Strings(out)
	return out, nil
}

// ListDeadLetters returns the dead letters of sink (every sink when
// empty), up to limit per sink (≤ 0: all), by sequence.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, sink string, limit int) ([]sinks.DeadLetter, error) {
	names := []string{sink}
	if sink == "" {
		var err error
		if names, err = DLQSinks(ctx, js); err != nil {
			return nil, err
		}
	}
	all := []sinks.DeadLetter{}
	for _, n := range names {
		dls, err := sinks.ListDLQ(ctx, js, n, limit)
		if err != nil {
			return nil, err
		}
		all = append(all, dls...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Seq < all[j].Seq })
	return all, nil
}

// DLQReplayRequest is the body of POST /api/dlq/replay and what `klaxon
// dlq replay` sends to a running klaxon: a sink and the dead-letter
// sequences to send again (none: all of the sink's).
type DLQReplayRequest struct {
	Sink string   `json:"sink"`
	Seqs []uint64 `json:"seqs,omitempty"`
}

// DLQReplayResponse says how many dead letters were sent again.
type DLQReplayResponse struct {
	Replayed int    `json:"replayed"`
	Error    string `json:"error,omitempty"`
}

// registerDLQ serves the dead letters of a running klaxon, so that `klaxon
// dlq list|replay` work while it holds the embedded store: GET
// /api/dlq?sink=&limit= lists them (a JSON array of sinks.DeadLetter),
// POST /api/dlq/replay (DLQReplayRequest) sends them again to their sink
// only, and needs the bearer token when one is configured. names gives the
// configured sinks (a replay to another is refused: nothing would deliver
// it).
func registerDLQ(mux *http.ServeMux, js jetstream.JetStream, token ingest.Secret, names func() []string, log *slog.Logger) {
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/dlq", func(w http.ResponseWriter, r *http.Request) {
		limit := 0
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				http.Error(w, fmt.Sprintf("limit %q: want a number ≥ 0", s), http.StatusBadRequest)
				return
			}
			limit = n
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		dls, err := ListDeadLetters(ctx, js, r.URL.Query().Get("sink"), limit)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, dls)
	})
	mux.HandleFunc("POST /api/dlq/replay", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="klaxon"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		if !jsonBody(w, r) {
			return
		}
		var q DLQReplayRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if have := names(); !slices.Contains(have, q.Sink) {
			http.Error(w, fmt.Sprintf("sink %q is not configured here (sinks: %s): nothing would deliver the replay", q.Sink, strings.Join(have, ", ")), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		n, err := sinks.ReplayDLQ(ctx, js, q.Sink, q.Seqs)
		resp := DLQReplayResponse{Replayed: n}
		code := http.StatusOK
		if err != nil {
			resp.Error, code = err.Error(), http.StatusBadGateway
		}
		log.Info("dead letters replayed", "sink", q.Sink, "replayed", n, "err", err)
		writeJSON(w, code, resp)
	})
}

// jsonBody refuses a change whose body is not declared JSON (415): a form
// on another site cannot send one without the browser asking first, so a
// token-less endpoint on loopback cannot be driven by a web page.
func jsonBody(w http.ResponseWriter, r *http.Request) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/json") {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return false
	}
	return true
}
