package nomadlog

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name   string
		line   string
		err    error
		format string
		level  string
		logger string
		msg    string
		fields map[string]string
		host   string
		time   string // RFC3339Nano, "" = zero
	}{
		{name: "text", line: `2026-11-22T01:58:23.945Z [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (13) is over the limit (6)"`,
			format: FormatText, level: "warn", logger: "client.gc", msg: "garbage collection skipped because no terminal allocations",
			fields: map[string]string{"reason": "number of allocations (13) is over the limit (6)"}, time: "2026-11-22T01:58:23.945Z"},
		{name: "colon in message", line: `2024-01-01T00:00:00.000Z [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=raw_exec error="plugin exited: a: b"`,
			format: FormatText, level: "warn", logger: "client.driver_mgr", msg: "failed to reattach to plugin, starting new instance",
			fields: map[string]string{"driver": "raw_exec", "error": "plugin exited: a: b"}, time: "2024-01-01T00:00:00Z"},
		{name: "no fields", line: `2026-11-22T01:57:47.707Z [INFO]  nomad: serf: EventMemberJoin: vm.global 127.0.0.1`,
			format: FormatText, level: "info", logger: "nomad", msg: "serf: EventMemberJoin: vm.global 127.0.0.1", time: "2026-11-22T01:57:47.707Z"},
		{name: "slice and empties", line: `2026-11-22T01:57:47.707Z [INFO]  nomad.raft: entering follower state: follower="Node at 127.0.0.1:4647 [Follower]" leader-address= leader-id= s=["a b", "c"] n=[1 2]`,
			format: FormatText, level: "info", logger: "nomad.raft", msg: "entering follower state",
			fields: map[string]string{"follower": "Node at 127.0.0.1:4647 [Follower]", "leader-address": "", "leader-id": "", "s": `["a b", "c"]`, "n": "[1 2]"}, time: "2026-11-22T01:57:47.707Z"},
		{name: "escaped quotes", line: `2026-11-22T01:58:31.415Z [INFO]  client.alloc_runner.task_runner: Task event: type="Restart Signaled" msg="check \"x: \\"y\\"\" unhealthy" failed=false`,
			format: FormatText, level: "info", logger: "client.alloc_runner.task_runner", msg: "Task event",
			fields: map[string]string{"type": "Restart Signaled", "msg": `check "x: \"y\"" unhealthy`, "failed": "false"}, time: "2026-11-22T01:58:31.415Z"},
		{name: "truncated key", line: `2019-04-24T14:51:48.808+0200 [ERROR] client.driver_mgr.raw_exec: failed: driver=raw_exec task_i`,
			format: FormatText, level: "error", logger: "client.driver_mgr.raw_exec", msg: "failed", fields: map[string]string{"driver": "raw_exec"}, time: "2019-04-24T12:51:48.808Z"},
		{name: "old bracket", line: `2019-06-26T18:05:31.612Z [WARN ] client.plugin: timeout: plugin-type=driver`,
			format: FormatText, level: "warn", logger: "client.plugin", msg: "timeout", fields: map[string]string{"plugin-type": "driver"}, time: "2019-06-26T18:05:31.612Z"},
		{name: "unknown level", line: `2019-06-26T18:05:31.612Z [?????] x: y`, format: FormatText, level: "", logger: "x", msg: "y", time: "2019-06-26T18:05:31.612Z"},
		{name: "legacy ERR", line: `    2018/08/10 13:42:39.378033 [ERR] client: heartbeating failed. Retrying in 1.499009466s: failed to update status: rpc error: EOF`,
			format: FormatLegacy, level: "error", logger: "client", msg: "heartbeating failed. Retrying in 1.499009466s: failed to update status: rpc error: EOF", time: "2018-08-10T13:42:39.378033Z"},
		{name: "bare", line: `[INFO]  client.alloc_runner.task_runner: Task event: alloc_id=a9 type="Driver Failure"`,
			format: FormatBare, level: "info", logger: "client.alloc_runner.task_runner", msg: "Task event", fields: map[string]string{"alloc_id": "a9", "type": "Driver Failure"}},
		{name: "syslog info", line: `May 31 06:06:50 test-server nomad[3720]:  client.driver_mgr.docker: created container: driver=docker`,
			format: FormatSyslog, level: "info", logger: "client.driver_mgr.docker", msg: "created container", fields: map[string]string{"driver": "docker"}, host: "test-server", time: "0000-05-31T06:06:50Z"},
		{name: "syslog debug", line: `May  1 06:06:50 h nomad: client: updated allocations: index=1`,
			format: FormatSyslog, level: "debug", logger: "client", msg: "updated allocations", fields: map[string]string{"index": "1"}, host: "h", time: "0000-05-01T06:06:50Z"},
		{name: "monotonic journald", line: `[  115.487254] nomad-client-one sh[11424]:     2020-11-14T22:42:09.377Z [INFO]  client: x: a=b`,
			format: FormatText, level: "info", logger: "client", msg: "x", fields: map[string]string{"a": "b"}, host: "nomad-client-one", time: "2020-11-14T22:42:09.377Z"},
		{name: "json", line: `{"@level":"debug","@message":"updated allocations","@module":"client","@timestamp":"2019-09-28T11:01:51.614761Z","filtered":76,"neg":-1.5,"ok":false}`,
			format: FormatJSON, level: "debug", logger: "client", msg: "updated allocations", fields: map[string]string{"filtered": "76", "neg": "-1.5", "ok": "false"}, time: "2019-09-28T11:01:51.614761Z"},
		{name: "json truncated", line: `{"@level":"warn","@message":"failed","@module":"client.driver_mgr.docker","@timestamp":"2022-08-08T06:41:13.298328Z","driver":"docker","error":"failed to rea`,
			format: FormatJSON, level: "warn", logger: "client.driver_mgr.docker", msg: "failed", fields: map[string]string{"driver": "docker"}, time: "2022-08-08T06:41:13.298328Z"},
		{name: "panic", line: `panic: runtime error: index out of range`, format: FormatPanic, level: "error", msg: "panic: runtime error: index out of range"},
		{name: "ui", line: `==> Newer Nomad version available: 1.6.2 (currently running: 1.6.1)`, err: ErrUILine},
		{name: "ui journald", line: `Sep 20 13:35:26 s503.acme.com nomad-client[2331106]: ==> Newer Nomad version available: 1.6.2`, err: ErrUILine},
		{name: "continuation", line: `* rpc error: EOF`, err: ErrNotRecord},
		{name: "goroutine", line: `goroutine 1 [running]:`, err: ErrNotRecord},
		{name: "blank", line: ``, err: ErrNotRecord},
		{name: "event stream", line: `{"Index":3,"Events":[]}`, err: ErrNotRecord},
		{name: "agent config line", line: `    Loaded configuration from /etc/nomad.d`, err: ErrNotRecord},
		{name: "bad date", line: `2026-13-22T01:58:23.945Z [WARN]  client: x`, err: ErrNotRecord},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseLine([]byte(tc.line))
			if tc.err != nil || err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if l.Format != tc.format || l.Level != tc.level || l.Logger != tc.logger || l.Msg != tc.msg || l.Host != tc.host {
				t.Errorf("got format=%q level=%q logger=%q msg=%q host=%q", l.Format, l.Level, l.Logger, l.Msg, l.Host)
			}
			if len(l.Fields) != len(tc.fields) {
				t.Errorf("fields %#v, want %#v", l.Fields, tc.fields)
			}
			for k, v := range tc.fields {
				if l.Fields[k] != v {
					t.Errorf("field %s = %#v, want %q", k, l.Fields[k], v)
				}
			}
			var got string
			if !l.Time.IsZero() {
				got = l.Time.Format(time.RFC3339Nano)
			}
			if got != tc.time {
				t.Errorf("time %q, want %q", got, tc.time)
			}
		})
	}
}

