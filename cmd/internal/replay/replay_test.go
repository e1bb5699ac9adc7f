package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
)

// needShared is the path of rel in the team's shared test data, or a skip.
func needShared(t *testing.T, rel string) string { return testkit.NeedShared(t, rel) }

func bundledRules(t testing.TB) *rules.Set { return testkit.BundledRules(t) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func replayJSON(t *testing.T, opts Options, files ...string) ([]correlate.Incident, Stats) {
	t.Helper()
	var buf bytes.Buffer
	opts.Out, opts.Format, opts.Log = &buf, "json", quiet()
	if opts.Rules == nil {
		opts.Rules = bundledRules(t)
	}
	st, err := Run(context.Background(), files, opts)
	if err != nil {
		t.Fatal(err)
	}
	var out []correlate.Incident
	sc := bufio.NewScanner(&buf)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var in correlate.Incident
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		out = append(out, in)
	}
	return out, st
}

// lastByID keeps the last change of each incident.
func lastByID(ins []correlate.Incident) map[string]correlate.Incident {
	m := map[string]correlate.Incident{}
	for _, in := range ins {
		m[in.ID] = in
	}
	return m
}

// allocJobs maps allocation ids to job ids from an event-stream capture.
func allocJobs(t *testing.T, path string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for id, a := range streamAllocs(t, path) {
		m[id] = a.job
	}
	return m
}

// streamAlloc is what a recorded event stream says of one allocation: its
// job and, per task, the restarts Nomad counted (TaskStates[task].Restarts,
// the highest seen).
type streamAlloc struct {
	job      string
	restarts map[string]int
}

func streamAllocs(t *testing.T, path string) map[string]streamAlloc {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]streamAlloc{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var frame struct {
			Events []struct {
				Payload struct {
					Allocation *struct {
						ID, JobID  string
						TaskStates map[string]struct{ Restarts int }
					}
				}
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &frame); err != nil {
			t.Fatal(err)
		}
		for _, e := range frame.Events {
			a := e.Payload.Allocation
			if a == nil {
				continue
			}
			sa, ok := m[a.ID]
			if !ok {
				sa = streamAlloc{job: a.JobID, restarts: map[string]int{}}
				m[a.ID] = sa
			}
			for task, ts := range a.TaskStates {
				sa.restarts[task] = max(sa.restarts[task], ts.Restarts)
			}
		}
	}
	return m
}

// nomadRestarts sums Nomad's own restart counts per job and task.
func nomadRestarts(t *testing.T, path string) map[[2]string]int {
	t.Helper()
	sum := map[[2]string]int{}
	for _, a := range streamAllocs(t, path) {
		for task, n := range a.restarts {
			sum[[2]string{a.job, task}] += n
		}
	}
	return sum
}

func TestReplayCrashloopCapture(t *testing.T) {
	dir := needShared(t, "nomad/captures/crashloop-gc-checkrestart")
	changes, st := replayJSON(t, Options{}, filepath.Join(dir, "nomad.log"))
	if st.Lines != 1319 || st.Unparsed != 0 {
		t.Errorf("stats %+v: want 1319 lines, none unparsed", st)
	}
	jobs := allocJobs(t, filepath.Join(dir, "events.ndjson"))
	got := lastByID(changes)
	var rulesFired []string
	for _, in := range got {
		rulesFired = append(rulesFired, in.Rule)
	}
	sort.Strings(rulesFired)
	want := []string{"nomad.client.gc_pressure", "nomad.task.crash_loop", "nomad.task.unhealthy_restarts"}
	if strings.Join(rulesFired, ",") != strings.Join(want, ",") {
		t.Fatalf("incidents %v, want exactly %v", rulesFired, want)
	}
	firing := map[string]int{}
	for _, in := range changes {
		if in.Status == correlate.StatusFiring {
			firing[in.Rule]++
		}
	}
	for _, r := range want {
		if firing[r] != 1 {
			t.Errorf("%s fired %d times, want once", r, firing[r])
		}
	}
	wantJob := map[string]string{"nomad.task.crash_loop": "crashloop", "nomad.task.unhealthy_restarts": "unhealthy"}
	for _, in := range got {
		if in.Node != "vm" {
			t.Errorf("%s: node %q, want vm", in.Rule, in.Node)
		}
		job, ok := wantJob[in.Rule]
		if !ok {
			continue
		}
		allocs := 0
		for _, ev := range in.Evidence {
			id, _ := ev.Fields["alloc_id"].(string)
			if id == "" {
				continue
			}
			allocs++
			if jobs[id] != job {
				t.Errorf("%s: evidence allocation %s belongs to job %q, want %q", in.Rule, id, jobs[id], job)
			}
		}
		if allocs == 0 {
			t.Errorf("%s: no allocation in the evidence", in.Rule)
		}
	}
	restarts := nomadRestarts(t, filepath.Join(dir, "events.ndjson"))
	for _, in := range got {
		if in.Rule != "nomad.task.crash_loop" {
			continue
		}
		if in.Count != 12 {
			t.Errorf("crash loop count %d, want 12 (4 allocations × 2 restarts + 1 exhausted policy)", in.Count)
		}
		// The log alone names no job; its restarts are still Nomad's.
		if want := restarts[[2]string{"crashloop", "app"}]; in.Counts["restarting"] != want || want == 0 {
			t.Errorf("crash loop: %d restarts counted from the log alone, Nomad counted %d", in.Counts["restarting"], want)
		}
	}
}

