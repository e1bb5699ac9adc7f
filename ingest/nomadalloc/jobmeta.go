package nomadalloc

import (
	"context"
	"maps"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
)

// JobMetaField is the event field that carries the job's meta: a map of
// strings (owner, team, pager, …). The correlator turns it into incident
// labels (see correlate.JobMetaField, the same name).
const JobMetaField = "job_meta"

// Defaults of the job part of Config.
const (
	DefaultMaxJobs    = 16384
	DefaultJobMetaTTL = 5 * time.Minute
)

// JobLookup asks for a job's meta (e.g. GET /v1/job/<id>?namespace=<ns>);
// an empty map means the job has none.
type JobLookup func(ctx context.Context, namespace, job string) (map[string]string, error)

// jobEntry is the meta of one job and where it came from.
type jobEntry struct {
	meta map[string]string
	// at is when it was learnt; fromStream marks meta of a Job event,
	// which holds until the next one (API answers expire after JobMetaTTL).
	at         time.Time
	fromStream bool
}

// jobCache is the cache's part about jobs, guarded by Cache.mu.
type jobCache struct {
	byKey  map[string]jobEntry // namespace + "\x00" + job
	order  ring
	failed map[string]time.Time // job key → when it may be asked again
}

func newJobCache() jobCache {
	return jobCache{byKey: map[string]jobEntry{}, failed: map[string]time.Time{}}
}

func jobKey(ns, job string) string {
	if ns == "" {
		ns = "default"
	}
	return ns + "\x00" + job
}

// Observe gives ev what the cache knows beyond its source:
//
//   - an event naming an allocation but not its job (the agent's log lines)
//     gets the allocation's namespace, job and task group, learnt from the
//     events that name both (the stream's allocation and task events) or
//     asked of the agent (Config.Lookup);
//   - a Job event of the stream (kind Job.*) teaches the job's meta (its
//     fields.job_meta, none meaning the job has no meta);
//   - an event naming a job then gets fields.job_meta, the job's meta, from
//     what was learnt or, for a job not seen yet, from Config.JobLookup
//     (the allocation lookup's answer carries the job's meta too). A job
//     without meta adds nothing.
func (c *Cache) Observe(ctx context.Context, ev *ingest.Event) {
	c.observeAlloc(ctx, ev)
	c.observeJob(ctx, ev)
}

// observeJob learns from Job events and gives events naming a job its meta.
func (c *Cache) observeJob(ctx context.Context, ev *ingest.Event) {
	job := ev.Field("job")
	if job == "" {
		return
	}
	ns := ev.Field("namespace")
	if strings.HasPrefix(ev.Kind, "Job.") && ev.Source == ingest.SourceNomadEvent {
		c.learnJob(ns, job, metaOf(ev.Fields[JobMetaField]), true)
		return
	}
	if _, has := ev.Fields[JobMetaField]; has {
		return
	}
	meta := c.jobMeta(ctx, ns, job)
	if len(meta) == 0 {
		return
	}
	m := make(map[string]any, len(meta))
	for k, v := range meta {
		m[k] = v
	}
	ev.Fields[JobMetaField] = m
}

// metaOf reads a job_meta field (nil or absent: no meta).
func metaOf(v any) map[string]string {
	out := map[string]string{}
	switch m := v.(type) {
	case map[string]string:
		maps.Copy(out, m)
	case map[string]any:
		for k, x := range m {
			if s, ok := x.(string); ok {
				out[k] = s
			}
		}
	}
	return out
}

// learnJob stores the meta of a job, forgetting the oldest job when full.
func (c *Cache) learnJob(ns, job string, meta map[string]string, fromStream bool) {
	if job == "" {
		return
	}
	k := jobKey(ns, job)
	c.mu.Lock()
	defer c.mu.Unlock()
	jc := &c.jobs
	e := jobEntry{meta: maps.Clone(meta), at: c.cfg.Now(), fromStream: fromStream}
	if e.meta == nil {
		e.meta = map[string]string{}
	}
	delete(jc.failed, k)
	if old, ok := jc.byKey[k]; ok {
		if old.fromStream && !fromStream && e.at.Sub(old.at) < c.cfg.JobMetaTTL {
			return // the stream's word is newer than a lookup's
		}
		jc.byKey[k] = e
		return
	}
	addBounded(&jc.order, jc.byKey, k, c.cfg.MaxJobs)
	jc.byKey[k] = e
}

// jobMeta returns a job's meta from the cache or the JobLookup (nil when
// unknown).
func (c *Cache) jobMeta(ctx context.Context, ns, job string) map[string]string {
	if ns == "" {
		ns = "default"
	}
	k := jobKey(ns, job)
	now := c.cfg.Now()
	c.mu.Lock()
	e, ok := c.jobs.byKey[k]
	retryAt, failed := c.jobs.failed[k]
	c.mu.Unlock()
	fresh := ok && (e.fromStream || now.Sub(e.at) < c.cfg.JobMetaTTL)
	if fresh || c.cfg.JobLookup == nil || (failed && now.Before(retryAt)) {
		if ok {
			return e.meta
		}
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	meta, err := c.cfg.JobLookup(lctx, ns, job)
	cancel()
	c.mu.Lock()
	c.stats.JobLookups++
	if err != nil {
		c.stats.JobLookupFailures++
		c.jobs.failed[k] = now.Add(c.cfg.RetryFailed)
		if len(c.jobs.failed) > c.cfg.MaxJobs {
			c.jobs.failed = map[string]time.Time{k: c.jobs.failed[k]}
		}
		warn := !c.jobWarned
		c.jobWarned = true
		c.mu.Unlock()
		if warn {
			c.cfg.Log.Warn("nomadalloc: a job's meta is unknown (its incidents go without owner labels); further failures are counted, not logged",
				"namespace", ns, "job", job, "err", err)
		}
		if ok {
			return e.meta // the last known meta beats none
		}
		return nil
	}
	c.jobWarned = false
	c.mu.Unlock()
	c.learnJob(ns, job, meta, false)
	return meta
}

// APIJobLookup asks a Nomad agent for a job (GET /v1/job/<id> in its
// namespace) with the given ACL token and returns its meta.
func APIJobLookup(client *api.Client, token string) JobLookup {
	return func(ctx context.Context, namespace, job string) (map[string]string, error) {
		q := (&api.QueryOptions{AuthToken: token, Namespace: namespace}).WithContext(ctx)
		j, _, err := client.Jobs().Info(job, q)
		if err != nil {
			return nil, err
		}
		if j.Meta == nil {
			return map[string]string{}, nil
		}
		return j.Meta, nil
	}
}
