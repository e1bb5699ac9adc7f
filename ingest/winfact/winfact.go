// Package winfact publishes facts about a Windows node that rules need to
// predict trouble before it happens: the size of the non-interactive
// desktop heap (seed 000), which bounds how many allocations Nomad can run
// on the node.
//
// The sidecar on the node (klaxon ingest or run) reads the SharedSection
// setting of HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\SubSystems
// (value Windows) through a Reader (the registry on Windows; recorded
// readings in tests) and publishes a node fact event at start and whenever
// the fact changes. A change of the registry takes effect only at the next
// boot: until then the event says so (pending_reboot) and keeps the size
// in effect. Parsing and the state machine are portable; only
// registry_windows.go touches the registry.
package winfact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Event source and kind of the facts.
const (
	// EventSource is the Event.Source of node facts.
	EventSource = ingest.SourceNodeFact
	// KindDesktopHeap is the Event.Kind of the desktop heap fact. Its fields:
	//
	//	heap_kb         int   non-interactive desktop heap in effect (KB); absent when unknown
	//	configured_kb   int   the third SharedSection number in the registry now
	//	interactive_kb  int   second number; shared_kb: first number
	//	shared_section  text  "1024,20480,768" as configured
	//	pending_reboot  bool  the registry differs from what is in effect
	//	boot_time       text  RFC 3339 time of the boot the fact is of
	//	kernel          text  "windows"
	KindDesktopHeap = "windows.desktop_heap"
)

// DefaultInterval is how often the registry is read.
const DefaultInterval = 5 * time.Minute

// bootTolerance is how far apart two computations of one boot time may lie
// (now minus the uptime, each rounded).
const bootTolerance = 2 * time.Minute

// Reading is one read of the SubSystems key.
type Reading struct {
	// Value is the key's Windows value (the csrss.exe command line).
	Value string
	// Modified is the key's last write time (zero: unknown).
	Modified time.Time
	// Boot is when the machine booted.
	Boot time.Time
}

// Reader reads the SubSystems key. NewRegistryReader is the one of Windows.
type Reader interface {
	Read() (Reading, error)
}

// ReaderFunc adapts a function to Reader.
type ReaderFunc func() (Reading, error)

// Read implements Reader.
func (f ReaderFunc) Read() (Reading, error) { return f() }

// Config configures a Source.
type Config struct {
	// Node is the node name the facts are published for (the sidecar's).
	Node string
	// Interval is how often the registry is read (default 5m).
	Interval time.Duration
	// Reader reads the key; nil: the registry (Windows only).
	Reader Reader
	// Checkpoints keeps what was published (key "winfact:desktop_heap"),
	// so that a restart within one boot knows the size in effect; may be
	// nil.
	Checkpoints *ingest.Checkpoints
	// Now is the clock of the events (default time.Now).
	Now func() time.Time
}

// heapState is what the source knows of the heap, stored in the
// checkpoints once published.
type heapState struct {
	// Boot is the boot (Unix seconds) the state is of.
	Boot int64 `json:"boot"`
	// Effective is the non-interactive heap in effect during that boot
	// (KB; 0: unknown).
	Effective int `json:"effective,omitempty"`
	// Configured is the SharedSection last read.
	Configured string `json:"configured,omitempty"`
	// ID is the id of the last fact published.
	ID string `json:"id,omitempty"`
}

const checkpointKey = "winfact:desktop_heap"

// Source publishes the desktop heap fact. It implements ingest.Source.
type Source struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	state heapState // as of the last event emitted

	published atomic.Int64
	failures  failures
}

// New returns a Source. Without a Reader it reads the registry, which only
// exists on Windows.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Node == "" {
		return nil, errors.New("winfact: no node name")
	}
	if cfg.Reader == nil {
		r, err := NewRegistryReader()
		if err != nil {
			return nil, err
		}
		cfg.Reader = r
	}
	s := &Source{cfg: cfg, log: log}
	if cfg.Checkpoints != nil {
		var st heapState
		if ok, err := cfg.Checkpoints.Get(checkpointKey, &st); err != nil {
			log.Warn("winfact: unreadable checkpoint; the heap in effect is taken from the registry", "error", err)
		} else if ok {
			s.state = st
		}
	}
	return s, nil
}

// Name identifies the source.
func (s *Source) Name() string { return "winfact:" + s.cfg.Node }

// Stats returns how many facts were published and how many reads failed.
func (s *Source) Stats() (published, failures int64) {
	return s.published.Load(), s.failures.n.Load()
}

