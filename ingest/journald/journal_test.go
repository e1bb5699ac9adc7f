package journald

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald/journaltest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// These tests write real journal files with systemd-journal-remote and
// read them with journalctl (Debian packages systemd-journal-remote and
// systemd), from real agent log lines of the shared captures.

// host is the _HOSTNAME of the test entries; its canonical form names the node.
const host = "VM.example.internal"

func writeJournal(t *testing.T, remote, path string, lines []string, u journaltest.Unit) {
	t.Helper()
	if u.Hostname == "" {
		u.Hostname = host
	}
	u.Prefix = "    "
	journaltest.Write(t, remote, path, journaltest.Export(lines, u))
}

// readJournal decodes a journal file as replay does.
func readJournal(t *testing.T, file string) ([]ingest.Event, Stats) {
	t.Helper()
	var evs []ingest.Event
	st, err := ReadJournal(context.Background(), file, ReadConfig{}, func(ev ingest.Event) { evs = append(evs, ev) })
	if err != nil {
		t.Fatal(err)
	}
	return evs, st
}

func readAll(t *testing.T, data []byte, format string) []ingest.Event {
	t.Helper()
	var evs []ingest.Event
	if _, err := ReadAll(context.Background(), bytes.NewReader(data), format, ReadConfig{Name: "input"}, func(ev ingest.Event) { evs = append(evs, ev) }); err != nil {
		t.Fatal(err)
	}
	return evs
}

// A journal file, its export and its JSON decode to the events the file
// source makes of the same lines: text and JSON agent logs, multi-line
// records whose lines are entries of their own, blank lines.
func TestReadJournalMatchesLogFile(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	for _, tc := range []struct{ name, path string }{
		{"text capture", journaltest.Shared(t, shared, "nomad/captures/crashloop-gc-checkrestart/nomad.log")},
		{"json capture", journaltest.Shared(t, shared, "nomad/captures/reconnect/client-win-client-2.json.log")},
		{"multi-line records", "../nomadlog/testdata/multiline.log"},
		{"pre-0.9 multi-line error", journaltest.Shared(t, shared, "nomad/reported/legacy-gh4413_heartbeating-failed-rpc-eof_pre0.9.log")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := journaltest.Lines(t, tc.path)
			want := keys(fileEvents(t, lines, host))
			file := filepath.Join(t.TempDir(), "nomad.journal")
			u := journaltest.Unit{Hostname: host, Prefix: "    "}
			export := journaltest.Export(lines, u)
			journaltest.Write(t, remote, file, export)

			got, st := readJournal(t, file)
			if g := keys(got); !slices.Equal(g, want) {
				t.Fatalf("journal file: %d events differ from the file source's %d\n got %q\nwant %q", len(g), len(want), g[:min(3, len(g))], want[:min(3, len(want))])
			}
			if st.Entries != int64(len(lines)) || st.Events != int64(len(want)) {
				t.Errorf("stats %+v: want %d entries, %d events", st, len(lines), len(want))
			}
			// IDs: the cursor of each record's first entry.
			cursors := journaltest.Cursors(t, jctl, file)
			var ids []string
			for _, c := range cursors {
				ids = append(ids, CursorID(c))
			}
			seen := map[string]bool{}
			for _, ev := range got {
				if seen[ev.ID] || !slices.Contains(ids, ev.ID) {
					t.Fatalf("ID %s: duplicate or not a cursor's", ev.ID)
				}
				seen[ev.ID] = true
			}
			// Read again: the same IDs (a re-send is dropped as a duplicate).
			again, _ := readJournal(t, file)
			for i := range got {
				if again[i].ID != got[i].ID {
					t.Fatalf("event %d: ID %s on the first read, %s on the second", i, got[i].ID, again[i].ID)
				}
			}
			if g := keys(readAll(t, export, FormatExport)); !slices.Equal(g, want) {
				t.Errorf("export: %d events differ from the file source's %d", len(g), len(want))
			}
			if g := keys(readAll(t, journaltest.JSON(t, jctl, file), FormatJSON)); !slices.Equal(g, want) {
				t.Errorf("journalctl -o json: %d events differ from the file source's %d", len(g), len(want))
			}
		})
	}
}

