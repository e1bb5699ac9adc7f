// Package nomadalloc knows which job an allocation belongs to, so that
// events that name only an allocation (the Nomad agent's log lines never
// name the job) carry its namespace, job and task group like the event
// stream's events do.
//
// A Cache learns from events that carry both (the event stream's
// allocation and task events) and, for an allocation it has not seen,
// asks the agent's API (GET /v1/allocation/<id>) once; answers are kept in
// a bounded cache, failures are not asked again for a while.
package nomadalloc

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
	"github.com/klaxon-dev/klaxon/internal/defaults"
)

// Info is what events are given: the allocation's namespace, job and task
// group.
type Info struct {
	Namespace, Job, TaskGroup string
	// JobMeta is the job's meta when the lookup returned the job (nil:
	// not known); it is learnt like the stream's Job events (see Observe).
	JobMeta map[string]string
}

// Lookup asks for an allocation's Info (e.g. the agent's API).
type Lookup func(ctx context.Context, allocID string) (Info, error)

// Defaults of Config.
const (
	DefaultMaxAllocs   = 65536
	DefaultTimeout     = 2 * time.Second
	DefaultRetryFailed = 30 * time.Second
)

// Config configures a Cache.
type Config struct {
	// Lookup, when set, is asked for allocations no event named the job of.
	Lookup Lookup
	// MaxAllocs bounds the cache (oldest learnt forgotten first).
	MaxAllocs int
	// Timeout bounds one Lookup.
	Timeout time.Duration
	// RetryFailed is how long an allocation whose Lookup failed is not
	// asked for again.
	RetryFailed time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives one line per failed lookup episode.
	Log *slog.Logger

	// JobLookup, when set, is asked for the meta of jobs no Job event or
	// allocation lookup named (see Observe).
	JobLookup JobLookup
	// MaxJobs bounds the jobs whose meta is kept (oldest learnt forgotten
	// first).
	MaxJobs int
	// JobMetaTTL is how long meta learnt from the API is used before it is
	// asked for again (meta from the event stream's Job events is kept
	// until the next one).
	JobMetaTTL time.Duration
}

// Stats counts what a Cache did.
type Stats struct {
	// Enriched events, Lookups asked, LookupFailures among them.
	Enriched, Lookups, LookupFailures uint64
	// JobLookups asked for jobs' meta, JobLookupFailures among them.
	JobLookups, JobLookupFailures uint64
}

// Cache maps allocation IDs to their Info. Safe for concurrent use.
type Cache struct {
	cfg    Config
	mu     sync.Mutex
	allocs map[string]Info
	order  ring                 // of allocs, cfg.MaxAllocs at most
	failed map[string]time.Time // allocation → when it may be asked again
	warned bool
	stats  Stats
	jobs   jobCache
	// jobWarned is set after a failed job lookup was logged.
	jobWarned bool
}

// New returns an empty cache.
func New(cfg Config) *Cache {
	cfg.MaxAllocs = defaults.Positive(cfg.MaxAllocs, DefaultMaxAllocs)
	cfg.Timeout = defaults.Positive(cfg.Timeout, DefaultTimeout)
	cfg.RetryFailed = defaults.Positive(cfg.RetryFailed, DefaultRetryFailed)
	cfg.MaxJobs = defaults.Positive(cfg.MaxJobs, DefaultMaxJobs)
	cfg.JobMetaTTL = defaults.Positive(cfg.JobMetaTTL, DefaultJobMetaTTL)
	cfg.Log = cmp.Or(cfg.Log, slog.Default())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cache{cfg: cfg, allocs: map[string]Info{}, failed: map[string]time.Time{}, jobs: newJobCache()}
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// observeAlloc learns the job of ev's allocation when ev names it, and
// gives ev the namespace, job and task group of its allocation when it
// names only the allocation (fields alloc_id without job).
func (c *Cache) observeAlloc(ctx context.Context, ev *ingest.Event) {
	alloc := ev.Field("alloc_id")
	if alloc == "" {
		return
	}
	if job := ev.Field("job"); job != "" {
		c.learn(alloc, Info{Namespace: ev.Field("namespace"), Job: job, TaskGroup: ev.Field("task_group")})
		return
	}
	info, ok := c.get(ctx, alloc)
	if !ok {
		return
	}
	if ev.Fields == nil {
		ev.Fields = map[string]any{}
	}
	set := func(k, v string) {
		if _, has := ev.Fields[k]; !has && v != "" {
			ev.Fields[k] = v
		}
	}
	set("namespace", info.Namespace)
	set("job", info.Job)
	set("task_group", info.TaskGroup)
	c.mu.Lock()
	c.stats.Enriched++
	c.mu.Unlock()
}

// learn stores info for alloc, forgetting the oldest when full.
func (c *Cache) learn(alloc string, info Info) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.allocs[alloc]; ok {
		if info.Namespace == "" {
			info.Namespace = old.Namespace
		}
		if info.TaskGroup == "" {
			info.TaskGroup = old.TaskGroup
		}
		c.allocs[alloc] = info
		return
	}
	addBounded(&c.order, c.allocs, alloc, c.cfg.MaxAllocs)
	c.allocs[alloc] = info
	delete(c.failed, alloc)
}

// get returns alloc's Info from the cache or the Lookup.
func (c *Cache) get(ctx context.Context, alloc string) (Info, bool) {
	c.mu.Lock()
	info, ok := c.allocs[alloc]
	retryAt, failed := c.failed[alloc]
	c.mu.Unlock()
	if ok {
		return info, true
	}
	if c.cfg.Lookup == nil || (failed && c.cfg.Now().Before(retryAt)) {
		return Info{}, false
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	info, err := c.cfg.Lookup(lctx, alloc)
	cancel()
	c.mu.Lock()
	c.stats.Lookups++
	if err != nil || info.Job == "" {
		c.stats.LookupFailures++
		c.failed[alloc] = c.cfg.Now().Add(c.cfg.RetryFailed)
		if len(c.failed) > c.cfg.MaxAllocs {
			c.failed = map[string]time.Time{alloc: c.failed[alloc]}
		}
		warn := !c.warned
		c.warned = true
		c.mu.Unlock()
		if warn {
			c.cfg.Log.Warn("nomadalloc: the job of an allocation is unknown (its log lines go without it); further failures are counted, not logged",
				"alloc_id", alloc, "err", err)
		}
		return Info{}, false
	}
	c.warned = false
	c.mu.Unlock()
	if info.JobMeta != nil {
		c.learnJob(info.Namespace, info.Job, info.JobMeta, false)
		info.JobMeta = nil // kept per job, not per allocation
	}
	c.learn(alloc, info)
	return info, true
}

// APILookup asks a Nomad agent for an allocation (GET /v1/allocation/<id>)
// with the given ACL token. Make client with nomadapi.NewClient, so that
// it follows the NOMAD_* variables (TLS included).
func APILookup(client *api.Client, token string) Lookup {
	return func(ctx context.Context, allocID string) (Info, error) {
		q := (&api.QueryOptions{AuthToken: token}).WithContext(ctx) // the server checks the allocation's own namespace
		a, _, err := client.Allocations().Info(allocID, q)
		if err != nil {
			return Info{}, nomadapi.Explain(client.Address(), err)
		}
		info := Info{Namespace: a.Namespace, Job: a.JobID, TaskGroup: a.TaskGroup}
		if a.Job != nil { // the allocation comes with its job: its meta too
			info.JobMeta = a.Job.Meta
			if info.JobMeta == nil {
				info.JobMeta = map[string]string{}
			}
		}
		return info, nil
	}
}