// Run reads the key now and every Interval, and emits a fact at start and
// whenever it changes. It returns when ctx is done.
func (s *Source) Run(ctx context.Context, out chan<- ingest.Event) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	first := true
	for {
		if ev, ok := s.poll(first); ok {
			select {
			case out <- ev:
				s.published.Add(1)
				first = false
			case <-ctx.Done():
				return nil
			}
		} else if !s.failures.failing {
			first = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll reads the key once and returns the fact to publish, if any: always
// when force is set (the first read), else when it differs from the last.
func (s *Source) poll(force bool) (ingest.Event, bool) {
	r, err := s.cfg.Reader.Read()
	var ss SharedSection
	if err == nil {
		ss, err = ParseWindowsValue(r.Value)
	}
	if err != nil {
		s.failures.fail(s.log, "winfact: cannot read the desktop heap size (SharedSection); will retry", "error", err, "every", s.cfg.Interval)
		return ingest.Event{}, false
	}
	s.failures.ok(s.log, "winfact: desktop heap size readable again", "shared_section", ss.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	next := advance(s.state, r, ss)
	ev := s.fact(next, ss, r)
	if !force && ev.ID == s.state.ID {
		s.state = next
		return ingest.Event{}, false
	}
	next.ID = ev.ID
	s.state = next
	ev.Commit = func() { s.commit(next) }
	return ev, true
}

// advance is the state machine: the heap in effect is what the registry
// said at boot. A boot the state does not know takes the registry's value
// unless the key was written since the boot (then the size in effect is
// unknown); within a boot a new value is configured, not in effect.
func advance(prev heapState, r Reading, ss SharedSection) heapState {
	boot := r.Boot.Unix()
	same := prev.Boot != 0 && absDur(time.Duration(boot-prev.Boot)*time.Second) <= bootTolerance
	next := prev
	if !same {
		next = heapState{Boot: boot}
		if r.Modified.IsZero() || !r.Modified.After(r.Boot) {
			next.Effective = ss.NonInteractiveKB
		}
	}
	next.Configured = ss.String()
	return next
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// fact builds the event of a state.
func (s *Source) fact(st heapState, ss SharedSection, r Reading) ingest.Event {
	f := map[string]any{
		"configured_kb":  ss.NonInteractiveKB,
		"interactive_kb": ss.InteractiveKB,
		"shared_kb":      ss.SharedKB,
		"shared_section": ss.String(),
		"pending_reboot": st.Effective != ss.NonInteractiveKB,
		"boot_time":      time.Unix(st.Boot, 0).UTC().Format(time.RFC3339),
		"kernel":         "windows",
	}
	var msg string
	switch {
	case st.Effective == 0:
		msg = fmt.Sprintf("non-interactive desktop heap in effect unknown: SharedSection=%s was written after the last boot; %d KB take effect at the next reboot", ss, ss.NonInteractiveKB)
	case st.Effective != ss.NonInteractiveKB:
		f["heap_kb"] = st.Effective
		msg = fmt.Sprintf("non-interactive desktop heap %d KB; SharedSection=%s configured, %d KB take effect at the next reboot", st.Effective, ss, ss.NonInteractiveKB)
	default:
		f["heap_kb"] = st.Effective
		msg = fmt.Sprintf("non-interactive desktop heap %d KB (SharedSection=%s)", st.Effective, ss)
	}
	level := ingest.LevelInfo
	if st.Effective != ss.NonInteractiveKB {
		level = ingest.LevelWarn
	}
	id := "winfact:" + s.cfg.Node + ":desktop_heap:" + strconv.FormatInt(st.Boot, 10) + ":" + strconv.Itoa(st.Effective) + ":" + ss.String()
	return ingest.Event{
		ID: id, Time: s.cfg.Now().UTC(), Node: s.cfg.Node,
		Source: EventSource, Kind: KindDesktopHeap, Level: level, Msg: msg, Fields: f,
	}
}

// commit stores a published state (the event's Commit).
func (s *Source) commit(st heapState) {
	if s.cfg.Checkpoints == nil {
		return
	}
	if err := s.cfg.Checkpoints.Set(checkpointKey, st); err != nil {
		s.log.Error("winfact: storing checkpoint", "error", err)
		return
	}
	if err := s.cfg.Checkpoints.Flush(); err != nil {
		s.log.Error("winfact: writing checkpoints", "error", err)
	}
}
