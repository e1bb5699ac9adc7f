package nomadevents

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// The real recordings live outside the repository (their licence is
// unknown): ../shared relative to the repository.
const capturesDir = "../../../shared/testdata/nomad/captures"

var captures = []string{"reconnect", "crashloop-gc-checkrestart"}

func capturePath(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(capturesDir, name, "events.ndjson")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("capture %s not available: %v", p, err)
	}
	return p
}

func readLinesOf(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// rawCounts computes, independently of the decoder (encoding/json into
// generic maps), the distinct changes (Index, Type, Key) and the distinct
// task events (alloc, task, time, type) of a recording.
func rawCounts(t testing.TB, lines [][]byte) (changes, taskEvents int) {
	t.Helper()
	seen := map[string]bool{}
	tev := map[string]bool{}
	for _, l := range lines {
		var fr struct {
			Index  uint64
			Events []struct {
				Topic, Type, Key string
				Index            uint64
				Payload          map[string]json.RawMessage
			}
		}
		if err := json.Unmarshal(l, &fr); err != nil {
			t.Fatal(err)
		}
		for _, e := range fr.Events {
			seen[fmt.Sprint(e.Index, e.Type, e.Key)] = true
			raw, ok := e.Payload["Allocation"]
			if !ok {
				continue
			}
			var a struct {
				ID         string
				TaskStates map[string]struct {
					Events []struct {
						Time int64
						Type string
					}
				}
			}
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatal(err)
			}
			for task, ts := range a.TaskStates {
				for _, ev := range ts.Events {
					tev[fmt.Sprint(a.ID, task, ev.Time, ev.Type)] = true
				}
			}
		}
	}
	return len(seen), len(tev)
}

func decodeAll(t testing.TB, path string) ([]ingest.Event, Stats) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []ingest.Event
	st, err := ReadAll(context.Background(), f, DecoderConfig{Name: path}, func(e ingest.Event) { evs = append(evs, e) })
	if err != nil {
		t.Fatal(err)
	}
	return evs, st
}

func TestDecoderCaptures(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			path := capturePath(t, name)
			wantChanges, wantTasks := rawCounts(t, readLinesOf(t, path))
			evs, st := decodeAll(t, path)
			if st.Changes != int64(wantChanges) || st.TaskEvents != int64(wantTasks) {
				t.Errorf("stats %+v; want %d changes, %d task events", st, wantChanges, wantTasks)
			}
			if st.Malformed != 0 || st.Unknown != 0 || st.Heartbeats == 0 {
				t.Errorf("stats %+v", st)
			}
			ids := map[string]bool{}
			var changes, tasks int
			for _, e := range evs {
				if ids[e.ID] {
					t.Errorf("duplicate id %s", e.ID)
				}
				ids[e.ID] = true
				if e.Kind == "Allocation.TaskEvent" {
					tasks++
					if e.Msg != "Task event" {
						t.Errorf("task event msg %q", e.Msg)
					}
				} else {
					changes++
				}
				if e.Source != ingest.SourceNomadEvent || e.Time.IsZero() || e.Level == "" {
					t.Errorf("event %+v", e)
				}
				for k, v := range e.Fields {
					if !goodField(k, v) {
						t.Errorf("%s: field %s = %#v, want a non-empty string", e.ID, k, v)
					}
				}
				topic, _, _ := strings.Cut(e.Kind, ".")
				if !knownTopics[topic] {
					t.Errorf("kind %s", e.Kind)
				}
			}
			if changes != wantChanges || tasks != wantTasks {
				t.Errorf("emitted %d changes, %d task events; want %d, %d", changes, tasks, wantChanges, wantTasks)
			}
		})
	}
}