// TestReplayReportedLogs: every real reported log line parses (journald,
// syslog, JSON and pre-0.9 formats included), and only the report of GC
// pressure fires on its own.
func TestReplayReportedLogs(t *testing.T) {
	fires := map[string]string{
		"legacy-pr3490_client-gc-skipped-max-allocs_pre0.9.log": "nomad.client.gc_pressure",
	}
	dir := needShared(t, "nomad/reported")
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(files) < 19 {
		t.Fatalf("found %d reported logs, want 19", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			changes, st := replayJSON(t, Options{Node: "reported"}, f)
			if st.Unparsed != 0 || st.Oversize != 0 {
				t.Errorf("stats %+v: lines left unparsed", st)
			}
			if st.Events == 0 {
				t.Errorf("no events from %s", f)
			}
			want := fires[filepath.Base(f)]
			var got []string
			for _, in := range lastByID(changes) {
				got = append(got, in.Rule)
			}
			if strings.Join(got, ",") != want {
				t.Errorf("fired %v, want %q", got, want)
			}
		})
	}
}

// TestReplayWindowsReattachWithInsufficientResources: the real Windows
// reattach reports fire desktop-heap exhaustion combined with an
// "Insufficient system resources" line of the same node, not alone and not
// with one of another node.
func TestReplayWindowsReattachWithInsufficientResources(t *testing.T) {
	dir := needShared(t, "nomad/reported")
	tmp := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Same time range as the reports, same host where they carry one.
	plain := write("insufficient-plain.log", `2023-04-12T09:43:02.001+0200 [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service."`+"\n")
	journald := write("insufficient-journald.log", `Apr 24 14:53:10 innoabis-71 nomad[3322]: 2019-04-24T14:53:10.001+0200 [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=raw_exec error="failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service."`+"\n")
	otherHost := write("insufficient-other.log", `Apr 24 14:53:10 some-other-host nomad[3322]: 2019-04-24T14:53:10.001+0200 [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=raw_exec error="pipe: Insufficient system resources exist to complete the requested service."`+"\n")
	gh16922 := filepath.Join(dir, "gh16922_windows-rawexec-reattach-executor-not-found.log")
	gh5613 := filepath.Join(dir, "gh5613_rawexec-reattach-executor-not-found_journald.log")

	tests := []struct {
		name  string
		node  string
		files []string
		want  string // node of the expected incident, "" for none
	}{
		{"windows report + plain line, --node", "win-client-7", []string{gh16922, plain}, "win-client-7"},
		{"windows report alone", "win-client-7", []string{gh16922}, ""},
		{"journald report + journald line of the same host", "", []string{gh5613, journald}, "innoabis-71"},
		{"journald report + line of another host", "", []string{gh5613, otherHost}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changes, _ := replayJSON(t, Options{Node: tc.node}, tc.files...)
			got := lastByID(changes)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("unexpected incidents: %v", changes)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one incident, got %d: %v", len(got), changes)
			}
			for _, in := range got {
				if in.Rule != "nomad.windows.desktop_heap_exhaustion" || in.Node != tc.want {
					t.Fatalf("got %s on %s", in.Rule, in.Node)
				}
				if in.Runbook == "" || !strings.Contains(in.Runbook, "SharedSection") {
					t.Errorf("runbook missing: %q", in.Runbook)
				}
			}
		})
	}
}

