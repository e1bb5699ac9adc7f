package silence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Retention is how long an expired silence is kept before it is pruned.
const Retention = 5 * 24 * time.Hour

// Keys in the bucket: silences, and per sink the latest change a silence
// muted for each incident.
const (
	silencePrefix = "silence."
	heldPrefix    = "held."
)

// ErrNotFound is returned for an unknown silence id.
var ErrNotFound = errors.New("silence not found")

// Store reads and writes silences in the bucket. After Start it also keeps
// them in memory, watching the bucket, and implements sinks.Silencer.
type Store struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu       sync.RWMutex
	cache    map[string]Silence
	changed  chan struct{}
	started  bool
	watchErr error
}

var _ sinks.Silencer = (*Store)(nil)

// New returns a store on the bucket kv. A nil log discards.
func New(kv jetstream.KeyValue, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{kv: kv, log: log, cache: map[string]Silence{}, changed: make(chan struct{})}
}

// Open returns a store on the KLAXON_SILENCES bucket of js.
func Open(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Store, error) {
	kv, err := js.KeyValue(ctx, natslayout.SilencesBucket)
	if err != nil {
		return nil, fmt.Errorf("silences: bucket %s: %w", natslayout.SilencesBucket, err)
	}
	return New(kv, log), nil
}

func silenceKey(id string) string { return silencePrefix + id }

func tok(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func heldKey(sink, incident string) string { return heldPrefix + tok(sink) + "." + tok(incident) }

func decode(b []byte, key string) (Silence, error) {
	var s Silence
	if err := json.Unmarshal(b, &s); err != nil {
		return Silence{}, fmt.Errorf("silences: key %s: %w", key, err)
	}
	if err := s.Validate(); err != nil {
		return Silence{}, fmt.Errorf("silences: key %s: %w", key, err)
	}
	return s, nil
}

// Add stores a new silence (or replaces the one with its id) and returns
// it with its id. StartsAt defaults to now; a silence that is already over
// is refused. Silences expired for longer than Retention are pruned.
func (s *Store) Add(ctx context.Context, sil Silence, now time.Time) (Silence, error) {
	if sil.ID == "" {
		sil.ID = newID()
	}
	if sil.StartsAt.IsZero() {
		sil.StartsAt = now
	}
	sil.StartsAt, sil.EndsAt = sil.StartsAt.UTC(), sil.EndsAt.UTC()
	sil.UpdatedAt = now.UTC()
	if err := sil.Validate(); err != nil {
		return Silence{}, err
	}
	if !sil.EndsAt.After(now) {
		return Silence{}, fmt.Errorf("silence %s: ends_at %s is not in the future", sil.ID, sil.EndsAt.Format(time.RFC3339))
	}
	b, err := json.Marshal(sil)
	if err != nil {
		return Silence{}, err
	}
	if _, err := s.kv.Put(ctx, silenceKey(sil.ID), b); err != nil {
		return Silence{}, fmt.Errorf("silence %s: store: %w", sil.ID, err)
	}
	s.apply(sil.ID, &sil)
	s.prune(ctx, now)
	return sil, nil
}

// Get returns one silence.
func (s *Store) Get(ctx context.Context, id string) (Silence, error) {
	sil, _, err := s.get(ctx, id)
	return sil, err
}

func (s *Store) get(ctx context.Context, id string) (Silence, uint64, error) {
	if !validID(id) {
		return Silence{}, 0, fmt.Errorf("silence %q: %w", id, ErrNotFound)
	}
	e, err := s.kv.Get(ctx, silenceKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Silence{}, 0, fmt.Errorf("silence %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Silence{}, 0, fmt.Errorf("silence %s: %w", id, err)
	}
	sil, err := decode(e.Value(), e.Key())
	return sil, e.Revision(), err
}

// List returns every stored silence, the latest-starting first.
func (s *Store) List(ctx context.Context) ([]Silence, error) {
	var out []Silence
	err := s.scan(ctx, silencePrefix+">", func(e jetstream.KeyValueEntry) {
		sil, err := decode(e.Value(), e.Key())
		if err != nil {
			s.log.Warn("unreadable silence skipped", "err", err)
			return
		}
		out = append(out, sil)
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartsAt.Equal(out[j].StartsAt) {
			return out[i].StartsAt.After(out[j].StartsAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}

// Expire ends a silence now: its end is set to now (a pending one also
// starts now). Expiring an expired silence is an error.
func (s *Store) Expire(ctx context.Context, id string, now time.Time) (Silence, error) {
	for range 5 {
		sil, rev, err := s.get(ctx, id)
		if err != nil {
			return Silence{}, err
		}
		if sil.State(now) == StateExpired {
			return sil, fmt.Errorf("silence %s: already expired at %s", id, sil.EndsAt.Format(time.RFC3339))
		}
		now = now.UTC()
		if sil.StartsAt.After(now) {
			sil.StartsAt = now
		}
		sil.EndsAt, sil.UpdatedAt = now, now
		b, err := json.Marshal(sil)
		if err != nil {
			return Silence{}, err
		}
		if _, err := s.kv.Update(ctx, silenceKey(id), b, rev); err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				continue // changed meanwhile: read again
			}
			return Silence{}, fmt.Errorf("silence %s: expire: %w", id, err)
		}
		s.apply(id, &sil)
		return sil, nil
	}
	return Silence{}, fmt.Errorf("silence %s: expire: changed concurrently, try again", id)
}

// prune deletes silences expired for longer than Retention.
func (s *Store) prune(ctx context.Context, now time.Time) {
	all, err := s.List(ctx)
	if err != nil {
		return
	}
	for _, sil := range all {
		if now.Sub(sil.EndsAt) > Retention {
			if err := s.kv.Purge(ctx, silenceKey(sil.ID)); err == nil {
				s.apply(sil.ID, nil)
			}
		}
	}
}

// scan calls f for the current value of every key matching filter.
func (s *Store) scan(ctx context.Context, filter string, f func(jetstream.KeyValueEntry)) error {
	w, err := s.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("silences: list %s: %w", filter, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("silences: list %s: %w", filter, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("silences: list %s: watch closed", filter)
			}
			if e == nil {
				return nil // all current values seen
			}
			f(e)
		}
	}
}

// Start loads the silences into memory and keeps them up to date by
// watching the bucket until ctx is done. Silenced works only after it.
func (s *Store) Start(ctx context.Context) error {
	w, err := s.kv.Watch(ctx, silencePrefix+">")
	if err != nil {
		return fmt.Errorf("silences: watch: %w", err)
	}
	initial := true
	for initial {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("silences: watch closed")
			}
			if e == nil {
				initial = false
				break
			}
			s.applyEntry(e)
		}
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					if ctx.Err() == nil {
						s.log.Error("silences: watch closed; silences are no longer updated")
					}
					return
				}
				if e != nil {
					s.applyEntry(e)
				}
			}
		}
	}()
	return nil
}