// Messages journalctl prints in other forms: over 4096 bytes (null without
// --all), with control characters or invalid UTF-8 (byte arrays). Entries
// of other units are left out of replay.
func TestReadJournalOddMessages(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	long := "2026-11-22T01:00:00.000Z [INFO]  client.gc: long: data=" + strings.Repeat("x", 6000)
	color := "2026-11-22T01:00:01.000Z [WARN]  client: colored \x1b[31mred\x1b[0m"
	latin1 := "2026-11-22T01:00:02.000Z [ERROR] client: caf\xe9 not utf-8"
	file := filepath.Join(t.TempDir(), "odd.journal")
	writeJournal(t, remote, file, []string{long, color, latin1}, journaltest.Unit{})
	writeJournal(t, remote, file, []string{"2026-11-22T01:00:03.000Z [INFO]  agent: consul's hclog line"}, journaltest.Unit{Unit: "consul.service"})
	got, st := readJournal(t, file)
	if len(got) != 3 {
		t.Fatalf("%d events, want 3 (consul.service's entry left out): %+v", len(got), got)
	}
	if v := got[0].Field("data"); len(v) != 6000 {
		t.Errorf("long line: data field of %d bytes, want 6000", len(v))
	}
	if got[1].Msg != "colored \x1b[31mred\x1b[0m" || got[1].Level != ingest.LevelWarn {
		t.Errorf("line with control characters: %q %s", got[1].Msg, got[1].Level)
	}
	if got[2].Msg != "caf\xe9 not utf-8" {
		t.Errorf("non-UTF-8 line: %q", got[2].Msg)
	}
	if st.Skipped != 1 {
		t.Errorf("Skipped %d, want 1 (the other unit's entry)", st.Skipped)
	}
	// journalctl -o json prints these as byte arrays: the same events.
	if g, w := keys(readAll(t, journaltest.JSON(t, jctl, file), FormatJSON)), keys(got); !slices.Equal(g, w) {
		t.Errorf("journalctl -o json of the same journal:\n got %q\nwant %q", g, w)
	}
}

// receive waits for n events.
func receive(t *testing.T, out <-chan ingest.Event, n int) []ingest.Event {
	t.Helper()
	var got []ingest.Event
	deadline := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case ev := <-out:
			got = append(got, ev)
		case <-deadline:
			t.Fatalf("received %d events of %d", len(got), n)
		}
	}
	return got
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, what, cond)
}