// TestReplayBadInput: garbage, invalid UTF-8 and a 10 MB line are counted
// and skipped; what is readable still counts; unknown or missing files are
// errors naming the file.
func TestReplayBadInput(t *testing.T) {
	tmp := t.TempDir()
	gc := `2026-11-22T01:58:23.945Z [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (13) is over the limit (6)"`
	var b bytes.Buffer
	b.WriteString(gc + "\n")
	b.WriteString("\x00\x01\x02\xff\xfe garbage \xc3\x28\n")
	b.WriteString(strings.Repeat("x", 10<<20) + "\n")
	b.WriteString("2026-11-22T01:58:24.945Z [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason=\"bad \xff utf8\"\n")
	p := filepath.Join(tmp, "mixed.log")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	changes, st := replayJSON(t, Options{Node: "n1", MaxLineBytes: 1 << 20}, p)
	if st.Oversize != 1 {
		t.Errorf("oversize %d, want 1", st.Oversize)
	}
	if len(changes) == 0 || changes[0].Rule != "nomad.client.gc_pressure" || changes[0].Count != 2 {
		t.Fatalf("both readable gc lines must count: %+v", changes)
	}

	var out bytes.Buffer
	_, err := Run(context.Background(), []string{filepath.Join(tmp, "missing.log")}, Options{Rules: bundledRules(t), Out: &out, Log: quiet()})
	if err == nil || !strings.Contains(err.Error(), "missing.log") {
		t.Errorf("missing file: %v", err)
	}
	bin := filepath.Join(tmp, "blob.bin")
	_ = os.WriteFile(bin, bytes.Repeat([]byte{0, 1, 2, 3, 0xff}, 2000), 0o644)
	_, err = Run(context.Background(), []string{bin}, Options{Rules: bundledRules(t), Out: &out, Log: quiet()})
	if err == nil || !strings.Contains(err.Error(), "blob.bin") || !strings.Contains(err.Error(), "unknown input format") {
		t.Errorf("binary file: %v", err)
	}
}

