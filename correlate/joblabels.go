package correlate

import (
	"maps"
	"slices"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Job labels: an incident about one Nomad job carries the job's namespace,
// its id and its meta (owner, team, pager, …) as labels, so that sinks
// route by who owns the job (match: {labels.team: payments}).
//
// The meta travels with the events: the event stream's Job events and the
// events ingest/nomadalloc enriches (allocation and task events, log lines
// naming an allocation) carry fields.job_meta. The labels are decided once,
// when the incident fires, from the group and its evidence, and kept for
// the life of the incident: routing looks only at what is fixed, so the
// resolution goes wherever the firing went.
const (
	// JobMetaField is the event field holding the job's meta (a map of
	// strings).
	JobMetaField = "job_meta"
	// MaxJobMetaLabels bounds the meta keys copied into labels (the first
	// in sorted order); MaxJobLabelValue bounds a value's length in bytes.
	MaxJobMetaLabels = 32
	MaxJobLabelValue = 256
)

// IncidentJob returns the namespace and job an incident is about: the
// group's fields.job (and fields.namespace), else the one job every piece
// of evidence that names a job names ("" when none or several).
func IncidentJob(in *Incident) (namespace, job string) {
	return jobOf(in.Group, in.Evidence, nil)
}

// jobOf decides the job from the group values and the evidence (plus the
// event being processed, which may not be in the evidence yet).
func jobOf(group map[string]string, evidence []Evidence, last *ingest.Event) (namespace, job string) {
	job, namespace = group["fields.job"], group["fields.namespace"]
	if job != "" {
		return namespace, job
	}
	several := false
	see := func(j, ns string) {
		switch {
		case j == "" || several:
		case job == "":
			job, namespace = j, ns
		case j != job:
			several = true
		case namespace == "":
			namespace = ns
		}
	}
	for _, e := range evidence {
		see(jobField(e, "job"), jobField(e, "namespace"))
	}
	if last != nil {
		see(last.Field("job"), last.Field("namespace"))
	}
	if several {
		return "", ""
	}
	return namespace, job
}

// jobMeta returns the meta of job carried by the newest event naming it.
func jobMeta(job string, evidence []Evidence, last *ingest.Event) map[string]string {
	if last != nil && last.Field("job") == job {
		if m := metaMap(last.Fields[JobMetaField]); m != nil {
			return m
		}
	}
	for i := len(evidence) - 1; i >= 0; i-- {
		e := evidence[i]
		if jobField(e, "job") != job {
			continue
		}
		if m := metaMap(e.Fields[JobMetaField]); m != nil {
			return m
		}
	}
	return nil
}

// metaMap reads a job_meta field: a map of strings, in memory or decoded
// from JSON.
func metaMap(v any) map[string]string {
	switch m := v.(type) {
	case map[string]string:
		return m
	case map[string]any:
		out := make(map[string]string, len(m))
		for k, x := range m {
			if s, ok := x.(string); ok {
				out[k] = s
			}
		}
		return out
	}
	return nil
}

// addJobLabels gives a firing incident the labels of its job: namespace,
// job and the job's meta. A label the rule sets wins.
func addJobLabels(in *Incident, evidence []Evidence, last *ingest.Event) {
	ns, job := jobOf(in.Group, evidence, last)
	if job == "" {
		return
	}
	set := func(k, v string) {
		if _, ok := in.Labels[k]; ok || k == "" || v == "" {
			return
		}
		if len(v) > MaxJobLabelValue {
			v = v[:MaxJobLabelValue]
		}
		in.Labels[k] = v
	}
	set("namespace", ns)
	set("job", job)
	meta := jobMeta(job, evidence, last)
	for i, k := range slices.Sorted(maps.Keys(meta)) {
		if i == MaxJobMetaLabels {
			break
		}
		set(k, meta[k])
	}
}

func jobField(e Evidence, k string) string {
	s, _ := e.Fields[k].(string)
	return s
}