// seeds are short literal excerpts of the reported lines (LOG_FORMATS §3).
var seeds = []string{
	`2021-05-13T04:53:29.705Z [INFO]  client.alloc_runner.task_runner: restarting task: alloc_id=fa89cf36-e47b-c9ea-a9c8-c1d4ffcef1d0 task=main_task2 reason= delay=0s`,
	`May 31 06:06:50 test-server nomad[3720]:  client.driver_mgr.docker: created container: driver=docker container_id=6fd72c65b07b8791b2693ec3170a69fa3a9004e1d3bcf029c8`,
	`May 31 06:07:31 test-server nomad[3720]: client.alloc_runner.task_runner: running driver failed: alloc_id=fd98c3f3-a865-c30d-14db-7d8420b948f0 task=service error=`,
	`Aug 08 06:41:13 client04-nomad-ovh nomad[808161]: {"@level":"warn","@message":"failed to reattach to docker logger process","@module":"client.driver_mgr.docker","@timestamp":"2022-08-08T06:41:13.298328Z","driver":"docker","error":"failed to reattach to docker logger process: Reattachment process not found"}`,
	`Mar 13 17:15:42 worker-01 nomad[927]:     2023-03-13T17:15:42.222Z [DEBUG] client.driver_mgr.docker.docker_logger.nomad: using client connection initialized from environment: driver=docker @module=docker_logger timestamp=2023-03-13T17:15:42.222Z`,
	`2023-04-12T09:41:11.933+0200 [INFO]  client.driver_mgr.raw_exec: starting task: driver=raw_exec driver_cfg="{Command:C:\Program Files\Foo\WorkflowHostCli.exe Args:[--Name A]}"`,
	`Sep 20 13:35:26 s503.acme.com nomad-client[2331106]: ==> Newer Nomad version available: 1.6.2 (currently running: 1.6.1)`,
	`[INFO]  client.alloc_runner.task_runner: Task event: alloc_id=a9046ac4-d2b9-6ecc-8323-d91571491530 task=service-task type="Driver Failure" msg="failed to launch command with executor: rpc error: code = Unknown desc = failed to create stdout: open //./pipe/service-task-2d52deb3.stdout: The system cannot find the file specified." failed=false`,
	"\t\t2026-09-12 @ 16:32:43.468 UTC\tredacted nomad-client\t2026-09-12T16:32:43.023Z [ERROR] client: error heartbeating. retrying: error=\"failed to update status: rpc error: rpc error: Permission denied\" period=1.99100434s",
	`Apr 24 14:51:48 innoabis-71 nomad[3322]: 2019-04-24T14:51:48.808+0200 [ERROR] client.alloc_runner.task_runner: error recovering task; cleaning up: alloc_id=996081a7-5642-6ad8-2e73-057b3e737403 task=ABIS-Monitoring error="failed to reattach to executor: error creating rpc client fo`,
	`2019-06-26T18:05:31.612Z [WARN ] client.plugin: timeout waiting for plugin manager to be ready: plugin-type=driver`,
	`Sep 28 11:01:51 w-008a19cc-0017 nomad: {"@level":"debug","@message":"updated allocations","@module":"client","@timestamp":"2019-09-28T11:01:51.614761Z","filtered":76,"index":28028352,"pulled":0,"total":76}`,
	`[  115.487254] nomad-client-one sh[11424]:     2020-11-14T22:42:09.377Z [INFO]  client.alloc_runner.task_runner: not restarting task: alloc_id=4f131e98-1c3b-d7ef-5ada-d50e1ec60777 task=alpineExample reason="Restart unnecessary as task terminated successfully"`,
	`    2018/03/27 16:22:59.607468 [DEBUG] http: Request /v1/agent/health?type=client (976.6µs)`,
	`    2018/08/10 13:42:39.379204 [ERR] client.consul: error discovering nomad servers: 1 error(s) occurred:`,
	`* rpc error: EOF`,
	`2018-07-25T11:14:37.763Z [DEBUG] plugin: starting plugin: path=/usr/local/bin/nomad args="[/usr/local/bin/nomad executor {"LogFile":"/var/lib/nomad/alloc/x/executor.out","LogLevel":"INFO"}]"`,
	`2026-11-22T01:58:31.415Z [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=261792c3 task=srv type="Restart Signaled" msg="healthcheck: check \"service: \\"unhealthy\\" check\" unhealthy" failed=false`,
	`2026-11-22T01:57:47.719Z [DEBUG] agent.plugin_loader.raw_exec.id_validator: user range configured: plugin_dir="" denied range=""`,
	`2026-11-22T01:57:47.707Z [INFO]  nomad: starting scheduling worker(s): num_workers=2 schedulers=["service", "batch", "system", "sysbatch", "_core"]`,
	`  stderr=`,
	`  | line`,
	`panic: runtime error`,
}

