package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

var t0 = time.Date(2026, 11, 20, 9, 14, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func evidence(ids ...int) []correlate.Evidence {
	var out []correlate.Evidence
	for _, i := range ids {
		out = append(out, correlate.Evidence{Time: at(i), ID: fmt.Sprintf("log:%d", i), Source: "nomad.log", Kind: "client.driver_mgr", Msg: fmt.Sprintf("line %d", i)})
	}
	return out
}

func change(id, status string, started, seq int, ev ...int) correlate.Incident {
	in := correlate.Incident{ID: id, Rule: "r." + id, Status: status, Severity: "critical", Node: "n",
		Title: "incident " + id, StartedAt: at(started), UpdatedAt: at(started + seq), Seq: seq, Count: len(ev), Evidence: evidence(ev...)}
	if status == correlate.StatusResolved {
		r := at(started + seq)
		in.ResolvedAt = &r
	}
	return in
}

func evidenceIDs(in correlate.Incident) []string {
	var out []string
	for _, e := range in.Evidence {
		out = append(out, e.ID)
	}
	return out
}

// TestStoreApply: changes of one incident merge their evidence (no
// duplicates, in time order); stale changes are ignored; a new occurrence
// starts afresh; resolved incidents leave the open list.
func TestStoreApply(t *testing.T) {
	tests := []struct {
		name         string
		changes      []correlate.Incident
		wantStatus   string
		wantSeq      int
		wantEvidence []string
		wantOpen     int
		wantResolved int
	}{
		{
			name:         "updates merge evidence",
			changes:      []correlate.Incident{change("a", "firing", 0, 1, 1, 2), change("a", "updated", 0, 2, 2, 3, 4)},
			wantStatus:   "updated",
			wantSeq:      2,
			wantEvidence: []string{"log:1", "log:2", "log:3", "log:4"},
			wantOpen:     1,
		},
		{
			name:         "a stale change is ignored",
			changes:      []correlate.Incident{change("a", "firing", 0, 1, 1), change("a", "updated", 0, 3, 5), change("a", "updated", 0, 2, 3)},
			wantStatus:   "updated",
			wantSeq:      3,
			wantEvidence: []string{"log:1", "log:5"},
			wantOpen:     1,
		},
		{
			name:         "resolution",
			changes:      []correlate.Incident{change("a", "firing", 0, 1, 1), change("a", "resolved", 0, 2)},
			wantStatus:   "resolved",
			wantSeq:      2,
			wantEvidence: []string{"log:1"},
			wantResolved: 1,
		},
		{
			name:         "a new occurrence starts afresh",
			changes:      []correlate.Incident{change("a", "firing", 0, 1, 1), change("a", "resolved", 0, 2), change("a", "firing", 100, 1, 101)},
			wantStatus:   "firing",
			wantSeq:      1,
			wantEvidence: []string{"log:101"},
			wantOpen:     1,
		},
		{
			name:         "a change of an older occurrence is ignored",
			changes:      []correlate.Incident{change("a", "firing", 100, 1, 101), change("a", "updated", 0, 5, 7)},
			wantStatus:   "firing",
			wantSeq:      1,
			wantEvidence: []string{"log:101"},
			wantOpen:     1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := web.NewStore()
			var versions []uint64
			for _, c := range tc.changes {
				s.Apply(c)
				versions = append(versions, s.Version())
			}
			in, ok := s.Get("a")
			if !ok {
				t.Fatal("incident a not kept")
			}
			if in.Status != tc.wantStatus || in.Seq != tc.wantSeq {
				t.Errorf("status %s seq %d, want %s %d", in.Status, in.Seq, tc.wantStatus, tc.wantSeq)
			}
			if got := evidenceIDs(in); !slices.Equal(got, tc.wantEvidence) {
				t.Errorf("evidence %v, want %v", got, tc.wantEvidence)
			}
			open, resolved := s.List(time.Time{})
			if len(open) != tc.wantOpen || len(resolved) != tc.wantResolved {
				t.Errorf("%d open, %d resolved; want %d, %d", len(open), len(resolved), tc.wantOpen, tc.wantResolved)
			}
			for _, o := range append(open, resolved...) {
				if o.Evidence != nil {
					t.Errorf("List returns evidence")
				}
			}
			if versions[0] == 0 {
				t.Errorf("version did not change on the first change: %v", versions)
			}
		})
	}
}

// TestStoreLimits: evidence per incident and resolved incidents are capped
// (oldest dropped); resolved incidents older than `since` are not listed.
func TestStoreLimits(t *testing.T) {
	s := web.NewStore()
	s.MaxEvidence, s.KeepResolved = 3, 2
	s.Apply(change("a", "firing", 0, 1, 1, 2, 3))
	s.Apply(change("a", "updated", 0, 2, 4, 5))
	in, _ := s.Get("a")
	if got := evidenceIDs(in); !slices.Equal(got, []string{"log:3", "log:4", "log:5"}) {
		t.Errorf("evidence %v, want the newest three", got)
	}
	for i, id := range []string{"x", "y", "z"} {
		s.Apply(change(id, "firing", i*10, 1, i*10))
		s.Apply(change(id, "resolved", i*10, 2))
	}
	if _, ok := s.Get("x"); ok {
		t.Errorf("the oldest resolved incident is kept beyond KeepResolved")
	}
	_, resolved := s.List(at(21)) // z resolved at 22, y at 12
	if len(resolved) != 1 || resolved[0].ID != "z" {
		t.Errorf("resolved since 21s: %+v, want z only", resolved)
	}
	open, _ := s.List(time.Time{})
	if len(open) != 1 || open[0].ID != "a" {
		t.Errorf("open %+v, want a", open)
	}
}

// TestFollow: the store follows KLAXON_INCIDENTS on a real embedded
// JetStream, including changes published before it started.
func TestFollow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = b.Close(cctx)
	}()
	publish := func(in correlate.Incident) {
		data, _ := json.Marshal(in)
		msg := nats.NewMsg(natslayout.IncidentSubject(in.Severity, in.Rule))
		msg.Data = data
		if _, err := b.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publish(change("a", "firing", 0, 1, 1))
	s := web.NewStore()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- web.Follow(fctx, b.JS, s, slog.New(slog.DiscardHandler)) }()
	publish(change("a", "updated", 0, 2, 2))
	publish(change("b", "firing", 5, 1, 5))
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, okA := s.Get("a")
		_, okB := s.Get("b")
		if okA && okB && a.Seq == 2 {
			if got := evidenceIDs(a); !slices.Equal(got, []string{"log:1", "log:2"}) {
				t.Errorf("evidence %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not follow the stream: a=%+v (%v) b=%v", a, okA, okB)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Follow: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not return after cancel")
	}
}
