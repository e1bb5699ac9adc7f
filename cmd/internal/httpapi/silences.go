package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// SilenceRequest is the body of POST /api/silences and what `klaxon
// silence add` sends: matchers as text ("rule=nomad.task.*"), and either
// EndsAt or Duration (from StartsAt, default now).
type SilenceRequest struct {
	Matchers  []string   `json:"matchers"`
	StartsAt  *time.Time `json:"starts_at,omitempty"`
	EndsAt    *time.Time `json:"ends_at,omitempty"`
	Duration  string     `json:"duration,omitempty"`
	CreatedBy string     `json:"created_by"`
	Comment   string     `json:"comment"`
}

// Silence turns the request into a silence to store; now is the default start.
func (q SilenceRequest) Silence(now time.Time) (silence.Silence, error) {
	var errs []error
	s := silence.Silence{CreatedBy: q.CreatedBy, Comment: q.Comment, StartsAt: now}
	for _, m := range q.Matchers {
		pm, err := silence.ParseMatcher(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Matchers = append(s.Matchers, pm)
	}
	if len(q.Matchers) == 0 {
		errs = append(errs, errors.New("at least one matcher is required (rule=..., node=..., label=value)"))
	}
	if q.StartsAt != nil {
		s.StartsAt = *q.StartsAt
	}
	switch {
	case q.EndsAt != nil && q.Duration != "":
		errs = append(errs, errors.New("give ends_at or duration, not both"))
	case q.EndsAt != nil:
		s.EndsAt = *q.EndsAt
	case q.Duration != "":
		d, err := time.ParseDuration(q.Duration)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("duration %q: want a positive duration such as 2h or 30m", q.Duration))
		}
		s.EndsAt = s.StartsAt.Add(d)
	default:
		errs = append(errs, errors.New("ends_at or duration is required"))
	}
	return s, errors.Join(errs...)
}

// SilenceView is a silence with its state at the time of the answer.
type SilenceView struct {
	silence.Silence
	State string `json:"state"`
}

// registerSilences serves the silences: GET /api/silences lists them,
// POST /api/silences adds one (SilenceRequest), DELETE /api/silences/{id}
// expires one. Changes need the bearer token when one is configured (it
// is required beyond loopback).
func registerSilences(mux *http.ServeMux, st *silence.Store, token ingest.Secret, now func() time.Time, log *slog.Logger) {
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	deny := func(w http.ResponseWriter, r *http.Request) bool {
		if authorized(r, token) {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="klaxon"`)
		http.Error(w, "a bearer token is required", http.StatusUnauthorized)
		return true
	}
	mux.HandleFunc("GET /api/silences", func(w http.ResponseWriter, r *http.Request) {
		all, err := st.List(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		t := now()
		out := make([]SilenceView, 0, len(all))
		for _, s := range all {
			out = append(out, SilenceView{s, s.State(t)})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /api/silences", func(w http.ResponseWriter, r *http.Request) {
		if deny(w, r) || !jsonBody(w, r) {
			return
		}
		var q SilenceRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		t := now()
		s, err := q.Silence(t)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s, err = st.Add(r.Context(), s, t)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.Info("silence added", "silence", s.ID, "matchers", matcherText(s), "ends_at", s.EndsAt, "created_by", s.CreatedBy)
		writeJSON(w, http.StatusCreated, SilenceView{s, s.State(t)})
	})
	mux.HandleFunc("DELETE /api/silences/{id}", func(w http.ResponseWriter, r *http.Request) {
		if deny(w, r) {
			return
		}
		t := now()
		s, err := st.Expire(r.Context(), r.PathValue("id"), t)
		switch {
		case errors.Is(err, silence.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		log.Info("silence expired", "silence", s.ID)
		writeJSON(w, http.StatusOK, SilenceView{s, s.State(t)})
	})
}

func matcherText(s silence.Silence) string {
	var parts []string
	for _, m := range s.Matchers {
		parts = append(parts, m.String())
	}
	return strings.Join(parts, " ")
}