func FuzzParseLine(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLine(b)
		if err != nil {
			if l.Msg != "" || l.Fields != nil || l.Format != "" {
				t.Fatalf("error with content: %+v", l)
			}
			return
		}
		s := string(b)
		switch l.Format {
		case FormatText, FormatJSON, FormatLegacy, FormatSyslog, FormatBare, FormatPanic:
		default:
			t.Fatalf("format %q", l.Format)
		}
		switch l.Level {
		case "", ingest.LevelTrace, ingest.LevelDebug, ingest.LevelInfo, ingest.LevelWarn, ingest.LevelError:
		default:
			t.Fatalf("level %q", l.Level)
		}
		if l.Format == FormatJSON {
			return // JSON escapes decode to text that is not in the line
		}
		for _, part := range []string{l.Msg, l.Logger, l.Host, l.Caller} {
			if !strings.Contains(s, part) {
				t.Fatalf("%q is not text of the line %q", part, s)
			}
		}
		for k, v := range l.Fields {
			vs, ok := v.(string)
			if !ok {
				t.Fatalf("field %q is %T", k, v)
			}
			// quoted values only lose the backslash of \"
			if !strings.Contains(s, k) || !(strings.Contains(s, vs) || strings.Contains(stripQuotes(s), stripQuotes(vs))) {
				t.Fatalf("field %q=%q is not text of the line %q", k, vs, s)
			}
		}
	})
}

func stripQuotes(s string) string {
	return strings.NewReplacer(`\`, "", `"`, "").Replace(s)
}

func FuzzDecoder(f *testing.F) {
	f.Add([]byte(strings.Join(seeds, "\n")))
	f.Add([]byte("2026-11-22T01:57:48.000Z [ERROR] x: a: k=v\n  stderr=\n  | one\n   j=1\npanic: x\n\ngoroutine 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var evs []ingest.Event
		st, err := ReadAll(context.Background(), bytes.NewReader(b), DecoderConfig{IDPrefix: "f", MaxLineBytes: 256, MaxRecordLines: 4, Fallback: func() time.Time { return fallback }}, func(e ingest.Event) { evs = append(evs, e) })
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(evs)) != st.Records || st.Records+st.Continuations+st.UILines+st.Unparsed+st.Oversize+st.DroppedContinuations < st.Lines {
			t.Fatalf("stats %+v, events %d", st, len(evs))
		}
		for _, e := range evs {
			if e.Time.IsZero() || !strings.HasPrefix(e.ID, "f:") || len(e.Msg) > 256 {
				t.Fatalf("event %+v", e)
			}
		}
	})
}
