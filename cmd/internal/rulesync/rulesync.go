// Package rulesync hands the rules the correlator runs to the sidecars
// through NATS, and filters a sidecar's events by them at the edge: an
// event that no selector of any loaded rule matches is not published.
//
// The correlator stores its rule files (names and contents) under one key
// of the KLAXON_RULES bucket whenever it loads them (start, reload); every
// sidecar with the edge filter on watches that key and compiles each new
// version, so a rule edited centrally reaches the fleet's filters within a
// KV update. Rule overrides only disable, except or tune rules, never widen
// a selector, so filtering by the files alone keeps a superset of what the
// correlator uses. Until a sidecar has rules (none stored yet, the bucket
// unreachable, a version that does not compile) it publishes everything.
package rulesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/rules"
)

// bundle is the stored value: the set's hash and its files.
type bundle struct {
	Hash  string       `json:"hash"`
	Files []rules.File `json:"files"`
}

// Publish stores the files of set (read again from disk, by the names the
// set keeps) under natslayout.RulesKey, unless the stored version has the
// same hash.
func Publish(ctx context.Context, kv jetstream.KeyValue, set *rules.Set) error {
	b := bundle{Hash: set.Hash()}
	if e, err := kv.Get(ctx, natslayout.RulesKey); err == nil {
		var old bundle
		if json.Unmarshal(e.Value(), &old) == nil && old.Hash == b.Hash {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("rulesync: %w", err)
	}
	for _, name := range set.Files() {
		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("rulesync: %w", err)
		}
		b.Files = append(b.Files, rules.File{Name: name, Data: data})
	}
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("rulesync: %w", err)
	}
	if _, err := kv.Put(ctx, natslayout.RulesKey, data); err != nil {
		return fmt.Errorf("rulesync: store rules: %w", err)
	}
	return nil
}

// Distribute stores the rules the correlator runs for the sidecars' edge
// filters (Publish into natslayout.RulesBucket); a failure is logged: the
// filters keep the rules they have.
func Distribute(ctx context.Context, js jetstream.JetStream, set *rules.Set, log *slog.Logger) {
	kv, err := js.KeyValue(ctx, natslayout.RulesBucket)
	if err == nil {
		err = Publish(ctx, kv, set)
	}
	if err != nil {
		log.Error("rules not handed to the edge filters; they keep the rules they have", "err", err)
	}
}

// Filter keeps the events some rule of the latest distributed set can
// use. It is safe for concurrent use.
type Filter struct {
	set           atomic.Pointer[rules.Set]
	hash          atomic.Pointer[string]
	log           *slog.Logger
	kept, dropped atomic.Uint64
}

// NewFilter returns a filter without rules: it keeps everything until it
// has some (SetRules, Watch). A nil log discards.
func NewFilter(log *slog.Logger) *Filter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Filter{log: log}
}

// SetRules replaces the rules the filter keeps events for.
func (f *Filter) SetRules(s *rules.Set) {
	f.set.Store(s)
	h := s.Hash()
	f.hash.Store(&h)
}

// Keep reports whether ev is to be published: some selector of a rule
// matches it, or the filter has no rules yet.
func (f *Filter) Keep(ev *ingest.Event) bool {
	s := f.set.Load()
	keep := s == nil
	if !keep {
		s.Match(ev, func(*rules.Rule, uint64) { keep = true })
	}
	if keep {
		f.kept.Add(1)
	} else {
		f.dropped.Add(1)
	}
	return keep
}

// Counts returns how many events Keep kept and dropped so far.
func (f *Filter) Counts() (kept, dropped uint64) { return f.kept.Load(), f.dropped.Load() }

// Collectors are the filter's metrics: the events it kept and dropped.
func (f *Filter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "klaxon_edge_filter_kept_events_total",
			Help: "Events the edge filter published: some loaded rule can use them (or no rules were known yet).",
		}, func() float64 { return float64(f.kept.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "klaxon_edge_filter_dropped_events_total",
			Help: "Events the edge filter did not publish: no selector of any loaded rule matches them.",
		}, func() float64 { return float64(f.dropped.Load()) }),
	}
}

// Hash returns the hash of the rules in use ("" before any).
func (f *Filter) Hash() string {
	if h := f.hash.Load(); h != nil {
		return *h
	}
	return ""
}

// Watch follows the stored rules until ctx is done, compiling each
// version. A version that does not compile is logged and the rules in use
// stay. It returns ctx's error, or the error of starting the watch.
func (f *Filter) Watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.Watch(ctx, natslayout.RulesKey)
	if err != nil {
		return fmt.Errorf("rulesync: watch rules: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return ctx.Err()
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a deletion
			}
			f.apply(e.Value(), e.Revision())
		}
	}
}

// Follow keeps the filter's rules those stored in natslayout.RulesBucket
// until ctx is done, watching again with back-off while the bucket cannot
// be watched.
func (f *Filter) Follow(ctx context.Context, js jetstream.JetStream) {
	bo := backoff.New(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		kv, err := js.KeyValue(ctx, natslayout.RulesBucket)
		if err == nil {
			err = f.Watch(ctx, kv)
		}
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("edge filter: rules not followed; retrying (events are filtered by the rules it has, or all published)", "err", err)
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
	}
}

// apply compiles one stored version.
func (f *Filter) apply(value []byte, rev uint64) {
	var b bundle
	if err := json.Unmarshal(value, &b); err != nil {
		f.log.Error("edge filter: stored rules not readable; the rules in use stay", "revision", rev, "err", err)
		return
	}
	if b.Hash == f.Hash() {
		return
	}
	s, err := rules.LoadData(b.Files...)
	if err != nil {
		f.log.Error("edge filter: stored rules do not compile here; the rules in use stay", "revision", rev, "err", err)
		return
	}
	f.SetRules(s)
	f.log.Info("edge filter: rules updated", "rules", len(s.Rules), "files", len(b.Files), "revision", rev)
}
