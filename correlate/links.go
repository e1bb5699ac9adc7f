package correlate

import (
	"net/url"
	"sort"
	"strings"
)

// NomadUILinks returns an Options.Links that links an incident to the
// pages of the Nomad UI at base (e.g. "https://nomad.example.com:4646"),
// where the incident knows what to show:
//
//   - "job": base/ui/jobs/<job>@<namespace>, when the group names the job
//     (fields.job) or every piece of evidence that names a job names the
//     same one (a node-level incident spanning several jobs links none);
//   - "allocation": base/ui/allocations/<id>, the group's fields.alloc_id,
//     else the newest evidence's allocation of that job (or the only
//     allocation the evidence names);
//   - "node": base/ui/clients/<node-id>, the Nomad node ID of the newest
//     evidence on the incident's node.
//
// It returns nil for an empty base.
func NomadUILinks(base string) func(*Incident) map[string]string {
	base = strings.TrimRight(base, "/")
	if base == "" {
		return nil
	}
	return func(in *Incident) map[string]string {
		links := map[string]string{}
		job, ns := in.Group["fields.job"], in.Group["fields.namespace"]
		if job == "" {
			for _, e := range in.Evidence {
				j := evidenceField(e, "job")
				if j == "" {
					continue
				}
				if job != "" && j != job {
					job = "" // several jobs: none of them is the incident's
					break
				}
				job = j
			}
		}
		alloc := in.Group["fields.alloc_id"]
		allocs := map[string]bool{}
		for i := len(in.Evidence) - 1; i >= 0; i-- {
			e := in.Evidence[i]
			if ns == "" && job != "" && evidenceField(e, "job") == job {
				ns = evidenceField(e, "namespace")
			}
			a := evidenceField(e, "alloc_id")
			if a == "" || !isUUID(a) {
				continue
			}
			allocs[a] = true
			if alloc == "" && job != "" && evidenceField(e, "job") == job {
				alloc = a
			}
		}
		if alloc == "" && len(allocs) == 1 {
			for a := range allocs {
				alloc = a
			}
		}
		if job != "" {
			if ns == "" {
				ns = "default"
			}
			links["job"] = base + "/ui/jobs/" + url.PathEscape(job) + "@" + url.PathEscape(ns)
		}
		if alloc != "" && isUUID(alloc) {
			links["allocation"] = base + "/ui/allocations/" + alloc
		}
		for i := len(in.Evidence) - 1; i >= 0; i-- {
			e := in.Evidence[i]
			if e.NodeID != "" && isUUID(e.NodeID) && (in.Node == "" || e.Node == in.Node) {
				links["node"] = base + "/ui/clients/" + e.NodeID
				break
			}
		}
		if len(links) == 0 {
			return nil
		}
		return links
	}
}

func evidenceField(e Evidence, k string) string {
	s, _ := e.Fields[k].(string)
	return s
}

// isUUID reports whether s has the shape of a Nomad ID (36 characters,
// hex and dashes): prefixes and other strings make no working link.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// LinkNames returns the names of in.Links in the order to show them: job,
// allocation, node, then the others sorted.
func (in Incident) LinkNames() []string {
	order := map[string]int{"job": 1, "allocation": 2, "node": 3}
	names := make([]string, 0, len(in.Links))
	for k := range in.Links {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		oi, oj := order[names[i]], order[names[j]]
		if oi == 0 {
			oi = 99
		}
		if oj == 0 {
			oj = 99
		}
		if oi != oj {
			return oi < oj
		}
		return names[i] < names[j]
	})
	return names
}
