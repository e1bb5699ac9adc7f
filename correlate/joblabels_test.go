package correlate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// TestInhibitedListsHeldBackGroups: while the inhibitor fires on n1 the
// group of t.inhibited there is listed as held back (with its inhibitor);
// once it fires it is not.
func TestInhibitedListsHeldBackGroups(t *testing.T) {
	c := New(loadFeatures(t), Options{Logger: quietLog()})
	runOps(c, []op{ev(0, "n1", "down"), settle(11 * m), ev(12*m, "n1", "y"), ev(12*m, "n2", "y")}, "")
	got := c.Inhibited()
	if len(got) != 1 {
		t.Fatalf("Inhibited() = %+v, want the group of n1", got)
	}
	in := got[0]
	if in.Rule != "t.inhibited" || in.Node != "n1" || fmt.Sprint(in.By) != "[t.absence]" || in.Count != 1 ||
		!in.Last.Equal(t0.Add(12*m)) || in.Title == "" {
		t.Errorf("inhibited %+v", in)
	}
	var fired []Incident
	for _, o := range []op{ev(13*m, "n1", "up"), settle(14 * m)} {
		switch {
		case o.settle:
			c.Settle(t0.Add(o.at), func(x Incident) { fired = append(fired, x) })
		default:
			e := ingest.Event{ID: "up", Time: t0.Add(o.at), Node: o.node, Source: "nomad.log", Kind: "test", Msg: o.msg}
			c.Process(&e, func(x Incident) { fired = append(fired, x) })
		}
	}
	if got := c.Inhibited(); len(got) != 0 {
		t.Errorf("still inhibited after the inhibitor resolved: %+v", got)
	}
	ok := false
	for _, x := range fired {
		ok = ok || (x.Rule == "t.inhibited" && x.ID == in.ID && x.Status == StatusFiring)
	}
	if !ok {
		t.Errorf("no firing of t.inhibited with the id it was listed under (%s): %+v", in.ID, fired)
	}
}

const jobRules = `
rules:
  - id: t.task
    runbook: r
    labels: {component: workload, team: rule-wins}
    match: {crash: msg == "crash"}
    correlate: {by: [node, fields.namespace, fields.job, fields.task], window: 10m}
  - id: t.node
    runbook: r
    match: {crash: msg == "crash"}
    correlate: {by: [node], window: 10m, when: 'count("crash") >= 2'}
`

func jobEvent(i int, node, ns, job string, meta map[string]any) ingest.Event {
	f := map[string]any{"task": "app"}
	if job != "" {
		f["job"], f["namespace"] = job, ns
	}
	if meta != nil {
		f[JobMetaField] = meta
	}
	return ingest.Event{ID: fmt.Sprint("e", i), Time: t0.Add(time.Duration(i) * time.Second), Node: node, Source: "nomad.log", Kind: "test", Msg: "crash", Fields: f}
}

// TestJobLabels: an incident about one job carries its namespace, id and
// meta as labels (rule labels win); a node-level incident over several
// jobs carries none; labels stay as they were at firing.
func TestJobLabels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(path, []byte(jobRules), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	c := New(set, Options{Logger: quietLog()})
	last := map[string]Incident{}
	emit := func(in Incident) { last[in.Rule+"/"+in.Group["fields.job"]+"/"+in.Node] = in }
	pay := map[string]any{"team": "payments", "owner": "alice", "pager": "pd-payments", "empty": ""}
	evs := []ingest.Event{
		jobEvent(1, "n1", "prod", "pay", pay),
		jobEvent(2, "n2", "prod", "pay", nil), // a log line whose job's meta is unknown
		jobEvent(3, "n2", "prod", "pay", map[string]any{"team": "later"}),
		jobEvent(4, "n3", "prod", "pay", pay),
		jobEvent(5, "n3", "default", "search", map[string]any{"team": "search"}),
		jobEvent(6, "n4", "prod", "pay", pay),
		jobEvent(7, "n4", "prod", "pay", nil),
	}
	for i := range evs {
		c.Process(&evs[i], emit)
	}
	c.Settle(t0.Add(time.Minute), emit)

	want := map[string]string{"component": "workload", "team": "rule-wins", "namespace": "prod", "job": "pay", "owner": "alice", "pager": "pd-payments"}
	if got := last["t.task/pay/n1"].Labels; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("t.task on n1: labels %v, want %v", got, want)
	}
	// Fired on the event without meta: namespace and job only, and the
	// later event's meta does not change them (routing stays put).
	if got := last["t.task/pay/n2"].Labels; got["job"] != "pay" || got["namespace"] != "prod" || got["owner"] != "" || got["team"] != "rule-wins" {
		t.Errorf("t.task on n2: labels %v", got)
	}
	// Node-level: n4 saw one job (the meta of its newest event that has
	// it), n3 two when it fired.
	if got := last["t.node//n4"].Labels; got["team"] != "payments" || got["job"] != "pay" || got["namespace"] != "prod" {
		t.Errorf("t.node on n4: labels %v", got)
	}
	if got := last["t.node//n3"].Labels; len(got) != 0 {
		t.Errorf("t.node on n3 (two jobs): labels %v, want none", got)
	}
	for _, in := range last {
		for k := range in.Labels {
			if strings.Contains(k, "empty") {
				t.Errorf("%s: empty meta value became label %s", in.Rule, k)
			}
		}
	}
}