// The same change under several topics (as Nomad sends it when subscribed
// to all topics) is emitted once, with the kind of its payload.
func TestDuplicateTopics(t *testing.T) {
	ev := `{"Topic":%q,"Type":"AllocationUpdated","Key":"a1","Index":7,"Payload":{"Allocation":{"ID":"a1","JobID":"j","ClientStatus":"running","DesiredStatus":"run","NodeID":"n1","NodeName":"vm","ModifyTime":1795312919690365302}}}`
	frame := `{"Index":7,"Events":[` + fmt.Sprintf(ev, "Job") + `,` + fmt.Sprintf(ev, "Allocation") + `,` + fmt.Sprintf(ev, "Node") + `]}`
	d := NewDecoder(DecoderConfig{})
	var got []ingest.Event
	if err := d.Frame([]byte(frame), func(e ingest.Event) { got = append(got, e) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Kind != "Allocation.AllocationUpdated" || got[0].ID != "nomadev:7:AllocationUpdated:a1" {
		t.Fatalf("got %+v", got)
	}
	if st := d.Stats(); st.DuplicateTopics != 2 || st.Changes != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestReconnectCapture(t *testing.T) {
	evs, _ := decodeAll(t, capturePath(t, "reconnect"))
	var transitions []string
	var replacement, blocked bool
	for _, e := range evs {
		f := func(k string) string { return e.Field(k) }
		switch {
		case strings.HasPrefix(e.Kind, "Node.") && e.Node == "win-client-2":
			if f("prev_status") != f("status") {
				transitions = append(transitions, f("prev_status")+">"+f("status"))
				if f("prev_status") != "" && e.Msg != "node win-client-2 is "+f("status")+" (was "+f("prev_status")+")" {
					t.Errorf("msg %q", e.Msg)
				}
			}
			if f("status") == "disconnected" && e.Level != ingest.LevelWarn {
				t.Errorf("disconnected at level %s", e.Level)
			}
		case e.Kind == "Allocation.PlanResult" || e.Kind == "Allocation.AllocationUpdated":
			if e.Node == "vm" && f("desired_description") == "alloc not needed due to disconnected client reconnect" {
				replacement = true
				if f("prev_node") != "win-client-2" || f("job") != "edge-affine" {
					t.Errorf("replacement %v", e.Fields)
				}
			}
		case strings.HasPrefix(e.Kind, "Evaluation.") && f("job") == "edge-pinned" && f("status") == "blocked":
			if f("replaces_node") == "win-client-2" {
				blocked = true
			}
		}
	}
	// The first status has no previous one; then the reconnect sequence.
	want := []string{">initializing", "initializing>ready", "ready>disconnected", "disconnected>initializing", "initializing>ready"}
	if !slices.Equal(transitions, want) {
		t.Errorf("win-client-2 transitions %v, want %v", transitions, want)
	}
	if !replacement {
		t.Error("no replacement allocation on vm stopped as not needed with prev_node win-client-2")
	}
	if !blocked {
		t.Error("no blocked evaluation of edge-pinned with replaces_node win-client-2")
	}
}

func TestCrashloopCapture(t *testing.T) {
	evs, _ := decodeAll(t, capturePath(t, "crashloop-gc-checkrestart"))
	failed := map[string]bool{}
	notRestarting := map[string]bool{}
	deploymentFailed := false
	for _, e := range evs {
		if e.Field("job") != "crashloop" {
			continue
		}
		switch {
		case e.Kind == "Allocation.TaskEvent":
			if e.Field("type") == "Not Restarting" {
				notRestarting[e.Field("alloc_id")] = true
				if e.Level != ingest.LevelError || e.Field("failed") != "true" ||
					!strings.Contains(e.Field("msg"), "Exceeded allowed attempts 2") {
					t.Errorf("not restarting: %s %v", e.Level, e.Fields)
				}
			}
		case strings.HasPrefix(e.Kind, "Allocation."):
			if e.Field("client_status") == "failed" {
				failed[e.Field("alloc_id")] = true
				if e.Level != ingest.LevelWarn {
					t.Errorf("failed allocation at level %s", e.Level)
				}
			}
		case strings.HasPrefix(e.Kind, "Deployment."):
			if e.Field("status") == "failed" && e.Field("prev_status") == "running" {
				deploymentFailed = true
			}
		}
	}
	if len(failed) != 4 {
		t.Errorf("%d failed allocations of crashloop, want 4: %v", len(failed), failed)
	}
	for id := range failed {
		if !notRestarting[id] {
			t.Errorf("allocation %s failed without a Not Restarting task event", id)
		}
	}
	if !deploymentFailed {
		t.Error("the deployment of crashloop did not go failed")
	}
}

type logBuf struct{ bytes.Buffer }

func testLogger(b *logBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestBadFramesAreSkipped(t *testing.T) {
	node := func(idx int, status string) string {
		return fmt.Sprintf(`{"Index":%d,"Events":[{"Topic":"Node","Type":"NodeStreamEvent","Key":"n1","Index":%d,"Payload":{"Node":{"ID":"n1","Name":"vm","Status":%q,"StatusUpdatedAt":1795312889,"Attributes":{"a":"b","unique.hostname":"vm.example"}}}}]}`, idx, idx, status)
	}
	tests := []struct {
		name    string
		line    string
		problem string // "malformed", "unknown" or "" (fine)
		index   string // index named by the log line
	}{
		{"valid", node(10, "ready"), "", ""},
		{"heartbeat", `{}`, "", ""},
		{"garbage", `not json at all`, "malformed", ""},
		{"truncated", node(11, "down")[:90], "malformed", "index=11"},
		{"not a frame", `[1,2,3]`, "malformed", ""},
		{"bad number", strings.Replace(node(12, "down"), `"Index":12,"Events"`, `"Index":12,"X":-,"Events"`, 1), "malformed", "index=12"},
		{"unknown topic", `{"Index":13,"Events":[{"Topic":"Frobnicator","Type":"NodeStreamEvent","Key":"x","Index":13,"Payload":{"Node":{}}}]}`, "unknown", "index=13"},
		{"unknown type", `{"Index":14,"Events":[{"Topic":"Node","Type":"NodeExploded","Key":"x","Index":14,"Payload":{"Node":{}}}]}`, "unknown", "index=14"},
		{"bad payload field", `{"Index":15,"Events":[{"Topic":"Node","Type":"NodeStreamEvent","Key":"x","Index":15,"Payload":{"Node":{"Status":5}}}]}`, "malformed", "index=15"},
		{"valid after", node(16, "down"), "", ""},
	}
	var lb logBuf
	d := NewDecoder(DecoderConfig{Log: testLogger(&lb)})
	var got []ingest.Event
	for _, tc := range tests {
		lb.Reset()
		before := d.Stats()
		err := d.Frame([]byte(tc.line), func(e ingest.Event) { got = append(got, e) })
		after := d.Stats()
		switch tc.problem {
		case "":
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		case "malformed":
			if err == nil || after.Malformed != before.Malformed+1 {
				t.Errorf("%s: err %v, malformed %d→%d", tc.name, err, before.Malformed, after.Malformed)
			}
		case "unknown":
			if err == nil || after.Unknown != before.Unknown+1 {
				t.Errorf("%s: err %v, unknown %d→%d", tc.name, err, before.Unknown, after.Unknown)
			}
		}
		if tc.problem != "" && !strings.Contains(lb.String(), "skipped") {
			t.Errorf("%s: not logged: %q", tc.name, lb.String())
		}
		if tc.index != "" && !strings.Contains(lb.String(), tc.index) {
			t.Errorf("%s: log does not name %s: %q", tc.name, tc.index, lb.String())
		}
	}
	if len(got) != 2 || got[1].Field("status") != "down" || got[1].Field("prev_status") != "ready" || got[1].Level != ingest.LevelError {
		t.Errorf("events after bad frames: %+v", got)
	}
	if got[0].Field("unique_hostname") != "vm.example" {
		t.Errorf("hostname %v", got[0].Fields)
	}
	if d.Index() != 16 {
		t.Errorf("index %d", d.Index())
	}
	// The same problem again within a minute is not logged again.
	lb.Reset()
	_ = d.Frame([]byte(`{"Index":17,"Events":[{"Topic":"Frobnicator","Type":"X","Key":"y","Payload":{}}]}`), func(ingest.Event) {})
	if lb.Len() != 0 {
		t.Errorf("logged again: %q", lb.String())
	}
	d.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	_ = d.Frame([]byte(`{"Index":18,"Events":[{"Topic":"Frobnicator","Type":"X","Key":"y","Payload":{}}]}`), func(ingest.Event) {})
	if !strings.Contains(lb.String(), "index=18") {
		t.Errorf("not logged after a minute: %q", lb.String())
	}
}

func allocFrame(index int, modifyIndex int, events ...string) string {
	var evs []string
	for i, typ := range events {
		evs = append(evs, fmt.Sprintf(`{"Type":%q,"Time":%d,"DisplayMessage":"m%d","FailsTask":false,"ExitCode":0}`, typ, 1795312900000000000+int64(i)*1e9, i))
	}
	return fmt.Sprintf(`{"Index":%d,"Events":[{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Index":%d,"Payload":{"Allocation":{"ID":"a1","JobID":"j","TaskGroup":"g","ClientStatus":"running","DesiredStatus":"run","NodeID":"n1","NodeName":"vm","ModifyIndex":%d,"ModifyTime":%d,"Job":{"huge":[1,2,3]},"TaskStates":{"t":{"State":"running","Events":[%s]}}}}}]}`,
		index, index, modifyIndex, 1795312900000000000+int64(index)*1e9, strings.Join(evs, ","))
}

// Task events are emitted once each, whatever the order and repetition of
// the allocation's frames, and when Nomad's list of 10 has shifted.
func TestTaskEventDiff(t *testing.T) {
	types := []string{"Received", "Task Setup", "Started", "Terminated", "Restarting", "Started", "Terminated", "Restarting", "Started", "Terminated", "Restarting", "Started"}
	d := NewDecoder(DecoderConfig{})
	var tasks []ingest.Event
	emit := func(e ingest.Event) {
		if e.Kind == "Allocation.TaskEvent" {
			tasks = append(tasks, e)
		}
	}
	frames := []string{
		allocFrame(10, 10, types[:3]...),
		allocFrame(12, 12, types[:5]...),
		allocFrame(11, 11, types[:4]...), // older copy, out of order
		allocFrame(12, 12, types[:5]...), // repeated (another frame)
		allocFrame(13, 13, types[:10]...),
	}
	frames = append(frames, allocFrame(14, 14, types...), allocFrame(13, 13, types[:10]...))
	for _, f := range frames {
		if err := d.Frame([]byte(f), emit); err != nil {
			t.Fatal(err)
		}
	}
	if len(tasks) != len(types) {
		t.Fatalf("%d task events, want %d", len(tasks), len(types))
	}
	for i, e := range tasks {
		if e.Field("type") != types[i] || e.ID != fmt.Sprintf("nomadev:task:a1:t:%d", i) {
			t.Errorf("task event %d: %s %s", i, e.ID, e.Field("type"))
		}
	}
	if tasks[4].Level != ingest.LevelWarn || tasks[0].Level != ingest.LevelInfo || tasks[3].Field("exit_code") != "0" {
		t.Errorf("levels/fields: %v %v %v", tasks[4].Level, tasks[0].Level, tasks[3].Fields)
	}
}

// A list that lost its oldest entries (Nomad keeps 10) yields only the new
// ones.
func TestTaskEventShiftedList(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	n := 0
	emit := func(e ingest.Event) {
		if e.Kind == "Allocation.TaskEvent" {
			n++
		}
	}
	var all []string
	for i := 0; i < 14; i++ {
		all = append(all, "Restarting")
	}
	full := allocFrame(20, 20, all...)
	// First the first 10, then a list of 10 shifted by 4 (events 4..13).
	_ = d.Frame([]byte(allocFrame(19, 19, all[:10]...)), emit)
	var fr map[string]any
	if err := json.Unmarshal([]byte(full), &fr); err != nil {
		t.Fatal(err)
	}
	ev := fr["Events"].([]any)[0].(map[string]any)
	tsk := ev["Payload"].(map[string]any)["Allocation"].(map[string]any)["TaskStates"].(map[string]any)["t"].(map[string]any)
	tsk["Events"] = tsk["Events"].([]any)[4:]
	b, _ := json.Marshal(fr)
	_ = d.Frame(b, emit)
	if n != 14 {
		t.Errorf("%d task events, want 14", n)
	}
}

// State and Restore carry transitions and task-event diffs across decoders.
func TestStateRestore(t *testing.T) {
	path := capturePath(t, "reconnect")
	lines := readLinesOf(t, path)
	ids := func(evs []ingest.Event) []string {
		var out []string
		for _, e := range evs {
			b, _ := json.Marshal(e)
			out = append(out, string(b))
		}
		return out
	}
	var whole []ingest.Event
	d := NewDecoder(DecoderConfig{})
	for _, l := range lines {
		_ = d.Frame(l, func(e ingest.Event) { whole = append(whole, e) })
	}
	for cut := 1; cut < len(lines); cut += 7 {
		var parts []ingest.Event
		d1 := NewDecoder(DecoderConfig{})
		for _, l := range lines[:cut] {
			_ = d1.Frame(l, func(e ingest.Event) { parts = append(parts, e) })
		}
		st, err := d1.State()
		if err != nil {
			t.Fatal(err)
		}
		d2 := NewDecoder(DecoderConfig{Identity: ingest.NewIdentity()})
		if err := d2.Restore(st); err != nil {
			t.Fatal(err)
		}
		if d2.Index() != d1.Index() {
			t.Errorf("index %d != %d", d2.Index(), d1.Index())
		}
		for _, l := range lines[cut:] {
			_ = d2.Frame(l, func(e ingest.Event) { parts = append(parts, e) })
		}
		if a, b := ids(whole), ids(parts); !slices.Equal(a, b) {
			t.Errorf("cut %d: %d events vs %d; first difference at %d", cut, len(a), len(b), firstDiff(a, b))
		}
	}
	if err := NewDecoder(DecoderConfig{}).Restore([]byte(`{"v":99}`)); err == nil {
		t.Error("restored a future version")
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestDetect(t *testing.T) {
	tests := []struct {
		head string
		want bool
	}{
		{"{}\n{\"Index\":8,\"Events\":[{\"Topic\":\"Node\"", true},
		{"{\"Index\":8,\"Events\":[{\"Topic\":\"Node\"}]}\n{}\n", true},
		{"{}\n{}\n", true},
		{"{ \"Index\" : 8 , \"Events\" : [", true},
		{"2026-11-22T02:01:29.123Z [INFO]  agent: hello\n", false},
		{"{\"@level\":\"info\",\"@message\":\"x\"}\n", false},
		{"<Event xmlns=", false},
		{"", false},
		{"{}\n2026-11-22 log line\n", false},
	}
	for _, tc := range tests {
		if got := Detect([]byte(tc.head)); got != tc.want {
			t.Errorf("Detect(%q) = %v", tc.head, got)
		}
	}
	for _, name := range captures {
		p := filepath.Join(capturesDir, name, "events.ndjson")
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		head := make([]byte, 4096)
		n, _ := bufio.NewReader(f).Read(head)
		f.Close()
		if !Detect(head[:n]) {
			t.Errorf("capture %s not detected", name)
		}
	}
}

var discard = slog.New(slog.DiscardHandler)

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// A recording with bad lines: they are counted and skipped, the lines after
// them still decode, and the log names the index where it can be read.
func TestReadAllSkipsBadLines(t *testing.T) {
	f, err := os.Open("testdata/bad-frames.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lb logBuf
	var evs []ingest.Event
	id := ingest.NewIdentity()
	st, err := ReadAll(context.Background(), f, DecoderConfig{Identity: id, Log: testLogger(&lb), Name: "bad-frames.ndjson"},
		func(e ingest.Event) { evs = append(evs, e) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Malformed != 2 || st.Unknown != 2 || st.Changes != 2 || st.Heartbeats != 2 || st.Frames != 8 {
		t.Errorf("stats %+v", st)
	}
	if len(evs) != 2 || evs[1].Msg != "node edge-1 is down (was ready)" || evs[1].Level != ingest.LevelError {
		t.Errorf("events %+v", evs)
	}
	if id.Resolve("edge-1.corp.example") != "edge-1" {
		t.Error("unique.hostname not learnt")
	}
	for _, want := range []string{"index=6", "index=7", "index=8", "input=bad-frames.ndjson"} {
		if !strings.Contains(lb.String(), want) {
			t.Errorf("log does not contain %s:\n%s", want, lb.String())
		}
	}
}

// goodField: event fields are non-empty strings, but for job_meta, a
// non-empty map of non-empty strings.
func goodField(k string, v any) bool {
	if m, ok := v.(map[string]any); ok && k == JobMetaField {
		for mk, mv := range m {
			if s, ok := mv.(string); !ok || s == "" || mk == "" {
				return false
			}
		}
		return len(m) > 0
	}
	s, ok := v.(string)
	return ok && s != ""
}

// TestJobMeta: a Job event carries the job's meta (string values; nulls,
// empty and non-string values left out; bounded).
func TestJobMeta(t *testing.T) {
	big := strings.Repeat("x", MaxJobMetaValue+10)
	var many []string
	for i := range MaxJobMeta + 5 {
		many = append(many, fmt.Sprintf(`"k%03d":"v"`, i))
	}
	frame := func(idx int, meta string) string {
		return fmt.Sprintf(`{"Index":%d,"Events":[{"Topic":"Job","Type":"JobRegistered","Key":"pay","Namespace":"prod","Index":%d,"Payload":{"Job":{"ID":"pay","Namespace":"prod","Type":"service","Status":"running","Version":3,"SubmitTime":1795312919690365302,"Meta":%s,"TaskGroups":[{"Name":"g","Meta":{"team":"group-level"}}]}}}]}`, idx, idx, meta)
	}
	d := NewDecoder(DecoderConfig{Log: discard})
	var got []ingest.Event
	emit := func(e ingest.Event) { got = append(got, e) }
	for i, meta := range []string{
		`{"team":"payments","owner":"alice","pager":"pd-payments","empty":"","n":7,"nil":null,"esc\u0061ped":"a\"b","big":"` + big + `"}`,
		`null`,
		`{` + strings.Join(many, ",") + `}`,
	} {
		if err := d.Frame([]byte(frame(10+i, meta)), emit); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if len(got) != 3 {
		t.Fatalf("%d events", len(got))
	}
	m, _ := got[0].Fields[JobMetaField].(map[string]any)
	want := map[string]any{"team": "payments", "owner": "alice", "pager": "pd-payments", "escaped": `a"b`, "big": big[:MaxJobMetaValue]}
	if fmt.Sprint(m) != fmt.Sprint(want) || got[0].Field("job") != "pay" || got[0].Field("namespace") != "prod" {
		t.Errorf("fields %v", got[0].Fields)
	}
	if _, ok := got[1].Fields[JobMetaField]; ok {
		t.Errorf("null meta: fields %v", got[1].Fields)
	}
	if m, _ := got[2].Fields[JobMetaField].(map[string]any); len(m) != MaxJobMeta {
		t.Errorf("%d meta keys, want %d", len(m), MaxJobMeta)
	}
	for _, e := range got {
		for k, v := range e.Fields {
			if !goodField(k, v) {
				t.Errorf("field %s = %#v", k, v)
			}
		}
	}
}
