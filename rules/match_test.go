package rules

import (
	"bytes"
	"log/slog"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

const propRules = `
lists:
  restart_types: [Restarting, "Not Restarting"]
  kill_words: [kill, KILL]
rules:
  - id: p.a
    match:
      reattach: source == "nomad.log" && lower(msg) contains "reattach" && lower(fields.error) contains "reattachment process not found"
      nores: msg contains "Insufficient system resources exist" || fields.error contains "Insufficient system resources exist"
      kelvin: lower(msg) contains "kill"
    correlate: {window: 15m}
  - id: p.b
    match:
      restart: source == "nomad.log" && kind == "client.alloc_runner.task_runner" && msg == "Task event" && fields.type in lists.restart_types
      startsw: kind startsWith "client.driver_mgr" && msg startsWith "failed"
      ends: msg endsWith "event" && not (fields.task == "web")
    correlate: {window: 15m}
  - id: p.c
    match:
      srv: source == "winevt" && kind in ["Srv/2019", "Srv/2020"]
      either: source == "winevt" || source == "nomad.event"
      mixed: (source == "nomad.log" && msg contains "Task") || (source == "winevt" && kind startsWith "Srv")
      re: msg matches "Insufficient .* exist"
      rei: lower(msg) matches "task (event|killed)"
    correlate: {window: 15m}
  - id: p.d
    match:
      nofilter: fields.task != "web"
      numeric: fields.code == "5" || fields.code == 5
      upper: lower(msg) == "Task event"
      foldeq: lower(kind) == "client.gc" || lower(fields.task) startsWith "we"
      lvl: level in ["error", "warn"] && lower(fields.error) endsWith "found"
      dyn: fields["type"] == "Restarting"
      list: lower(msg) contains "kill" && fields.error in lists.kill_words
    correlate: {window: 15m}
  - id: p.e
    match:
      other: source == "other" && msg contains "x"
      time: source == "other" && time.Year() == 2026
    correlate: {window: 15m}
`

var (
	vSources = []string{"nomad.log", "nomad.event", "winevt", "other", ""}
	vKinds   = []string{"client.gc", "client.alloc_runner.task_runner", "client.driver_mgr", "client.driver_mgr.raw_exec", "Srv/2020", "Srv/2019", "watch.checks", "CLIENT.GC", ""}
	vWords   = []string{"Task", "event", "failed", "to", "reattach", "Reattach", "REATTACH", "Insufficient", "system", "resources", "exist", "\u212aill", "kill", "\u0130nvalid", "killed", "x", "é", "Task event", "task event"}
	vErrors  = []string{"Reattachment process not found", "reattachment process not found", "pipe: Insufficient system resources exist to complete", "EOF", "\u212aill", "KILL", "kill", "not found", "FOUND"}
	vTypes   = []string{"Restarting", "Not Restarting", "Started", "Terminated"}
	vTasks   = []string{"web", "WEB", "worker", "We"}
)

func pick(r *rand.Rand, vs []string) string { return vs[r.Intn(len(vs))] }

func randomEvent(r *rand.Rand) *ingest.Event {
	ev := &ingest.Event{
		ID:     "e",
		Time:   time.Date(2025+r.Intn(2), 1, 1, 0, 0, 0, 0, time.UTC),
		Node:   "n1",
		Source: pick(r, vSources),
		Kind:   pick(r, vKinds),
		Level:  pick(r, []string{"info", "warn", "error"}),
	}
	if r.Intn(4) == 0 {
		ev.Msg = pick(r, []string{"Task event", "task event", "Insufficient system resources exist to complete the requested service."})
	} else {
		n := r.Intn(5)
		var parts []string
		for i := 0; i < n; i++ {
			parts = append(parts, pick(r, vWords))
		}
		ev.Msg = strings.Join(parts, " ")
	}
	if r.Intn(5) > 0 {
		ev.Fields = map[string]any{}
		if r.Intn(2) == 0 {
			ev.Fields["error"] = pick(r, vErrors)
		} else if r.Intn(4) == 0 {
			ev.Fields["error"] = 42
		}
		if r.Intn(2) == 0 {
			ev.Fields["type"] = pick(r, vTypes)
		}
		if r.Intn(2) == 0 {
			ev.Fields["task"] = pick(r, vTasks)
		}
		switch r.Intn(4) {
		case 0:
			ev.Fields["code"] = "5"
		case 1:
			ev.Fields["code"] = 5
		}
	}
	return ev
}

// bruteForce evaluates every selector of every rule without the index.
func bruteForce(s *Set, ev *ingest.Event) map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range s.Rules {
		var mask uint64
		for i, sel := range r.Selectors {
			if ok, err := sel.Eval(ev); err == nil && ok {
				mask |= 1 << i
			}
		}
		if mask != 0 {
			out[r.ID] = mask
		}
	}
	return out
}

func matchAll(s *Set, ev *ingest.Event) map[string]uint64 {
	out := map[string]uint64{}
	var last string
	s.Match(ev, func(r *Rule, mask uint64) {
		if _, dup := out[r.ID]; dup || mask == 0 {
			panic("rule reported twice or with an empty mask: " + r.ID)
		}
		if r.ID < last {
			panic("rules out of order")
		}
		last = r.ID
		out[r.ID] = mask
	})
	return out
}

