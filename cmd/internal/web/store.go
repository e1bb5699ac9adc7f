package web

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Store defaults.
const (
	// DefaultMaxEvidence caps the evidence merged per incident.
	DefaultMaxEvidence = 500
	// DefaultKeepResolved caps the resolved incidents kept.
	DefaultKeepResolved = 200
	// DefaultResolvedFor is how long a resolved incident is listed on /.
	DefaultResolvedFor = 24 * time.Hour
)

// Incidents is what the web view reads incidents from; *Store implements
// it. Implementations must be safe for concurrent use.
type Incidents interface {
	// List returns the open incidents (newest update first) and the
	// incidents resolved since `since` (newest resolution first).
	List(since time.Time) (open, resolved []correlate.Incident)
	// Get returns the latest change of an incident with the evidence of
	// all its changes merged (oldest first).
	Get(id string) (correlate.Incident, bool)
	// Version changes whenever the incidents change.
	Version() uint64
}

// Store keeps the incidents that the web view shows, built from incident
// changes (Apply). It is safe for concurrent use.
type Store struct {
	// MaxEvidence caps the merged evidence per incident (oldest dropped).
	MaxEvidence int
	// KeepResolved caps the resolved incidents kept (oldest dropped).
	KeepResolved int

	mu       sync.RWMutex
	byID     map[string]*stored
	resolved []string // ids in order of resolution
	version  uint64
}

type stored struct {
	in   correlate.Incident // latest change, Evidence unused
	ev   []correlate.Evidence
	seen map[string]struct{}
}

// NewStore returns an empty store with the default limits.
func NewStore() *Store {
	return &Store{MaxEvidence: DefaultMaxEvidence, KeepResolved: DefaultKeepResolved, byID: map[string]*stored{}}
}

// Apply records one incident change. Changes of an older occurrence of the
// same incident, or older than the one kept, are ignored; a new occurrence
// (another started_at) replaces the old one.
func (s *Store) Apply(in correlate.Incident) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byID[in.ID]
	switch {
	case cur == nil, in.StartedAt.After(cur.in.StartedAt):
		if cur != nil && cur.in.Status == correlate.StatusResolved {
			s.resolved = slices.DeleteFunc(s.resolved, func(id string) bool { return id == in.ID })
		}
		cur = &stored{seen: map[string]struct{}{}}
		s.byID[in.ID] = cur
	case in.StartedAt.Before(cur.in.StartedAt), in.Seq < cur.in.Seq:
		return
	}
	wasResolved := cur.in.Status == correlate.StatusResolved
	cur.in = in
	cur.in.Evidence = nil
	for _, e := range in.Evidence {
		k := evidenceKey(e)
		if _, dup := cur.seen[k]; dup {
			continue
		}
		cur.seen[k] = struct{}{}
		cur.ev = append(cur.ev, e)
	}
	slices.SortStableFunc(cur.ev, func(a, b correlate.Evidence) int { return a.Time.Compare(b.Time) })
	if max := cmp.Or(s.MaxEvidence, DefaultMaxEvidence); len(cur.ev) > max {
		for _, e := range cur.ev[:len(cur.ev)-max] {
			delete(cur.seen, evidenceKey(e))
		}
		cur.ev = slices.Clone(cur.ev[len(cur.ev)-max:])
	}
	if in.Status == correlate.StatusResolved && !wasResolved {
		s.resolved = append(s.resolved, in.ID)
		if keep := cmp.Or(s.KeepResolved, DefaultKeepResolved); len(s.resolved) > keep {
			for _, id := range s.resolved[:len(s.resolved)-keep] {
				delete(s.byID, id)
			}
			s.resolved = slices.Clone(s.resolved[len(s.resolved)-keep:])
		}
	}
	s.version++
}

func evidenceKey(e correlate.Evidence) string {
	if e.ID != "" {
		return e.ID
	}
	return e.Time.UTC().Format(time.RFC3339Nano) + "\x00" + e.Source + "\x00" + e.Kind + "\x00" + e.Msg
}

// List implements Incidents.
func (s *Store) List(since time.Time) (open, resolved []correlate.Incident) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, st := range s.byID {
		if st.in.Status != correlate.StatusResolved {
			open = append(open, st.in)
		} else if st.in.ResolvedAt == nil || !st.in.ResolvedAt.Before(since) {
			resolved = append(resolved, st.in)
		}
	}
	slices.SortFunc(open, func(a, b correlate.Incident) int {
		return cmp.Or(b.UpdatedAt.Compare(a.UpdatedAt), cmp.Compare(a.ID, b.ID))
	})
	slices.SortFunc(resolved, func(a, b correlate.Incident) int {
		return cmp.Or(resolvedAt(b).Compare(resolvedAt(a)), cmp.Compare(a.ID, b.ID))
	})
	return open, resolved
}

func resolvedAt(in correlate.Incident) time.Time {
	if in.ResolvedAt != nil {
		return *in.ResolvedAt
	}
	return in.UpdatedAt
}

// Get implements Incidents.
func (s *Store) Get(id string) (correlate.Incident, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.byID[id]
	if !ok {
		return correlate.Incident{}, false
	}
	in := st.in
	in.Evidence = slices.Clone(st.ev)
	return in, true
}

// Version implements Incidents.
func (s *Store) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}

// Follow feeds the store from the incident changes in KLAXON_INCIDENTS
// through an ordered consumer (an ephemeral, client-managed consumer that
// changes no durable state), from the start of the stream, until ctx is
// done or the connection closes.
func Follow(ctx context.Context, js jetstream.JetStream, s *Store, log *slog.Logger) error {
	cons, err := js.OrderedConsumer(ctx, natslayout.IncidentsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{natslayout.IncidentsSubjects},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("web: follow %s: %w", natslayout.IncidentsStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("web: follow %s: %w", natslayout.IncidentsStream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrConnectionClosed) {
				return nil
			}
			return fmt.Errorf("web: follow %s: %w", natslayout.IncidentsStream, err)
		}
		var in correlate.Incident
		if err := json.Unmarshal(m.Data(), &in); err != nil || in.ID == "" {
			log.Warn("web: undecodable incident change skipped", "subject", m.Subject(), "err", err)
			continue
		}
		s.Apply(in)
	}
}

// FollowRetrying runs Follow until ctx is done or closed reports the
// connection closed, starting over after a failure.
func FollowRetrying(ctx context.Context, js jetstream.JetStream, s *Store, closed func() bool, log *slog.Logger) {
	for {
		err := Follow(ctx, js, s, log)
		if ctx.Err() != nil || closed() || err == nil {
			return
		}
		log.Warn("web view: following incidents failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