type running struct {
	src    *Source
	out    chan ingest.Event
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	cfg.FlushAfter = 100 * time.Millisecond
	src, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{src: src, out: make(chan ingest.Event, 4096), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- src.Run(ctx, r.out) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // stop is idempotent
}

func openCheckpoints(t *testing.T, path string) *ingest.Checkpoints {
	t.Helper()
	cps, err := ingest.OpenCheckpoints(path)
	if err != nil {
		t.Fatal(err)
	}
	return cps
}

// The live source follows a journal directory as entries are appended,
// advances its checkpoint only as events are committed, and after a
// restart resumes after the committed cursor: no event lost, none repeated,
// the re-sent ones under their old IDs.
func TestSourceFollowsDirectory(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	lines := journaltest.Lines(t, journaltest.Shared(t, shared, "nomad/captures/crashloop-gc-checkrestart/nomad.log"))
	want := fileEvents(t, lines[:900], host)
	if len(want) != 900 {
		t.Fatalf("capture: %d records in its first 900 lines, want 900 (one per line)", len(want))
	}
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	if err := os.Mkdir(jdir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(jdir, "nomad.journal")
	writeJournal(t, remote, file, lines[:400], journaltest.Unit{})
	cpPath := filepath.Join(dir, "checkpoints.json")
	cfg := Config{Directory: jdir, ReadFrom: "beginning", Journalctl: jctl, Checkpoints: openCheckpoints(t, cpPath)}
	r := start(t, cfg)

	got := receive(t, r.out, 400)
	if !slices.Equal(keys(got), keys(want[:400])) {
		t.Fatal("first 400 events differ from the file source's")
	}
	cursors := journaltest.Cursors(t, jctl, file)
	for i, ev := range got {
		if ev.ID != CursorID(cursors[i]) {
			t.Fatalf("event %d: ID %s, want %s (of cursor %s)", i, ev.ID, CursorID(cursors[i]), cursors[i])
		}
	}
	// Nothing committed: the checkpoint stays at the start.
	if c := r.src.Cursor(); c != "" {
		t.Fatalf("cursor %q before any commit", c)
	}
	if b, _ := os.ReadFile(cpPath); !strings.Contains(string(b), `"from": "beginning"`) || strings.Contains(string(b), "cursor") {
		t.Fatalf("checkpoint file before any commit: %s", b)
	}
	for _, ev := range got[:150] {
		ev.Commit()
	}
	if c := r.src.Cursor(); c != cursors[149] {
		t.Fatalf("after 150 commits the cursor is %q, want the 150th entry's %q", c, cursors[149])
	}
	waitFor(t, "the checkpoint file to hold the committed cursor", func() bool {
		b, _ := os.ReadFile(cpPath)
		return strings.Contains(string(b), cursors[149])
	})

	// Appended while the source follows.
	writeJournal(t, remote, file, lines[400:800], journaltest.Unit{})
	got2 := receive(t, r.out, 400)
	if !slices.Equal(keys(got2), keys(want[400:800])) {
		t.Fatal("appended events differ from the file source's")
	}
	all := append(got, got2...)
	r.stop()
	if c := r.src.Cursor(); c != cursors[149] {
		t.Fatalf("cursor %q after the stop, want %q", c, cursors[149])
	}

	// Restart on the checkpoint file: the 650 uncommitted events come
	// again, with their IDs, then what was appended meanwhile.
	writeJournal(t, remote, file, lines[800:900], journaltest.Unit{})
	r2 := start(t, Config{Directory: jdir, ReadFrom: "beginning", Journalctl: jctl, Checkpoints: openCheckpoints(t, cpPath)})
	got3 := receive(t, r2.out, 750)
	// (The new decoder starts at line 150, without what the lines before
	// taught the old one, as the file source after a restart.)
	want3 := fileEvents(t, lines[150:950], host)
	if !slices.Equal(keys(got3), keys(want3[:750])) {
		t.Fatal("events after the restart differ from the file source's lines 150-900")
	}
	for i, ev := range got3[:650] {
		if ev.ID != all[150+i].ID {
			t.Fatalf("re-sent event %d: ID %s, before the restart %s", 150+i, ev.ID, all[150+i].ID)
		}
	}
	for _, ev := range got3 {
		ev.Commit()
	}
	cursors = journaltest.Cursors(t, jctl, file)
	if c := r2.src.Cursor(); c != cursors[899] {
		t.Fatalf("cursor after committing everything %q, want the last entry's %q", c, cursors[899])
	}
	// A new journal file in the directory is followed too.
	writeJournal(t, remote, filepath.Join(jdir, "second.journal"), lines[900:950], journaltest.Unit{})
	got4 := receive(t, r2.out, 50)
	if !slices.Equal(keys(got4), keys(want3[750:])) {
		t.Fatal("events of a new journal file differ from the file source's")
	}
	select {
	case ev := <-r2.out:
		t.Fatalf("unexpected event %s %q", ev.ID, ev.Msg)
	case <-time.After(300 * time.Millisecond):
	}
}

// read_from end: a source without a checkpoint starts after the last entry
// there is, and records that position at once.
func TestSourceReadFromEnd(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	lines := journaltest.Lines(t, journaltest.Shared(t, shared, "nomad/captures/crashloop-gc-checkrestart/nomad.log"))
	dir := t.TempDir()
	file := filepath.Join(dir, "j", "nomad.journal")
	if err := os.Mkdir(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	writeJournal(t, remote, file, lines[:300], journaltest.Unit{})
	writeJournal(t, remote, file, lines[:10], journaltest.Unit{Unit: "other.service"})
	last := journaltest.Cursors(t, jctl, file)[299]
	cpPath := filepath.Join(dir, "checkpoints.json")
	r := start(t, Config{Files: []string{file}, Units: []string{"nomad.service"}, Journalctl: jctl, Checkpoints: openCheckpoints(t, cpPath)})
	waitFor(t, "the start position in the checkpoint file", func() bool {
		b, _ := os.ReadFile(cpPath)
		return strings.Contains(string(b), last)
	})
	writeJournal(t, remote, file, lines[300:350], journaltest.Unit{})
	got := receive(t, r.out, 50)
	// (The decoder starts at line 300, as the file source reading a file from its end.)
	if !slices.Equal(keys(got), keys(fileEvents(t, lines[300:350], host))) {
		t.Fatalf("events after the end differ from lines 300-350: first %q", got[0].Msg)
	}
}

// journalctl stopping (killed, crashed) is restarted with a back-off, and
// the new run goes on after the last entry read: nothing twice, nothing lost.
func TestSourceRestartsJournalctl(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	lines := journaltest.Lines(t, journaltest.Shared(t, shared, "nomad/captures/crashloop-gc-checkrestart/nomad.log"))
	want := fileEvents(t, lines[:600], host)
	dir := t.TempDir()
	// A journalctl whose --follow runs are killed after a second.
	wrapper := filepath.Join(dir, "journalctl")
	script := "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --follow ] && exec timeout -s KILL 1 " + jctl + " \"$@\"; done\nexec " + jctl + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "nomad.journal")
	writeJournal(t, remote, file, lines[:300], journaltest.Unit{})
	r := start(t, Config{Files: []string{file}, ReadFrom: "beginning", Journalctl: wrapper})
	got := receive(t, r.out, 300)
	waitFor(t, "two restarts of journalctl", func() bool { return r.src.Stats().Restarts >= 2 })
	writeJournal(t, remote, file, lines[300:600], journaltest.Unit{})
	got = append(got, receive(t, r.out, 300)...)
	waitFor(t, "another restart", func() bool { return r.src.Stats().Restarts >= 3 })
	if !slices.Equal(keys(got), keys(want)) {
		t.Fatal("events across journalctl restarts differ from the file source's")
	}
	select {
	case ev := <-r.out:
		t.Fatalf("event %s %q came again after a restart", ev.ID, ev.Msg)
	case <-time.After(300 * time.Millisecond):
	}
}

// After a reboot the source resumes in the previous boot: what came after
// the cursor there is read, then the new boot. journalctl --follow alone
// shows only the latest boot (systemd 250+), so the source passes --merge,
// and where journalctl refuses --merge with --follow (systemd 250-253), it
// reads the backlog without --follow first.
func TestSourceResumesAcrossBoots(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	lines := journaltest.Lines(t, journaltest.Shared(t, shared, "nomad/captures/crashloop-gc-checkrestart/nomad.log"))
	want := fileEvents(t, lines[:250], host)
	for _, merge := range []bool{true, false} {
		t.Run(map[bool]string{true: "merge", false: "no merge"}[merge], func(t *testing.T) {
			dir := t.TempDir()
			cmd := jctl
			if !merge {
				cmd = filepath.Join(dir, "journalctl")
				script := "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --merge ] && { echo 'Using --boot or --list-boots with --merge is not supported.' >&2; exit 1; }; done\nexec " + jctl + " \"$@\"\n"
				if err := os.WriteFile(cmd, []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			file := filepath.Join(dir, "nomad.journal")
			writeJournal(t, remote, file, lines[:100], journaltest.Unit{BootID: "11111111111111111111111111111111"})
			writeJournal(t, remote, file, lines[100:200], journaltest.Unit{BootID: "22222222222222222222222222222222", PID: 99})
			cursors := journaltest.Cursors(t, jctl, file)
			cps := openCheckpoints(t, filepath.Join(dir, "checkpoints.json"))
			src, err := New(Config{Files: []string{file}, Journalctl: cmd}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := cps.Set(src.key, checkpoint{Cursor: cursors[49]}); err != nil {
				t.Fatal(err)
			}
			r := start(t, Config{Files: []string{file}, Journalctl: cmd, Checkpoints: cps})
			got := receive(t, r.out, 150)
			if !slices.Equal(keys(got), keys(want[50:200])) {
				t.Fatalf("after a cursor of the previous boot: events differ from lines 50-200 (first %q)", got[0].Msg)
			}
			writeJournal(t, remote, file, lines[200:250], journaltest.Unit{BootID: "22222222222222222222222222222222", PID: 99})
			got = receive(t, r.out, 50)
			if !slices.Equal(keys(got), keys(want[200:250])) {
				t.Fatal("followed events differ from lines 200-250")
			}
		})
	}
}

// A checkpoint cursor journalctl cannot seek to (a damaged checkpoint file)
// is dropped with an error, and the source starts as without one.
func TestSourceBadCheckpointCursor(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	lines := journaltest.Lines(t, journaltest.Shared(t, shared, "nomad/captures/crashloop-gc-checkrestart/nomad.log"))
	dir := t.TempDir()
	file := filepath.Join(dir, "nomad.journal")
	writeJournal(t, remote, file, lines[:100], journaltest.Unit{})
	cps := openCheckpoints(t, filepath.Join(dir, "checkpoints.json"))
	src, err := New(Config{Files: []string{file}, Journalctl: jctl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cps.Set(src.key, checkpoint{Cursor: "not a cursor"}); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Files: []string{file}, ReadFrom: "beginning", Journalctl: jctl, Checkpoints: cps})
	got := receive(t, r.out, 100)
	if !slices.Equal(keys(got), keys(fileEvents(t, lines[:100], host))) {
		t.Fatal("events after a bad cursor differ from the file's")
	}
	for _, ev := range got {
		ev.Commit()
	}
	if c := r.src.Cursor(); c != journaltest.Cursors(t, jctl, file)[99] {
		t.Fatalf("cursor %q after the commits", c)
	}
}

func TestNewErrors(t *testing.T) {
	_, err := New(Config{Journalctl: filepath.Join(t.TempDir(), "no-journalctl")}, nil)
	if runtime.GOOS == "windows" {
		// No journal to read, whether journalctl is there or not.
		if err == nil || !strings.Contains(err.Error(), "the systemd journal is not available on Windows") {
			t.Errorf("journald on Windows: %v", err)
		}
	} else if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "journalctl") {
		t.Errorf("missing journalctl: %v", err)
	}
	_, err = New(Config{Units: []string{"nomad.service", " "}, Directory: "/d", Files: []string{"f"}, ReadFrom: "middle", MaxLineBytes: -1, MinBackoff: time.Minute, MaxBackoff: time.Second}, nil)
	for _, want := range []string{"units[1]: empty", "directory and files", `read_from "middle"`, "max_line_bytes -1", "max_backoff 1s: below min_backoff 1m0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want %q in it", err, want)
		}
	}
}
