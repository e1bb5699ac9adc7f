package nomadlog

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// sharedDir is the team's reference data, outside the repository.
const sharedDir = "../../../shared/testdata/nomad"

var fallback = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func sharedFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(sharedDir, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference data absent: %v", err)
	}
	return p
}

func decodeBytes(t testing.TB, b []byte, cfg DecoderConfig) ([]ingest.Event, Stats) {
	t.Helper()
	if cfg.Fallback == nil {
		cfg.Fallback = func() time.Time { return fallback }
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "t"
	}
	var evs []ingest.Event
	st, err := ReadAll(context.Background(), bytes.NewReader(b), cfg, func(e ingest.Event) { evs = append(evs, e) })
	if err != nil {
		t.Fatal(err)
	}
	return evs, st
}

func decodeFile(t testing.TB, path string, cfg DecoderConfig) ([]ingest.Event, Stats) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeBytes(t, b, cfg)
}

func field(e ingest.Event, k string) string { return e.Field(k) }

func TestReportedFiles(t *testing.T) {
	dir := sharedFile(t, "reported")
	type check func(t *testing.T, evs []ingest.Event, st Stats)
	tests := []struct {
		file    string
		records int
		check   check
	}{
		{"gh10578_restarting-task-user-requested-empty-reason.log", 1, func(t *testing.T, evs []ingest.Event, _ Stats) {
			e := evs[0]
			if v, ok := e.Fields["reason"]; !ok || v != "" {
				t.Errorf("reason = %q, %v; want empty and present", v, ok)
			}
			if field(e, "delay") != "0s" || e.Msg != "restarting task" || e.Level != ingest.LevelInfo {
				t.Errorf("got %+v", e)
			}
		}},
		{"gh13198_docker-start-failed-restarting_syslog-truncated.log", 6, func(t *testing.T, evs []ingest.Event, _ Stats) {
			// syslog lines: no time/level; leading space = INFO/WARN.
			if evs[0].Level != ingest.LevelInfo || evs[0].Kind != "client.driver_mgr.docker" || evs[0].Node != "test-server" {
				t.Errorf("ev0 %+v", evs[0])
			}
			if evs[2].Level != ingest.LevelError || evs[2].Msg != "failed to start container" {
				t.Errorf("ev2 %+v", evs[2])
			}
			// the stdout copy carries its own time (-0600)
			if want := time.Date(2022, 5, 31, 12, 7, 31, 281e6, time.UTC); !evs[3].Time.Equal(want) {
				t.Errorf("ev3 time %v, want %v", evs[3].Time, want)
			}
			// the syslog stamp is read in the offset of the last hclog stamp
			if want := time.Date(2022, 5, 31, 12, 7, 31, 0, time.UTC); !evs[4].Time.Equal(want) {
				t.Errorf("ev4 time %v, want %v", evs[4].Time, want)
			}
			if v, ok := evs[4].Fields["error"]; !ok || v != "" {
				t.Errorf("truncated error= : %q %v", v, ok)
			}
			if field(evs[5], "reason") != "Res" || evs[5].Msg != "restarting task" {
				t.Errorf("truncated quoted value: %+v", evs[5])
			}
		}},
		{"gh14043_docker-logger-reattach-failed_json_journald.log", 5, func(t *testing.T, evs []ingest.Event, _ Stats) {
			e := evs[3]
			if e.Kind != "client.driver_mgr.docker" || e.Node != "client04-nomad-ovh" || e.Level != ingest.LevelWarn {
				t.Errorf("got %+v", e)
			}
			if !strings.Contains(field(e, "error"), "Reattachment process not found") {
				t.Errorf("error field %q", field(e, "error"))
			}
			if want := time.Date(2022, 8, 8, 6, 41, 13, 298328000, time.UTC); !e.Time.Equal(want) {
				t.Errorf("time %v", e.Time)
			}
			if field(evs[0], "plugin-type") != "driver" {
				t.Errorf("plugin-type %q", field(evs[0], "plugin-type"))
			}
		}},
		{"gh16453_docker-logger-plugin-launch_journald.log", 4, func(t *testing.T, evs []ingest.Event, _ Stats) {
			e := evs[3]
			if e.Kind != "client.driver_mgr.docker.docker_logger.nomad" || field(e, "@module") != "docker_logger" || field(e, "timestamp") != "2023-03-13T17:15:42.222Z" {
				t.Errorf("relayed plugin line %+v", e)
			}
			if evs[0].Node != "worker-01" || field(evs[0], "pid") != "15936" {
				t.Errorf("ev0 %+v", evs[0])
			}
		}},
		{"gh16922_windows-rawexec-reattach-executor-not-found.log", 2, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if got := field(evs[1], "driver_cfg"); got != `{Command:C:\Program Files\Foo\WorkflowHostCli.exe Args:[--Name A]}` {
				t.Errorf("backslashes: %q", got)
			}
			if want := time.Date(2023, 4, 12, 7, 41, 11, 180e6, time.UTC); !evs[0].Time.Equal(want) {
				t.Errorf("+0200 time %v", evs[0].Time)
			}
			if field(evs[0], "task_id") != "368c9cd0-a8c4-82b1-39c5-640fa6a6a04c/wf/d2176bd8" {
				t.Errorf("task_id %q", field(evs[0], "task_id"))
			}
		}},
		{"gh18541_client-registration-task-terminated_journald.log", 2, func(t *testing.T, evs []ingest.Event, st Stats) {
			if st.UILines != 1 {
				t.Errorf("UI lines %d", st.UILines)
			}
			if evs[0].Msg != "node registration complete" || evs[0].Node != "s503" {
				t.Errorf("UI line joined or node wrong: %+v", evs[0])
			}
			if field(evs[1], "msg") != "Exit Code: 0" || field(evs[1], "type") != "Terminated" {
				t.Errorf("ev1 %+v", evs[1])
			}
		}},
		{"gh23668_windows-rawexec-task-events.log", 4, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if field(evs[1], "type") != "Task Setup" || evs[2].Level != ingest.LevelWarn {
				t.Errorf("%+v %+v", evs[1], evs[2])
			}
			if v, ok := evs[2].Fields["keys"]; !ok || v != "" {
				t.Errorf(`keys="" : %q %v`, v, ok)
			}
			if !strings.Contains(field(evs[3], "driver_cfg"), "OverrideCgroupV1:map[] OOMScoreAdj:0") {
				t.Errorf("driver_cfg %q", field(evs[3], "driver_cfg"))
			}
		}},
		{"gh24231_server-node-ttl-expired_journald.log", 2, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[0].Kind != "nomad.heartbeat" || field(evs[0], "node_id") != "5de1e8af-e595-6bdf-4221-9f01dea50822" || evs[1].Level != ingest.LevelError {
				t.Errorf("%+v", evs)
			}
			if evs[0].NodeID != "" {
				t.Error("fields.node_id must not become Event.NodeID")
			}
		}},
		{"gh26824_windows-driver-failure-pipe-no-timestamp.log", 1, func(t *testing.T, evs []ingest.Event, _ Stats) {
			e := evs[0]
			if !e.Time.Equal(fallback) {
				t.Errorf("no timestamp → Fallback: %v", e.Time)
			}
			if field(e, "type") != "Driver Failure" || !strings.HasSuffix(field(e, "msg"), "The system cannot find the file specified.") || field(e, "failed") != "false" {
				t.Errorf("%+v", e.Fields)
			}
		}},
		{"gh27225_not-restarting-policy-allows-no-restarts.log", 1, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if field(evs[0], "reason") != "Policy allows no restarts" {
				t.Errorf("%+v", evs[0])
			}
		}},
		{"gh28555_client-heartbeat-rpc-permission-denied_aggregator.log", 2, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[0].Kind != "client.rpc" || field(evs[0], "server") != "10.3.107.19:4647" {
				t.Errorf("ev0 %+v", evs[0])
			}
			e := evs[1]
			if e.Kind != "client" || e.Msg != "error heartbeating. retrying" || field(e, "period") != "1.99100434s" || e.Level != ingest.LevelError {
				t.Errorf("aggregator line %+v", e)
			}
			if want := time.Date(2026, 9, 12, 16, 32, 43, 23e6, time.UTC); !e.Time.Equal(want) {
				t.Errorf("inner time wins: %v", e.Time)
			}
		}},
		{"gh5613_rawexec-reattach-executor-not-found_journald.log", 8, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if field(evs[1], "error") != "failed to reattach to executor: error creating rpc client fo" || field(evs[1], "task") != "ABIS-Monitoring" {
				t.Errorf("truncated: %+v", evs[1].Fields)
			}
			if evs[0].Node != "innoabis-71" || evs[4].Time.Day() != 25 {
				t.Errorf("%+v", evs[4])
			}
		}},
		{"gh5891_driver-plugin-dispense-reattach-failed.log", 3, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[1].Level != ingest.LevelWarn || evs[1].Kind != "client.plugin" || field(evs[1], "plugin-type") != "driver" {
				t.Errorf("[WARN ] %+v", evs[1])
			}
		}},
		{"gh6461_client-gc-forced-collection_json_syslog.log", 6, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[3].Kind != "client.gc" || field(evs[3], "reason") != "forced collection" || evs[3].Node != "w-008a19cc-0017" {
				t.Errorf("%+v", evs[3])
			}
			if field(evs[0], "index") != "28028352" {
				t.Errorf("number field %q", field(evs[0], "index"))
			}
		}},
		{"gh9235_not-restarting-terminated-successfully.log", 1, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[0].Node != "nomad-client-one" || field(evs[0], "reason") != "Restart unnecessary as task terminated successfully" {
				t.Errorf("%+v", evs[0])
			}
		}},
		{"legacy-gh3971_windows-heartbeat-missed_pre0.9.log", 14, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[3].Level != ingest.LevelWarn || evs[3].Kind != "client" || !strings.HasPrefix(evs[3].Msg, "heartbeat missed (request took 59.5703ms)") {
				t.Errorf("%+v", evs[3])
			}
			if evs[4].Kind != "http" || evs[4].Msg != "Request /v1/agent/health?type=client (976.6µs)" {
				t.Errorf("%+v", evs[4])
			}
		}},
		{"legacy-gh4413_heartbeating-failed-rpc-eof_pre0.9.log", 11, func(t *testing.T, evs []ingest.Event, st Stats) {
			e := evs[3]
			if e.Kind != "client.consul" || e.Level != ingest.LevelError || e.Msg != "error discovering nomad servers: 1 error(s) occurred:\n\n* rpc error: EOF" {
				t.Errorf("multi-line join: %q", e.Msg)
			}
			if st.Continuations != 4 || st.Unparsed != 0 {
				t.Errorf("stats %+v", st)
			}
		}},
		{"legacy-gh4534_restarting-task-mixed-formats_pre0.9.log", 6, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[0].Kind != "client" || !strings.HasPrefix(evs[0].Msg, `Restarting task "http-worker"`) {
				t.Errorf("legacy %+v", evs[0])
			}
			if evs[1].Kind != "plugin" || evs[1].Level != ingest.LevelDebug || field(evs[1], "path") != "/usr/local/bin/nomad" || !strings.HasSuffix(field(evs[1], "args"), `"LogLevel":"INFO"}]`) {
				t.Errorf("hclog with unescaped JSON: %+v", evs[1].Fields)
			}
		}},
		{"legacy-pr3490_client-gc-skipped-max-allocs_pre0.9.log", 2, func(t *testing.T, evs []ingest.Event, _ Stats) {
			if evs[0].Kind != "client.gc" || evs[0].Level != ingest.LevelInfo || evs[1].Level != ingest.LevelWarn {
				t.Errorf("%+v", evs)
			}
		}},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		seen[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			p := filepath.Join(dir, tc.file)
			evs, st := decodeFile(t, p, DecoderConfig{})
			if len(evs) != tc.records || st.Records != int64(tc.records) {
				t.Fatalf("records = %d (stats %+v), want %d", len(evs), st, tc.records)
			}
			if st.Unparsed != 0 {
				t.Errorf("unparsed lines: %d", st.Unparsed)
			}
			// Every physical line is a record, a continuation or a UI line.
			if st.Records+st.Continuations+st.UILines != st.Lines {
				t.Errorf("lines not accounted for: %+v", st)
			}
			for _, e := range evs {
				if e.Source != ingest.SourceNomadLog || e.Time.IsZero() || !strings.HasPrefix(e.ID, "t:") || e.Kind == "" || e.Msg == "" {
					t.Errorf("incomplete event %+v", e)
				}
				for k, v := range e.Fields {
					if _, ok := v.(string); !ok {
						t.Errorf("field %s is %T", k, v)
					}
				}
			}
			tc.check(t, evs, st)
		})
	}
	all, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, p := range all {
		if !seen[filepath.Base(p)] {
			t.Errorf("reported file %s has no test case", filepath.Base(p))
		}
	}
}