func TestMatchEqualsBruteForce(t *testing.T) {
	s := mustParse(t, propRules)
	s.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	r := rand.New(rand.NewSource(1))
	hits := map[string]int{}
	for i := 0; i < 5000; i++ {
		ev := randomEvent(r)
		got, want := matchAll(s, ev), bruteForce(s, ev)
		if len(got) != len(want) {
			t.Fatalf("event %+v: Match %v, brute force %v", ev, got, want)
		}
		for id, m := range want {
			if got[id] != m {
				t.Fatalf("event %+v: rule %s: Match %b, brute force %b", ev, id, got[id], m)
			}
			for b := 0; b < 64; b++ {
				if m&(1<<b) != 0 {
					hits[id+"/"+s.Rule(id).Selectors[b].Name]++
				}
			}
		}
	}
	// Every selector must have matched sometimes, or the test proves little.
	for _, rule := range s.Rules {
		for _, sel := range rule.Selectors {
			if hits[rule.ID+"/"+sel.Name] == 0 && sel.Name != "upper" {
				t.Errorf("selector %s/%s never matched", rule.ID, sel.Name)
			}
		}
	}
}

func TestNeeds(t *testing.T) {
	s := mustParse(t, propRules)
	want := map[string]string{
		"p.a/reattach": `source == "nomad.log"; lower(msg) contains "reattach"; lower(fields.error) contains "reattachment process not found"`,
		"p.a/nores":    `msg contains "Insufficient system resources exist" || fields.error contains "Insufficient system resources exist"`,
		"p.b/restart":  `source == "nomad.log"; kind == "client.alloc_runner.task_runner"; msg == "Task event"; fields.type == "Restarting" || fields.type == "Not Restarting"`,
		"p.c/srv":      `source == "winevt"; kind == "Srv/2019" || kind == "Srv/2020"`,
		"p.c/either":   `source == "winevt" || source == "nomad.event"`,
		"p.c/mixed":    `source == "nomad.log" || source == "winevt"; msg contains "Task" || kind startsWith "Srv"`,
		"p.c/re":       `msg contains "Insufficient "`,
		"p.d/nofilter": ``,
		"p.d/dyn":      `fields.type == "Restarting"`,
		"p.d/upper":    `lower(msg) == "Task event"`,
	}
	for key, w := range want {
		id, name, _ := strings.Cut(key, "/")
		r := s.Rule(id)
		got := strings.Join(r.Selectors[r.SelectorIndex(name)].Needs(), "; ")
		if got != w {
			t.Errorf("%s: needs\n  %s\nwant\n  %s", key, got, w)
		}
	}
}

func TestRuntimeErrorsCountedAndLoggedOnce(t *testing.T) {
	s := mustParse(t, `
rules:
  - id: e
    match:
      lowered: lower(fields.error) contains "x"
      compare: source == "nomad.log" && fields.n > 3
    correlate: {window: 1m}
`)
	var logs bytes.Buffer
	s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	// A missing field is no match and no error.
	ev := &ingest.Event{Source: "nomad.log", Fields: map[string]any{}}
	s.Match(ev, func(*Rule, uint64) { t.Error("matched") })
	if s.Errors() != 0 {
		t.Errorf("missing field counted as error: %d", s.Errors())
	}
	// A string compared with a number is an error: counted every time,
	// logged once.
	ev.Fields = map[string]any{"n": "5", "error": "x"}
	for i := 0; i < 3; i++ {
		var got uint64
		s.Match(ev, func(_ *Rule, m uint64) { got = m })
		if got != 1 {
			t.Errorf("mask %b", got)
		}
	}
	if s.Errors() != 3 || s.Rule("e").Selectors[1].Errors() != 3 {
		t.Errorf("errors %d", s.Errors())
	}
	if n := strings.Count(logs.String(), "rule selector failed"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, logs.String())
	}
}

func TestFoldSpecialRunes(t *testing.T) {
	s := mustParse(t, `
rules:
  - id: f
    match:
      k: lower(msg) contains "kill"
      i: lower(msg) startsWith "invalid"
    correlate: {window: 1m}
`)
	for _, tc := range []struct {
		msg  string
		want uint64
	}{
		{"\u212aILL it", 1}, {"KILL", 1}, {"\u0130nvalid arg", 2}, {"INVALID", 2}, {"kil", 0}, {"ünvalid", 0},
	} {
		var got uint64
		s.Match(&ingest.Event{Msg: tc.msg}, func(_ *Rule, m uint64) { got = m })
		if got != tc.want {
			t.Errorf("%q: mask %b want %b", tc.msg, got, tc.want)
		}
		if !s.MayMatchRaw([]byte(tc.msg)) && tc.want != 0 {
			t.Errorf("%q: MayMatchRaw false", tc.msg)
		}
	}
}

func TestMatchConcurrent(t *testing.T) {
	s := mustParse(t, propRules)
	s.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	done := make(chan bool)
	for g := 0; g < 4; g++ {
		go func(seed int64) {
			r := rand.New(rand.NewSource(seed))
			for i := 0; i < 500; i++ {
				ev := randomEvent(r)
				got, want := matchAll(s, ev), bruteForce(s, ev)
				if len(got) != len(want) {
					t.Errorf("concurrent mismatch")
				}
			}
			done <- true
		}(int64(g))
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}