// TestReplayEventsOutput: --events prints the normalised events.
func TestReplayEventsOutput(t *testing.T) {
	dir := needShared(t, "nomad/reported")
	var buf bytes.Buffer
	_, err := Run(context.Background(), []string{filepath.Join(dir, "gh14043_docker-logger-reattach-failed_json_journald.log")},
		Options{Events: true, Out: &buf, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 events, got %d", len(lines))
	}
	var ev ingest.Event
	if err := json.Unmarshal([]byte(lines[3]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Node != "client04-nomad-ovh" || ev.Kind != "client.driver_mgr.docker" || ev.Level != "warn" ||
		ev.Source != "nomad.log" || !strings.Contains(ev.Field("error"), "Reattachment process not found") {
		t.Errorf("event %+v", ev)
	}
}

func logTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestReplayCaptureFolders: logs and event streams of each capture folder
// replayed together give each expected incident exactly once, and nothing
// else; the log's and the stream's views of one crash loop are one incident.
func TestReplayCaptureFolders(t *testing.T) {
	base := needShared(t, "nomad/captures")
	tests := []struct {
		folder string
		want   map[string]string // rule → group summary
	}{
		{"crashloop-gc-checkrestart", map[string]string{
			"nomad.client.gc_pressure":      "node=vm",
			"nomad.task.crash_loop":         "fields.job=crashloop fields.namespace=default fields.task=app fields.task_group=web node=vm",
			"nomad.task.unhealthy_restarts": "fields.job=unhealthy fields.namespace=default fields.task=srv fields.task_group=svc node=vm",
			"nomad.job.reschedule_storm":    "fields.job=crashloop",
		}},
		{"reconnect", map[string]string{
			"nomad.node.heartbeat_missed":  "node=win-client-2",
			"nomad.client.reconnect_churn": "fields.prev_node|fields.replaces_node|node=win-client-2",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.folder, func(t *testing.T) {
			dir := filepath.Join(base, tc.folder)
			files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			streams, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
			// The folder as one argument: its logs and recordings, not
			// its job files.
			inputs, err := ExpandInputs([]string{dir})
			if err != nil {
				t.Fatal(err)
			}
			want := append(files, streams...)
			slices.Sort(want)
			if !slices.Equal(inputs, want) {
				t.Fatalf("inputs of %s: %q, want %q", dir, inputs, want)
			}
			changes, st := replayJSON(t, Options{}, inputs...)
			restarts := map[[2]string]int{}
			for _, s := range streams {
				maps.Copy(restarts, nomadRestarts(t, s))
			}
			if st.Unparsed != 0 {
				t.Errorf("stats %+v", st)
			}
			firing := map[string]int{}
			got := map[string]string{}
			for _, in := range changes {
				if in.Status == correlate.StatusFiring {
					firing[in.ID]++
				}
				got[in.Rule] = groupString(in.Group)
			}
			for id, n := range firing {
				if n != 1 {
					t.Errorf("incident %s fired %d times", id, n)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("incidents %v, want %v", got, tc.want)
			}
			for rule, g := range tc.want {
				if got[rule] != g {
					t.Errorf("%s: group %q, want %q", rule, got[rule], g)
				}
			}
			last := lastByID(changes)
			for _, in := range last {
				switch in.Rule {
				case "nomad.task.crash_loop", "nomad.task.unhealthy_restarts":
					sources := map[string]bool{}
					for _, ev := range in.Evidence {
						sources[ev.Source] = true
					}
					if !sources["nomad.log"] || !sources["nomad.event"] {
						t.Errorf("%s evidence from %v, want both the log and the stream", in.Rule, sources)
					}
					// The log and the stream report each restart: counted
					// once, they are the restarts Nomad itself counted.
					key := [2]string{in.Group["fields.job"], in.Group["fields.task"]}
					if want := restarts[key]; in.Counts["restarting"] != want || want == 0 {
						t.Errorf("%s %v: %d restarts counted, Nomad counted %d", in.Rule, key, in.Counts["restarting"], want)
					}
					if !strings.Contains(in.Title, "of job "+key[0]) || !strings.Contains(in.Summary, "Job "+key[0]) {
						t.Errorf("%s: title/summary do not name job %s: %q / %q", in.Rule, key[0], in.Title, in.Summary)
					}
				case "nomad.client.reconnect_churn":
					for _, s := range []string{"edge-affine", "edge-pinned", "43b1e50f", "281c9d57"} {
						if !strings.Contains(in.Summary, s) {
							t.Errorf("churn summary does not name %s: %s", s, in.Summary)
						}
					}
				case "nomad.job.reschedule_storm":
					if !strings.Contains(in.Summary, "4 allocations") || !strings.Contains(in.Summary, "deployment failed") {
						t.Errorf("storm summary: %s", in.Summary)
					}
				}
			}
		})
	}
}

func groupString(g map[string]string) string {
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + g[k]
	}
	return strings.Join(parts, " ")
}

func TestExpandInputs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	log := write("b.log", "2026-01-01T00:00:00.000Z [INFO]  client: started client: node_id=x\n")
	write("job.nomad.hcl", "job \"x\" {\n  type = \"service\"\n}\n")
	write("empty.log", "")
	other := filepath.Join(t.TempDir(), "a.log")
	got, err := ExpandInputs([]string{other, dir})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{other, log}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q (a named file kept as it is, the directory's input only)", got, want)
	}
	none := t.TempDir()
	if err := os.WriteFile(filepath.Join(none, "README.md"), []byte("# notes\n\nnothing to replay here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ExpandInputs([]string{none}); err == nil || !strings.Contains(err.Error(), none) {
		t.Fatalf("a directory without inputs: %v", err)
	}
}
