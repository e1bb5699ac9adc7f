package winfact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/defaults"
)

// KindKernelPool is the Event.Kind of the kernel pool samples (seed 001):
// the paged and non-paged pool in use, and the processes that charge the
// most to them. Fields (numbers are bytes):
//
//	paged_bytes, nonpaged_bytes     the kernel's paged and non-paged pool in use
//	physical_bytes                  installed memory (the non-paged pool's limit scales with it)
//	commit_bytes, commit_limit_bytes
//	handles, processes              system-wide counts
//	top_process                     the process charging the most non-paged pool ("name (pid N)")
//	top_process_nonpaged_bytes, top_process_paged_bytes, top_process_handles
//	top_nonpaged, top_paged, top_handles   the first few processes by each, as text
const KindKernelPool = "windows.kernel_pool"

// DefaultPoolInterval is how often the pools are sampled.
const DefaultPoolInterval = time.Minute

// DefaultPoolTop is how many processes each top list names.
const DefaultPoolTop = 5

// ProcessPool is one process's pool charge (GetProcessMemoryInfo's
// QuotaPagedPoolUsage and QuotaNonPagedPoolUsage) and handle count.
type ProcessPool struct {
	PID           uint32
	Name          string
	PagedBytes    uint64
	NonpagedBytes uint64
	Handles       uint32
}

// PoolSample is one sample of the kernel pools (GetPerformanceInfo) and
// the processes.
type PoolSample struct {
	Time                          time.Time
	PagedBytes, NonpagedBytes     uint64
	PhysicalBytes                 uint64
	CommitBytes, CommitLimitBytes uint64
	Handles, Processes            uint32
	Procs                         []ProcessPool
}

// PoolSampler takes pool samples: NewPoolSampler on Windows; recorded
// series in tests.
type PoolSampler interface {
	SamplePool() (PoolSample, error)
}

// PoolConfig configures a PoolSource.
type PoolConfig struct {
	// Node is the node name the samples are published for.
	Node string
	// Interval is how often the pools are sampled (default 1m).
	Interval time.Duration
	// Top is how many processes each list names (default 5).
	Top int
	// Sampler takes the samples; nil: the system's (Windows only).
	Sampler PoolSampler
	// Now stamps samples whose sampler left the time zero (default time.Now).
	Now func() time.Time
}

// PoolSource publishes a kernel pool sample every Interval, for rules
// that watch the trend (windows.pool_leak: rate and predict). It
// implements ingest.Source. Samples are not checkpointed: a restart goes
// on with new ones.
type PoolSource struct {
	cfg      PoolConfig
	log      *slog.Logger
	samples  atomic.Int64
	failures failures
}

// NewPool returns a PoolSource.
func NewPool(cfg PoolConfig, log *slog.Logger) (*PoolSource, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Node == "" {
		return nil, errors.New("winfact: no node name")
	}
	cfg.Interval = defaults.Positive(cfg.Interval, DefaultPoolInterval)
	cfg.Top = defaults.Positive(cfg.Top, DefaultPoolTop)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sampler == nil {
		s, err := NewPoolSampler()
		if err != nil {
			return nil, err
		}
		cfg.Sampler = s
	}
	return &PoolSource{cfg: cfg, log: log}, nil
}

// Name identifies the source.
func (s *PoolSource) Name() string { return "winpool:" + s.cfg.Node }

// Stats returns the samples published and the failed attempts.
func (s *PoolSource) Stats() (samples, failures int64) { return s.samples.Load(), s.failures.n.Load() }