func (s *Store) applyEntry(e jetstream.KeyValueEntry) {
	id := strings.TrimPrefix(e.Key(), silencePrefix)
	if e.Operation() != jetstream.KeyValuePut {
		s.apply(id, nil)
		return
	}
	sil, err := decode(e.Value(), e.Key())
	if err != nil {
		s.log.Warn("unreadable silence ignored", "err", err)
		return
	}
	s.apply(id, &sil)
}

// apply updates the in-memory copy (nil deletes) and signals the change.
func (s *Store) apply(id string, sil *Silence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sil == nil {
		if _, ok := s.cache[id]; !ok {
			return
		}
		delete(s.cache, id)
	} else {
		if cur, ok := s.cache[id]; ok && !sil.UpdatedAt.After(cur.UpdatedAt) && cur.EndsAt.Equal(sil.EndsAt) && cur.StartsAt.Equal(sil.StartsAt) {
			return // already known
		}
		s.cache[id] = *sil
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Silenced implements sinks.Silencer: the id of an active silence matching
// in (the one ending last), from the in-memory copy.
func (s *Store) Silenced(in correlate.Incident, now time.Time) (string, bool) {
	sil, ok := s.SilenceFor(in, now)
	return sil.ID, ok
}

// SilenceFor returns the active silence matching in that ends last, from
// the in-memory copy (kept after Start).
func (s *Store) SilenceFor(in correlate.Incident, now time.Time) (Silence, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	best, found := Silence{}, false
	for _, sil := range s.cache {
		if sil.State(now) != StateActive || !sil.Matches(in) {
			continue
		}
		if !found || sil.EndsAt.After(best.EndsAt) || (sil.EndsAt.Equal(best.EndsAt) && sil.ID < best.ID) {
			best, found = sil, true
		}
	}
	return best, found
}

// Changed implements sinks.Silencer: the channel is closed at the next
// change of the silences; ask again after it fired.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Hold implements sinks.Silencer.
func (s *Store) Hold(ctx context.Context, sink string, h sinks.Held) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, heldKey(sink, h.Incident.ID), b); err != nil {
		return fmt.Errorf("silences: hold %s for sink %s: %w", h.Incident.ID, sink, err)
	}
	return nil
}

// Release implements sinks.Silencer.
func (s *Store) Release(ctx context.Context, sink, incident string) error {
	if err := s.kv.Purge(ctx, heldKey(sink, incident)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("silences: release %s for sink %s: %w", incident, sink, err)
	}
	return nil
}

// HeldFor implements sinks.Silencer.
func (s *Store) HeldFor(ctx context.Context, sink string) ([]sinks.Held, error) {
	var out []sinks.Held
	err := s.scan(ctx, heldPrefix+tok(sink)+".*", func(e jetstream.KeyValueEntry) {
		var h sinks.Held
		if err := json.Unmarshal(e.Value(), &h); err != nil || h.Incident.ID == "" {
			s.log.Warn("unreadable held change skipped", "key", e.Key(), "err", err)
			return
		}
		out = append(out, h)
	})
	return out, err
}