func TestCrashloopCapture(t *testing.T) {
	p := sharedFile(t, "captures/crashloop-gc-checkrestart/nomad.log")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(b, []byte("\n"))
	evs, st := decodeBytes(t, b, DecoderConfig{})
	if len(evs) != 1319 || lines != 1319 || st.Records != int64(lines) || st.Unparsed != 0 || st.Continuations != 0 {
		t.Fatalf("events %d lines %d stats %+v", len(evs), lines, st)
	}
	gc, restartSignaled := 0, 0
	for i, e := range evs {
		// relayed plugin lines may be a little out of order; all lie in the capture
		if e.Time.Before(evs[0].Time) || e.Time.After(evs[len(evs)-1].Time.Add(time.Second)) {
			t.Errorf("time out of range at %d: %v", i, e.Time)
		}
		if e.Kind == "client.gc" {
			gc++
			if e.Node != "vm" || e.NodeID != "31cfa6ea-3a38-f6c5-d1ba-57b1207d485c" {
				t.Fatalf("client.gc line %s: node %q id %q", e.ID, e.Node, e.NodeID)
			}
		}
		if field(e, "type") == "Restart Signaled" {
			restartSignaled++
			if want := `healthcheck: check "service: \"unhealthy\" check" unhealthy`; field(e, "msg") != want {
				t.Errorf("escaped quotes: %q, want %q", field(e, "msg"), want)
			}
		}
	}
	if gc != 127 || restartSignaled == 0 {
		t.Errorf("client.gc lines %d (want 127), Restart Signaled %d", gc, restartSignaled)
	}
	// Before the registration line the node is unknown (DefaultNode "").
	if evs[0].Node != "" {
		t.Errorf("first line node %q", evs[0].Node)
	}
	// ID = prefix:offset of the line
	if evs[1].ID != "t:"+itoa(bytes.IndexByte(b, '\n')+1) {
		t.Errorf("ID %s", evs[1].ID)
	}
	// Specific split: a message containing ": " and no fields.
	for _, e := range evs {
		if e.Kind == "nomad" && strings.HasPrefix(e.Msg, "serf: EventMemberJoin") {
			if e.Msg != "serf: EventMemberJoin: vm.global 127.0.0.1" || e.Fields != nil {
				t.Errorf("serf line %q %v", e.Msg, e.Fields)
			}
		}
		if e.Kind == "agent.plugin_loader.raw_exec.id_validator" {
			if v, ok := e.Fields["denied range"]; !ok || v != "" {
				t.Errorf("key with a space: %v", e.Fields)
			}
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestReconnectCaptures(t *testing.T) {
	p := sharedFile(t, "captures/reconnect/client-win-client-2.json.log")
	evs, st := decodeFile(t, p, DecoderConfig{DefaultNode: "WIN-CLIENT-2.corp.example"})
	if len(evs) != 169 || st.Unparsed != 0 {
		t.Fatalf("json capture: %d events, %+v", len(evs), st)
	}
	started := -1
	for i, e := range evs {
		if e.Level == "" || e.Kind == "" || e.Time.IsZero() {
			t.Errorf("incomplete %+v", e)
		}
		if e.Msg == "started client" {
			started = i
		}
	}
	if started < 0 || evs[started].NodeID != "0c2557ad-86d2-4d20-684e-5591a33d72a1" || evs[len(evs)-1].NodeID != evs[started].NodeID {
		t.Fatalf("own node id not learned")
	}
	if evs[0].Node != "win-client-2" {
		t.Errorf("DefaultNode canonicalised: %q", evs[0].Node)
	}

	// The dev agent's log names both clients; a shared identity learns them.
	id := ingest.NewIdentity()
	p2 := sharedFile(t, "captures/reconnect/server-and-client-vm.log")
	evs2, st2 := decodeFile(t, p2, DecoderConfig{Identity: id})
	if len(evs2) != 410 || st2.Unparsed != 0 {
		t.Fatalf("vm capture %d %+v", len(evs2), st2)
	}
	if n, _ := id.NameOf("0c2557ad-86d2-4d20-684e-5591a33d72a1"); n != "win-client-2" {
		t.Errorf("learned %q", n)
	}
	if last := evs2[len(evs2)-1]; last.Node != "vm" {
		t.Errorf("vm log node %q", last.Node)
	}
}

func TestMultiline(t *testing.T) {
	evs, st := decodeFile(t, "testdata/multiline.log", DecoderConfig{})
	if len(evs) != 5 {
		for _, e := range evs {
			t.Logf("%+v", e)
		}
		t.Fatalf("records %d, want 5 (%+v)", len(evs), st)
	}
	e := evs[1]
	if e.Msg != "command failed" || field(e, "stderr") != "line one\nline two: k=v" || field(e, "task_id") != "abc" || field(e, "exit_code") != "1" || field(e, "driver") != "raw_exec" {
		t.Errorf("hclog multi-line value: %q %#v", e.Msg, e.Fields)
	}
	e = evs[2]
	if e.Msg != "only a multi-line value" || field(e, "output") != "first\nsecond" {
		t.Errorf("multi-line only field: %q %#v", e.Msg, e.Fields)
	}
	e = evs[3]
	if e.Level != ingest.LevelError || !strings.HasPrefix(e.Msg, "panic: runtime error") || !strings.Contains(e.Msg, "goroutine 1 [running]:") || !strings.HasSuffix(e.Msg, "exit status 2") {
		t.Errorf("panic record %+v", e)
	}
	if !e.Time.Equal(evs[2].Time) {
		t.Errorf("panic takes the previous time: %v", e.Time)
	}
	if evs[4].Msg != "after the crash" || st.Unparsed != 0 {
		t.Errorf("after %+v %+v", evs[4], st)
	}
}

func TestMaxRecordLines(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("2026-11-22T01:57:48.000Z [ERROR] client: boom\n")
	for i := 0; i < 50; i++ {
		b.WriteString("\tgoroutine frame\n")
	}
	b.WriteString("2026-11-22T01:57:49.000Z [INFO]  client: next\n")
	evs, st := decodeBytes(t, b.Bytes(), DecoderConfig{MaxRecordLines: 10})
	if len(evs) != 2 || st.DroppedContinuations != 40 || strings.Count(evs[0].Msg, "\n") != 10 {
		t.Fatalf("%d %+v %q", len(evs), st, evs[0].Msg)
	}
}

func TestGarbage(t *testing.T) {
	evs, st := decodeFile(t, "testdata/garbage.log", DecoderConfig{})
	if len(evs) != 1 || st.Unparsed != 1 || st.Continuations != 1 {
		t.Fatalf("%d %+v", len(evs), st)
	}
	if !strings.HasPrefix(evs[0].Msg, "valid \xff\xfe bytes") || field(evs[0], "j") != "\xff" {
		t.Errorf("invalid UTF-8 kept as is: %q %v", evs[0].Msg, evs[0].Fields)
	}
	// pure binary
	bin := make([]byte, 4096)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	evs, st = decodeBytes(t, bin, DecoderConfig{})
	if len(evs) != 0 || st.Lines == 0 {
		t.Errorf("binary: %d events %+v", len(evs), st)
	}
}

func TestMixedWrappers(t *testing.T) {
	id := ingest.NewIdentity()
	id.Learn("aaaa-bbbb", "vm")
	evs, st := decodeFile(t, "testdata/mixed_wrappers.log", DecoderConfig{Identity: id, DefaultNode: "dflt"})
	if len(evs) != 6 || st.UILines != 1 {
		t.Fatalf("%d %+v", len(evs), st)
	}
	if evs[0].NodeID != "aaaa-bbbb" || evs[0].Node != "vm" {
		t.Errorf("journald host: %+v", evs[0])
	}
	if e := evs[1]; e.Level != ingest.LevelDebug || e.Msg != "garbage collection skipped because no terminal allocations" || field(e, "reason") != "number of allocations (13) is over the limit (6)" {
		t.Errorf("syslog without leading space and no error words is debug: %+v", e)
	}
	// syslog time, in the +0100 of the previous hclog stamp, year from it
	if want := time.Date(2026, 11, 22, 0, 57, 48, 0, time.UTC); !evs[1].Time.Equal(want) {
		t.Errorf("syslog time %v", evs[1].Time)
	}
	if e := evs[2]; e.Level != ingest.LevelInfo || field(e, "alloc_id") != "1234" {
		t.Errorf("syslog leading space: %+v", e)
	}
	e := evs[3]
	if e.Node != "other-host" || e.NodeID != "" || e.Level != ingest.LevelError {
		t.Errorf("short-iso wrapper: %+v", e)
	}
	wantF := map[string]string{"n": "1500000000000000000000", "obj": `{"a":[1,2]}`, "b": "true", "nil": "", "esc": "<\"\\\U0001F600"}
	for k, v := range wantF {
		if field(e, k) != v {
			t.Errorf("json field %s = %q, want %q", k, field(e, k), v)
		}
	}
	if e := evs[4]; !e.Time.Equal(evs[3].Time) || e.Kind != "client.alloc_runner.task_runner" || e.Node != "vm" {
		t.Errorf("bare: %+v", e)
	}
	if e := evs[5]; e.Kind != "client.gc" || e.Msg != "with caller" || field(e, "a") != "b" {
		t.Errorf("caller: %+v", e)
	}
}

func TestOversizeLine(t *testing.T) {
	const big = 10 << 20
	r := io.MultiReader(
		strings.NewReader("2026-11-22T01:57:48.000Z [INFO]  client: before\n2026-11-22T01:57:48.000Z [INFO]  client: huge: x="),
		io.LimitReader(repeatReader('x'), big),
		strings.NewReader("\n2026-11-22T01:57:49.000Z [INFO]  client: after: k=v\n"),
	)
	var evs []ingest.Event
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	st, err := ReadAll(context.Background(), r, DecoderConfig{IDPrefix: "o", MaxLineBytes: 64 << 10}, func(e ingest.Event) { evs = append(evs, e) })
	runtime.ReadMemStats(&ms1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Oversize != 1 || len(evs) != 2 || evs[1].Msg != "after" || st.Lines != 3 {
		t.Fatalf("%+v %d", st, len(evs))
	}
	want := "o:" + itoa(int(int64(len("2026-11-22T01:57:48.000Z [INFO]  client: before\n2026-11-22T01:57:48.000Z [INFO]  client: huge: x="))+big+1))
	if evs[1].ID != want {
		t.Errorf("offset after the long line: %s, want %s", evs[1].ID, want)
	}
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 2<<20 {
		t.Errorf("allocated %d bytes for a 10 MB line (bounded reading expected)", alloc)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestDecoderLineOversize(t *testing.T) {
	d := NewDecoder(DecoderConfig{MaxLineBytes: 10})
	d.Line([]byte("2026-11-22T01:57:48.000Z [INFO]  client: x"), 0, 10, func(ingest.Event) { t.Error("emitted") })
	if s := d.Stats(); s.Oversize != 1 || s.Lines != 1 {
		t.Errorf("%+v", s)
	}
}

func TestFlushAndCommitHook(t *testing.T) {
	d := NewDecoder(DecoderConfig{IDPrefix: "p", Fallback: func() time.Time { return fallback }})
	var ends []int64
	d.commit = func(end int64) func() { return func() { ends = append(ends, end) } }
	var evs []ingest.Event
	emit := func(e ingest.Event) { evs = append(evs, e) }
	d.Line([]byte("2026-11-22T01:57:48.000Z [ERROR] client: a"), 0, 44, emit)
	d.Line([]byte("  continuation"), 44, 59, emit)
	if len(evs) != 0 {
		t.Fatal("emitted before the next record")
	}
	d.Flush(emit)
	d.Flush(emit)
	if len(evs) != 1 || evs[0].ID != "p:0" || evs[0].Msg != "a\n  continuation" {
		t.Fatalf("%+v", evs)
	}
	evs[0].Commit()
	if len(ends) != 1 || ends[0] != 59 {
		t.Errorf("commit end %v", ends)
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		head string
		want bool
	}{
		{"text", "2026-11-22T01:57:47.699Z [DEBUG] nomad: issuer not set\n2026-11-22T01:57:47.707Z [INFO]  nomad.raft: x: a=b\n", true},
		{"json", `{"@level":"info","@message":"Loaded configuration","@module":"agent","@timestamp":"2026-11-22T02:01:39.037740Z"}` + "\n", true},
		{"legacy", "    2018/03/27 16:22:45.154261 [INFO] client: node registration complete\n", true},
		{"journald", "Aug 08 06:41:13 h nomad[1]: {\"@level\":\"info\",\"@message\":\"m\"}\n", true},
		{"ui banner then log", "==> Loaded configuration from a.hcl\n==> Starting Nomad agent...\n    2023-01-01T00:00:00.000Z [INFO]  agent: x\n", true},
		{"event stream", `{"Index":12,"Events":[{"Topic":"Node"}]}` + "\n{}\n", false},
		{"xml", "<Events><Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'>\n", false},
		{"evtx", "ElfFile\x00\x00\x00\x00\x00\x01\x00", false},
		{"prose", "hello world\nthis is a readme\nwith lines\n", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Detect([]byte(tc.head)); got != tc.want {
				t.Errorf("Detect = %v, want %v", got, tc.want)
			}
		})
	}
	for _, f := range []string{"captures/crashloop-gc-checkrestart/nomad.log", "captures/reconnect/client-win-client-2.json.log", "reported/gh13198_docker-start-failed-restarting_syslog-truncated.log"} {
		p := filepath.Join(sharedDir, f)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if !Detect(b[:min(len(b), 4096)]) {
			t.Errorf("Detect(%s) = false", f)
		}
	}
	if p := filepath.Join(sharedDir, "captures/reconnect/events.ndjson"); fileExists(p) {
		b, _ := os.ReadFile(p)
		if Detect(b[:min(len(b), 4096)]) {
			t.Error("Detect(events.ndjson) = true")
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestReadAllContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var b bytes.Buffer
	for i := 0; i < 5000; i++ {
		b.WriteString("2026-11-22T01:57:48.000Z [INFO]  client: x\n")
	}
	st, err := ReadAll(ctx, &b, DecoderConfig{}, func(ingest.Event) {})
	if err == nil || st.Lines >= 5000 {
		t.Errorf("cancelled ReadAll: %v %+v", err, st)
	}
}