// Run samples now and every Interval until ctx is done.
func (s *PoolSource) Run(ctx context.Context, out chan<- ingest.Event) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if ev, ok := s.sample(); ok {
			select {
			case out <- ev:
				s.samples.Add(1)
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *PoolSource) sample() (ingest.Event, bool) {
	ps, err := s.cfg.Sampler.SamplePool()
	if err != nil {
		s.failures.fail(s.log, "winfact: cannot sample the kernel pools; will retry", "error", err, "every", s.cfg.Interval)
		return ingest.Event{}, false
	}
	s.failures.ok(s.log, "winfact: kernel pools sampled again")
	if ps.Time.IsZero() {
		ps.Time = s.cfg.Now()
	}
	return PoolEvent(s.cfg.Node, ps, s.cfg.Top), true
}

// PoolEvent is the event of a sample: source node.fact, kind
// windows.kernel_pool (see KindKernelPool for its fields).
func PoolEvent(node string, s PoolSample, top int) ingest.Event {
	f := map[string]any{
		"paged_bytes":        int64(s.PagedBytes),
		"nonpaged_bytes":     int64(s.NonpagedBytes),
		"physical_bytes":     int64(s.PhysicalBytes),
		"commit_bytes":       int64(s.CommitBytes),
		"commit_limit_bytes": int64(s.CommitLimitBytes),
		"handles":            int64(s.Handles),
		"processes":          int64(s.Processes),
		"kernel":             "windows",
	}
	procs := s.Procs
	by := func(less func(a, b ProcessPool) bool) []ProcessPool {
		c := append([]ProcessPool(nil), procs...)
		sort.SliceStable(c, func(i, j int) bool { return less(c[i], c[j]) })
		if len(c) > top {
			c = c[:top]
		}
		return c
	}
	nonpaged := by(func(a, b ProcessPool) bool { return a.NonpagedBytes > b.NonpagedBytes })
	paged := by(func(a, b ProcessPool) bool { return a.PagedBytes > b.PagedBytes })
	handles := by(func(a, b ProcessPool) bool { return a.Handles > b.Handles })
	if len(nonpaged) > 0 {
		p := nonpaged[0]
		f["top_process"] = procName(p)
		f["top_process_nonpaged_bytes"] = int64(p.NonpagedBytes)
		f["top_process_paged_bytes"] = int64(p.PagedBytes)
		f["top_process_handles"] = int64(p.Handles)
		f["top_nonpaged"] = list(nonpaged, func(p ProcessPool) string { return MB(p.NonpagedBytes) })
		f["top_paged"] = list(paged, func(p ProcessPool) string { return MB(p.PagedBytes) })
		f["top_handles"] = list(handles, func(p ProcessPool) string { return strconv.FormatUint(uint64(p.Handles), 10) + " handles" })
	}
	msg := fmt.Sprintf("kernel pools: non-paged %s, paged %s", MB(s.NonpagedBytes), MB(s.PagedBytes))
	if len(nonpaged) > 0 {
		msg += "; most non-paged: " + procName(nonpaged[0]) + " " + MB(nonpaged[0].NonpagedBytes)
	}
	return ingest.Event{
		ID: "winpool:" + node + ":" + strconv.FormatInt(s.Time.UnixNano(), 36), Time: s.Time.UTC(), Node: node,
		Source: ingest.SourceNodeFact, Kind: KindKernelPool, Level: ingest.LevelInfo, Msg: msg, Fields: f,
	}
}

func procName(p ProcessPool) string {
	n := p.Name
	if n == "" {
		n = "?"
	}
	return n + " (pid " + strconv.FormatUint(uint64(p.PID), 10) + ")"
}

func list(ps []ProcessPool, value func(ProcessPool) string) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = procName(p) + " " + value(p)
	}
	return strings.Join(parts, ", ")
}

// MB formats bytes in MB with one decimal.
func MB(b uint64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MB" }

// ReadPoolCSV reads a recorded series of samples (what tests and replays
// of a node's pools use): lines "offset_s,paged_bytes,nonpaged_bytes,
// physical_bytes,handles[,process,pid,paged,nonpaged,handles]...", one
// process per group of five after the first five values; # starts a
// comment. Times are start plus the offsets.
func ReadPoolCSV(data string, start time.Time) ([]PoolSample, error) {
	var out []PoolSample
	for n, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 5 || (len(f)-5)%5 != 0 {
			return nil, fmt.Errorf("winfact: pool series line %d: %d values", n+1, len(f))
		}
		num := func(i int) (uint64, error) {
			v, err := strconv.ParseUint(strings.TrimSpace(f[i]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("winfact: pool series line %d, value %d: %w", n+1, i+1, err)
			}
			return v, nil
		}
		var vals [5]uint64
		for i := range vals {
			v, err := num(i)
			if err != nil {
				return nil, err
			}
			vals[i] = v
		}
		s := PoolSample{Time: start.Add(time.Duration(vals[0]) * time.Second), PagedBytes: vals[1], NonpagedBytes: vals[2],
			PhysicalBytes: vals[3], Handles: uint32(vals[4])}
		for i := 5; i+4 < len(f); i += 5 {
			var pv [4]uint64
			for j := range pv {
				v, err := num(i + 1 + j)
				if err != nil {
					return nil, err
				}
				pv[j] = v
			}
			s.Procs = append(s.Procs, ProcessPool{Name: strings.TrimSpace(f[i]), PID: uint32(pv[0]), PagedBytes: pv[1], NonpagedBytes: pv[2], Handles: uint32(pv[3])})
		}
		out = append(out, s)
	}
	return out, nil
}
