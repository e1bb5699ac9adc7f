package journald

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald/journaltest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// shared is the team's shared test data, relative to this package.
const shared = "../../../shared/testdata"

// eventKey is what must match between the journal and the file decoding
// of the same lines: everything but the ID (and Commit).
func eventKey(ev ingest.Event) string {
	f, _ := json.Marshal(ev.Fields)
	return fmt.Sprintf("%s|%s|%s|%s|%s|%q|%s|%s", ev.Time.UTC().Format(time.RFC3339Nano), ev.Node, ev.NodeID, ev.Kind, ev.Level, ev.Msg, f, ev.Occurrence)
}

func keys(evs []ingest.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = eventKey(ev)
	}
	return out
}

// fileEvents decodes lines as the file source does.
func fileEvents(t *testing.T, lines []string, node string) []ingest.Event {
	t.Helper()
	var evs []ingest.Event
	_, err := nomadlog.ReadAll(context.Background(), strings.NewReader(strings.Join(lines, "\n")+"\n"),
		nomadlog.DecoderConfig{DefaultNode: node, Fallback: func() time.Time { return time.Unix(0, 0) }},
		func(ev ingest.Event) { evs = append(evs, ev) })
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// entries makes the entries journald would store of lines (cursors s=seq;i=n).
func entries(lines []string, host, unit, pid string, first int) []Entry {
	var out []Entry
	t := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for i, l := range lines {
		if pl, err := nomadlog.ParseLine([]byte(l)); err == nil && !pl.Time.IsZero() {
			t = pl.Time
		}
		out = append(out, Entry{
			Cursor:   fmt.Sprintf("s=abc;i=%x;b=b1;m=%x;t=%x;x=0", first+i, first+i, t.UnixMicro()),
			Realtime: t, Hostname: host, Unit: unit, PID: pid,
			Message: []byte(prefixed(l)), HasMessage: true,
		})
	}
	return out
}

// prefixed is a line as the agent writes it to stdout under systemd: its
// console writer puts four spaces before each record, not before the other
// lines of a multi-line record (nor the Go runtime's crash output).
func prefixed(l string) string {
	if _, err := nomadlog.ParseLine([]byte(l)); err == nil && !strings.HasPrefix(l, "panic:") {
		return "    " + l
	}
	return l
}

func TestTrackerAdvancesOverTheDonePrefix(t *testing.T) {
	var got []string
	tr := &tracker{advance: func(c string) { got = append(got, c) }}
	for i := range 5 {
		if s := tr.add(fmt.Sprint("c", i)); s != int64(i) {
			t.Fatalf("add %d: position %d", i, s)
		}
	}
	tr.done(1)
	if len(got) != 0 {
		t.Fatalf("advanced past an entry not done: %v", got)
	}
	tr.done(0)
	tr.done(3)
	if want := []string{"c1"}; !slices.Equal(got, want) {
		t.Fatalf("after 0,1,3 done: %v, want %v", got, want)
	}
	tr.done(2, 4)
	if want := []string{"c1", "c4"}; !slices.Equal(got, want) {
		t.Fatalf("after all done: %v, want %v", got, want)
	}
	if tr.pending() != 0 {
		t.Fatalf("pending %d", tr.pending())
	}
	tr.done(2) // again: ignored
	if s := tr.add("c5"); s != 5 {
		t.Fatalf("position after compaction %d, want 5", s)
	}
}

// The MESSAGE lines decode as the lines of a file do, across entries
// (continuation lines are entries of their own) and with other streams
// interleaved: another host's agent, and systemd's own messages about the
// unit (journalctl --unit shows them too).
func TestDecoderMatchesFileDecoding(t *testing.T) {
	lines := journaltest.Lines(t, "../nomadlog/testdata/multiline.log")
	a := entries(lines, "Client-1.example.internal", "nomad.service", "100", 0)
	b := entries(lines, "client-2", "nomad.service", "200", 1000)
	sys := []string{
		"Started nomad.service - Nomad.",
		"nomad.service: Main process exited, code=exited, status=1/FAILURE",
		"nomad.service: Failed with result 'exit-code'.",
		"nomad.service: Scheduled restart job, restart counter is at 3.",
		"Stopping nomad.service - Nomad...",
		"nomad.service: Consumed 1.234s CPU time.",
	}
	c := entries(sys, "Client-1.example.internal", "init.scope", "1", 2000)
	var all []Entry
	for i := range max(len(a), len(c)) {
		if i < len(a) {
			all = append(all, a[i], b[i])
		}
		if i < len(c) {
			all = append(all, c[i])
		}
	}
	var positions []string
	tr := &tracker{advance: func(c string) { positions = append(positions, c) }}
	d := newDecoder(decoderConfig{DefaultNode: "fallback"}, tr)
	var got []ingest.Event
	emit := func(ev ingest.Event) { got = append(got, ev) }
	for i := range all {
		d.feed(&all[i], emit)
	}
	d.flush(emit)

	byNode := map[string][]ingest.Event{}
	for _, ev := range got {
		byNode[ev.Node] = append(byNode[ev.Node], ev)
	}
	if len(byNode) != 2 {
		t.Fatalf("nodes %v, want client-1 and client-2 (systemd's lines are no records)", slices.Collect(maps.Keys(byNode)))
	}
	for _, node := range []string{"client-1", "client-2"} {
		want := keys(fileEvents(t, lines, node))
		if g := keys(byNode[node]); !slices.Equal(g, want) {
			t.Errorf("node %s: journal decoding differs from the file's\n got %q\nwant %q", node, g, want)
		}
	}
	// IDs are the cursors' (first entry of each record).
	ids := map[string]bool{}
	for _, ev := range got {
		if ids[ev.ID] {
			t.Errorf("duplicate ID %s", ev.ID)
		}
		ids[ev.ID] = true
		if !strings.HasPrefix(ev.ID, CursorID("s=abc;i=0")[:16]+":") {
			t.Errorf("ID %s not from the cursor", ev.ID)
		}
	}
	if st := d.Stats(); st.Entries != int64(len(all)) || st.Events != int64(len(got)) || st.Skipped != int64(len(sys)) || st.Unparsed != 0 {
		t.Errorf("stats %+v: want %d entries, %d events, %d skipped (systemd's), none unparsed", st, len(all), len(got), len(sys))
	}

	// Committing every event in order makes the last entry the position.
	if len(positions) != 0 {
		t.Fatalf("position advanced before any commit: %v", positions)
	}
	for _, ev := range got {
		if ev.Commit == nil {
			t.Fatalf("event %s without Commit", ev.ID)
		}
		ev.Commit()
	}
	if last := positions[len(positions)-1]; last != all[len(all)-1].Cursor {
		t.Fatalf("position after all commits %s, want the last entry's %s", last, all[len(all)-1].Cursor)
	}
	if tr.pending() != 0 {
		t.Fatalf("%d entries still pending", tr.pending())
	}
}

// A record's commit covers its continuation entries: the position stops
// before the entries of a record that is not committed.
func TestCommitCoversContinuationEntries(t *testing.T) {
	lines := journaltest.Lines(t, "../nomadlog/testdata/multiline.log")
	es := entries(lines, "h", "nomad.service", "310", 0)
	var pos string
	tr := &tracker{advance: func(c string) { pos = c }}
	d := newDecoder(decoderConfig{}, tr)
	var got []ingest.Event
	emit := func(ev ingest.Event) { got = append(got, ev) }
	for i := range es {
		d.feed(&es[i], emit)
	}
	d.flush(emit)
	// Records start at the lines ParseLine takes as records.
	var starts []int
	for i, l := range lines {
		if _, err := nomadlog.ParseLine([]byte(l)); err == nil {
			starts = append(starts, i)
		}
	}
	if len(got) != len(starts) {
		t.Fatalf("%d events, want %d (records at lines %v)", len(got), len(starts), starts)
	}
	for k, ev := range got {
		ev.Commit()
		last := len(es) - 1
		if k+1 < len(starts) {
			last = starts[k+1] - 1
		}
		if pos != es[last].Cursor {
			t.Fatalf("after committing record %d (lines %d-%d): position %s, want %s", k, starts[k], last, pos, es[last].Cursor)
		}
	}
}

// Records held by a stream are complete when its process changes (the
// agent restarted), and come out before the new process's.
func TestNewProcessCompletesTheHeldRecord(t *testing.T) {
	a := entries([]string{"2026-11-22T01:00:00.000Z [INFO]  agent: old process"}, "h", "nomad.service", "310", 0)
	b := entries([]string{"2026-11-22T01:00:01.000Z [INFO]  agent: new process", "  continuation of the new"}, "h", "nomad.service", "320", 1)
	d := newDecoder(decoderConfig{}, nil)
	var got []string
	emit := func(ev ingest.Event) { got = append(got, ev.Msg) }
	d.feed(&a[0], emit)
	if len(got) != 0 {
		t.Fatalf("emitted before the record was complete: %q", got)
	}
	d.feed(&b[0], emit)
	if want := []string{"old process"}; !slices.Equal(got, want) {
		t.Fatalf("after the new process's first line: %q, want %q", got, want)
	}
	d.feed(&b[1], emit)
	d.flush(emit)
	if want := []string{"old process", "new process\n  continuation of the new"}; !slices.Equal(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
}

// Event time is the hclog timestamp when the line has one, else the entry's
// __REALTIME_TIMESTAMP; node is the canonical _HOSTNAME, or Node when set.
func TestTimeAndNode(t *testing.T) {
	rt := time.Date(2026, 11, 22, 3, 4, 5, 678000, time.UTC)
	es := []Entry{
		{Cursor: "s=x;i=1", Realtime: rt, Hostname: "WIN-Client-7.corp.example", Unit: "nomad.service", Message: []byte("    2026-11-22T01:02:03.456Z [INFO]  client: own time"), HasMessage: true},
		{Cursor: "s=x;i=2", Realtime: rt.Add(time.Second), Hostname: "WIN-Client-7.corp.example", Unit: "nomad.service", Message: []byte("[WARN]  client: no time of its own"), HasMessage: true},
		{Cursor: "s=x;i=3", Realtime: rt.Add(2 * time.Second), Hostname: "WIN-Client-7.corp.example", Unit: "nomad.service", HasMessage: false},
	}
	for _, tc := range []struct {
		node, want string
	}{{"", "win-client-7"}, {"Override.example", "override"}} {
		d := newDecoder(decoderConfig{Node: tc.node}, nil)
		var got []ingest.Event
		emit := func(ev ingest.Event) { got = append(got, ev) }
		for i := range es {
			d.feed(&es[i], emit)
		}
		d.flush(emit)
		if len(got) != 2 {
			t.Fatalf("%d events, want 2", len(got))
		}
		if w := time.Date(2026, 11, 22, 1, 2, 3, 456e6, time.UTC); !got[0].Time.Equal(w) {
			t.Errorf("time of a line with a timestamp %s, want %s", got[0].Time, w)
		}
		if w := rt.Add(time.Second); !got[1].Time.Equal(w) {
			t.Errorf("time of a line without %s, want the entry's %s", got[1].Time, w)
		}
		for _, ev := range got {
			if ev.Node != tc.want {
				t.Errorf("node %q, want %q", ev.Node, tc.want)
			}
		}
		if st := d.Stats(); st.Skipped != 1 {
			t.Errorf("Skipped %d, want 1", st.Skipped)
		}
	}
}

func TestCursorID(t *testing.T) {
	c1 := "s=8ade47c2836c4bf08851ce108b1d6b38;i=1;b=0123;m=3e8;t=60a24181e4000;x=f80fcab121a2d94c"
	c1b := "s=8ade47c2836c4bf08851ce108b1d6b38;i=1;b=0123;m=3e8;t=60a24181e4000;x=0000000000000000"
	c2 := "s=8ade47c2836c4bf08851ce108b1d6b38;i=2;b=0123;m=7d0;t=60a24182d8240;x=319668d5d7fa50f0"
	c3 := "s=fffe47c2836c4bf08851ce108b1d6b38;i=1;b=0123;m=3e8;t=60a24181e4000;x=f80fcab121a2d94c"
	if CursorID(c1) != CursorID(c1b) {
		t.Errorf("one entry (s, i) got two IDs")
	}
	if CursorID(c1) == CursorID(c2) || CursorID(c1) == CursorID(c3) {
		t.Errorf("different entries share an ID: %s %s %s", CursorID(c1), CursorID(c2), CursorID(c3))
	}
	if !strings.HasSuffix(CursorID(c2), ":2") {
		t.Errorf("CursorID(%s) = %s: want the sequence number at the end", c2, CursorID(c2))
	}
	if a, b := CursorID("garbage"), CursorID("other"); a == b || len(a) != 16 {
		t.Errorf("cursors without s/i: %s %s", a, b)
	}
}

// Lines as journalctl 252 prints them (-o json): a field left out (null, a
// value over 4096 bytes without --all), binary data as byte arrays, a field
// with several values as an array.
func TestParseJSON(t *testing.T) {
	for _, tc := range []struct {
		line, msg string
		has       bool
	}{
		{`{"_BOOT_ID":"0123","MESSAGE":null,"__CURSOR":"s=42;i=1","__REALTIME_TIMESTAMP":"1700000000000000"}`, "", false},
		{`{"MESSAGE":[98,105,110,1,97,114,121,10,108,105,110,101,9,116,97,98],"__CURSOR":"s=42;i=2","__REALTIME_TIMESTAMP":"1700000000000000"}`, "bin\x01ary\nline\ttab", true},
		{`{"MESSAGE":["multi","value"],"__CURSOR":"s=42;i=3","__REALTIME_TIMESTAMP":"1700000000000000"}`, "multi", true},
		{`{"MESSAGE":[[99,97,102],[195,169]],"__CURSOR":"s=42;i=3","__REALTIME_TIMESTAMP":"1700000000000000"}`, "caf", true},
		{`{"MESSAGE":"tab\there \u00e9","_HOSTNAME":"h","_PID":"7","_SYSTEMD_UNIT":"nomad.service","SYSLOG_IDENTIFIER":"nomad","__CURSOR":"s=42;i=5","__REALTIME_TIMESTAMP":"1700000000000001","__MONOTONIC_TIMESTAMP":"1000","OTHER":[1,2]}`, "tab\there é", true},
	} {
		e, err := parseJSON([]byte(tc.line))
		if err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		if e.HasMessage != tc.has || string(e.Message) != tc.msg {
			t.Errorf("%s: message %q (%v), want %q (%v)", tc.line, e.Message, e.HasMessage, tc.msg, tc.has)
		}
		if e.Cursor == "" || e.Realtime.IsZero() {
			t.Errorf("%s: cursor %q realtime %s", tc.line, e.Cursor, e.Realtime)
		}
	}
	e, _ := parseJSON([]byte(`{"MESSAGE":"m","_HOSTNAME":"h","_PID":"7","_SYSTEMD_UNIT":"nomad.service","SYSLOG_IDENTIFIER":"nomad","_BOOT_ID":"b","__CURSOR":"c","__REALTIME_TIMESTAMP":"1700000000000001","__MONOTONIC_TIMESTAMP":"1000"}`))
	want := Entry{Cursor: "c", Realtime: time.UnixMicro(1700000000000001).UTC(), Monotonic: "1000", BootID: "b", Hostname: "h", Unit: "nomad.service", Identifier: "nomad", PID: "7", Message: []byte("m"), HasMessage: true}
	if fmt.Sprint(e) != fmt.Sprint(want) {
		t.Errorf("entry %+v, want %+v", e, want)
	}
	for _, bad := range []string{`{}`, `[1,2]`, `{"MESSAGE":[300]}`, `{"MESSAGE":{"a":1}}`, `{"MESSAGE":"x"`, `null`} {
		if _, err := parseJSON([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestExportReader(t *testing.T) {
	var b bytes.Buffer
	journaltest.WriteEntry(&b, [][2]string{{"__CURSOR", "s=1;i=1"}, {"__REALTIME_TIMESTAMP", "1700000000000000"}, {"MESSAGE", "first"}, {"MESSAGE", "second value"}})
	journaltest.WriteEntry(&b, [][2]string{{"__CURSOR", "s=1;i=2"}, {"MESSAGE", "multi\nline\x1b[0m"}, {"_HOSTNAME", "h"}})
	b.WriteString("__CURSOR=s=1;i=3\nMESSAGE=" + strings.Repeat("x", 300) + "\n_PID=9\n\n")
	b.WriteString("__CURSOR=s=1;i=4\nMESSAGE=no empty line at the end")
	x := newExportReader(&b, 100)
	var got []Entry
	for {
		e, err := x.next()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatal(err)
			}
			break
		}
		got = append(got, e)
	}
	if len(got) != 4 {
		t.Fatalf("%d entries, want 4", len(got))
	}
	if string(got[0].Message) != "first" || string(got[1].Message) != "multi\nline\x1b[0m" || got[1].Hostname != "h" {
		t.Errorf("entries %+v", got[:2])
	}
	if got[2].HasMessage || got[2].PID != "9" || x.skipped != 1 {
		t.Errorf("an over-long field is skipped, the entry kept: %+v, skipped %d", got[2], x.skipped)
	}
	if string(got[3].Message) != "no empty line at the end" {
		t.Errorf("last entry %+v", got[3])
	}
	// A binary value cut short is an error.
	_, err := newExportReader(strings.NewReader("MESSAGE\n\x10\x00\x00\x00\x00\x00\x00\x00abc"), 100).next()
	if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("truncated binary field: %v", err)
	}
}

func TestDetect(t *testing.T) {
	log, err := os.ReadFile("../nomadlog/testdata/multiline.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, head, want string
	}{
		{"journal file", "LPKSHHRH\x00\x00\x00\x00", FormatJournal},
		{"export", "__CURSOR=s=1;i=1\n__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=x\n\n", FormatExport},
		{"export without cursor", "__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=x\n\n", FormatExport},
		{"json", `{"__CURSOR":"s=1;i=1","MESSAGE":"x","__REALTIME_TIMESTAMP":"1700000000000000"}` + "\n", FormatJSON},
		{"agent log", string(log), ""},
		{"hclog json", `{"@level":"info","@message":"Loaded configuration","@module":"agent","@timestamp":"2026-11-22T02:01:39.037740Z"}` + "\n", ""},
		{"event stream", `{"Index":5,"Events":[]}` + "\n", ""},
		{"key=value text", "FOO=bar\nBAZ=1\n", ""},
		{"empty", "", ""},
	} {
		if got := Detect([]byte(tc.head)); got != tc.want {
			t.Errorf("%s: Detect = %q, want %q", tc.name, got, tc.want)
		}
	}
}
