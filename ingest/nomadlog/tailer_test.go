package nomadlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// collector runs a Tailer and gathers its events.
type collector struct {
	t      *testing.T
	tl     *Tailer
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	evs    []ingest.Event
	commit bool
}

func startTailer(t *testing.T, cfg Config, commit bool) *collector {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	if cfg.DefaultNode == "" {
		cfg.DefaultNode = "testnode"
	}
	tl, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{t: t, tl: tl, cancel: cancel, done: make(chan error, 1), commit: commit}
	out := make(chan ingest.Event)
	go func() { c.done <- tl.Run(ctx, out) }()
	go func() {
		for {
			select {
			case ev := <-out:
				c.mu.Lock()
				c.evs = append(c.evs, ev)
				c.mu.Unlock()
				if commit && ev.Commit != nil {
					ev.Commit()
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) stop() {
	c.cancel()
	select {
	case err := <-c.done:
		if err != nil {
			c.t.Errorf("Run: %v", err)
		}
		c.done <- nil
	case <-time.After(5 * time.Second):
		c.t.Error("Run did not return")
	}
}

func (c *collector) msgs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m []string
	for _, e := range c.evs {
		m = append(m, e.Msg)
	}
	return m
}

func (c *collector) events() []ingest.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ingest.Event(nil), c.evs...)
}

// waitMsgs waits until exactly want messages arrived (in order), then a
// few more polls to catch duplicates.
func (c *collector) waitMsgs(want ...string) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if len(c.msgs()) >= len(want) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// settle: several poll intervals with no further events
	settle := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(settle) {
		time.Sleep(10 * time.Millisecond)
	}
	got := c.msgs()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		c.t.Fatalf("messages\n got %q\nwant %q", got, want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, what, cond)
}

func line(msg string) string {
	return "2026-11-22T01:57:48.000Z [INFO]  client: " + msg + ": k=v\n"
}

func appendFile(t *testing.T, path string, msgs ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, m := range msgs {
		if _, err := f.WriteString(line(m)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{Paths: []string{"/ok/*.log", "/bad/[.log"}, ReadFrom: "middle"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"/bad/[.log"`) || !strings.Contains(err.Error(), "middle") {
		t.Fatalf("err = %v", err)
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("no paths accepted")
	}
	tl, err := New(Config{Paths: []string{"/var/log/nomad/*.log"}}, nil)
	if err != nil || tl.Name() != "nomadlog:/var/log/nomad/*.log" || tl.cfg.ReadFrom != ingest.ReadFromEnd || tl.cfg.PollInterval != DefaultPollInterval {
		t.Fatalf("%v %+v", err, tl)
	}
	var _ ingest.Source = tl
}

func TestTailAppend(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	appendFile(t, p, "a", "b")
	c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromBeginning}, false)
	c.waitMsgs("a", "b")
	appendFile(t, p, "c")
	c.waitMsgs("a", "b", "c")
	evs := c.events()
	prefix, _, _ := strings.Cut(evs[0].ID, ":")
	if len(prefix) != 16 || evs[1].ID != prefix+":"+itoa(len(line("a"))) || evs[0].Node != "testnode" || evs[0].Source != ingest.SourceNomadLog {
		t.Errorf("ids/node: %+v", evs[:2])
	}
	st := c.tl.Stats()
	if len(st.Files) != 1 || st.Files[0].Path != p || st.Lines != 3 || st.Records != 3 {
		t.Errorf("stats %+v", st)
	}
	// a partial line waits for its newline
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(strings.TrimSuffix(line("d"), "\n"))
	fi, _ := f.Stat()
	waitFor(t, "partial line read", func() bool { return c.tl.Stats().Files[0].Offset == fi.Size() })
	f.WriteString("\n")
	f.Close()
	c.waitMsgs("a", "b", "c", "d")
	if m := c.events()[3].Fields["k"]; m != "v" {
		t.Errorf("partial line joined wrongly: %+v", c.events()[3])
	}
}

func TestTailReadFrom(t *testing.T) {
	for _, tc := range []struct {
		from string
		want []string
	}{
		{ingest.ReadFromEnd, []string{"new"}},
		{ingest.ReadFromBeginning, []string{"old1", "old2", "new"}},
	} {
		t.Run(tc.from, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "nomad.log")
			appendFile(t, p, "old1", "old2")
			c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: tc.from}, false)
			waitFor(t, "file followed", func() bool { return len(c.tl.Stats().Files) == 1 })
			appendFile(t, p, "new")
			// a file appearing later is read from its beginning either way
			p2 := filepath.Join(dir, "later.log")
			c.waitMsgs(tc.want...)
			appendFile(t, p2, "later1")
			c.waitMsgs(append(tc.want, "later1")...)
		})
	}
}

func TestTailRenameRotation(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	appendFile(t, p, "a")
	// A file rotated away is forgotten after two idle polls: at the tests'
	// 10ms the last line could come later than that on a loaded machine
	// (under Wine every file call goes through wineserver).
	c := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromBeginning, PollInterval: 100 * time.Millisecond}, false)
	c.waitMsgs("a")
	// The writer keeps its descriptor across the rename, writes a last line.
	w := openAppendShared(t, p)
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	w.WriteString(line("b-old-file"))
	w.Close()
	appendFile(t, p, "c-new-file")
	c.waitMsgs("a", "b-old-file", "c-new-file")
	waitFor(t, "old file forgotten", func() bool { s := c.tl.Stats(); return len(s.Files) == 1 && s.Rotations == 1 && s.Vanished == 1 })
	if s := c.tl.Stats(); s.Records != 3 || s.Lines != 3 {
		t.Errorf("totals after forgetting: %+v", s)
	}
}

func TestTailCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	appendFile(t, p, "a", "b", "c")
	c := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromBeginning}, false)
	c.waitMsgs("a", "b", "c")
	first := c.events()[0].ID
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "truncation seen", func() bool { return c.tl.Stats().Truncations == 1 })
	appendFile(t, p, "x")
	c.waitMsgs("a", "b", "c", "x")
	if last := c.events()[3].ID; !strings.HasSuffix(last, ":0") || last == first {
		t.Errorf("after truncation: id %s (first file %s)", last, first)
	}
	// Rewritten in place with more bytes than were read: the fingerprint tells.
	big := strings.Repeat("y", 300)
	if err := os.WriteFile(p, []byte(line(big)+line("z1")+line("z2")), 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitMsgs("a", "b", "c", "x", big, "z1", "z2")
	if n := c.tl.Stats().Truncations; n != 2 {
		t.Errorf("truncations %d", n)
	}
}

func TestTailNomadRotationGlob(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	appendFile(t, p, "a", "b")
	c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "nomad*.log")}, ReadFrom: ingest.ReadFromBeginning}, false)
	c.waitMsgs("a", "b")
	rotated := filepath.Join(dir, fmt.Sprintf("nomad-%d.log", time.Now().UnixNano()))
	if err := os.Rename(p, rotated); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, "c")
	c.waitMsgs("a", "b", "c") // the rotated file matches the glob but is not read again
	st := c.tl.Stats()
	if len(st.Files) != 2 || st.Vanished != 0 || st.Files[0].Path != rotated {
		t.Errorf("stats %+v", st)
	}
}

func TestTailCheckpointResume(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	cpPath := filepath.Join(dir, "state", "checkpoints.json")
	appendFile(t, p, "a", "b", "c")
	cps, err := ingest.OpenCheckpoints(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromBeginning, Checkpoints: cps}, true)
	c.waitMsgs("a", "b", "c")
	ids := c.events()
	c.stop()
	if _, err := os.Stat(cpPath); err != nil {
		t.Fatalf("checkpoints not flushed on return: %v", err)
	}

	// While we are down: more lines, and the file is renamed.
	appendFile(t, p, "d")
	if err := os.Rename(p, filepath.Join(dir, "renamed.log")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(dir, "renamed.log"), "e")

	cps2, err := ingest.OpenCheckpoints(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	// ReadFrom end: a checkpoint wins over it.
	c2 := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromEnd, Checkpoints: cps2}, true)
	c2.waitMsgs("d", "e")
	evs := c2.events()
	pre := func(id string) string { s, _, _ := strings.Cut(id, ":"); return s }
	if pre(evs[0].ID) != pre(ids[0].ID) {
		t.Errorf("ID prefix changed across restart: %s vs %s", evs[0].ID, ids[0].ID)
	}
	wantOff := 3 * len(line("a"))
	if evs[0].ID != pre(ids[0].ID)+":"+itoa(wantOff) {
		t.Errorf("resumed id %s, want offset %d", evs[0].ID, wantOff)
	}
}

func TestTailCheckpointUncommitted(t *testing.T) {
	// Events that were sent but never committed are read again after a
	// restart, with the same IDs (JetStream drops the duplicates).
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	cpPath := filepath.Join(dir, "cp.json")
	appendFile(t, p, "a", "b")
	cps, _ := ingest.OpenCheckpoints(cpPath)
	c := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromBeginning, Checkpoints: cps}, false)
	c.waitMsgs("a", "b")
	first := c.events()
	first[0].Commit() // only a is stored
	c.stop()
	cps2, _ := ingest.OpenCheckpoints(cpPath)
	c2 := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromEnd, Checkpoints: cps2}, false)
	c2.waitMsgs("b")
	if got := c2.events()[0].ID; got != first[1].ID {
		t.Errorf("re-read id %s, want %s", got, first[1].ID)
	}
}

func TestTailShortFileKeepsIDsAfterCrash(t *testing.T) {
	// A file first seen shorter than the fingerprint, and a crash before
	// any of its events was acknowledged: after the restart the file has
	// grown, and its lines are read again under the same IDs.
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	cpPath := filepath.Join(dir, "cp.json")
	appendFile(t, p, "a")
	cps, _ := ingest.OpenCheckpoints(cpPath)
	c := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromBeginning, Checkpoints: cps}, false)
	c.waitMsgs("a")
	first := c.events()[0].ID
	c.stop() // nothing committed
	appendFile(t, p, strings.Repeat("b", 300))
	cps2, _ := ingest.OpenCheckpoints(cpPath)
	c2 := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromEnd, Checkpoints: cps2}, false)
	c2.waitMsgs("a", strings.Repeat("b", 300))
	if got := c2.events()[0].ID; got != first {
		t.Errorf("re-read id %s, want %s", got, first)
	}
}

func TestTailVanished(t *testing.T) {
	winetest.Skip(t, "a file deleted while the tailer holds it open keeps its name until the last handle closes (Wine has no POSIX-semantics delete; Windows 10+ removes the name at once)")
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	q := filepath.Join(dir, "other.log")
	appendFile(t, p, "a")
	appendFile(t, q, "q1")
	cps, _ := ingest.OpenCheckpoints(filepath.Join(dir, "cp.json"))
	c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromBeginning, Checkpoints: cps}, true)
	c.waitMsgs("a", "q1")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vanished file forgotten", func() bool { s := c.tl.Stats(); return s.Vanished == 1 && len(s.Files) == 1 })
	appendFile(t, q, "q2")
	c.waitMsgs("a", "q1", "q2")
}

func TestTailUnreadable(t *testing.T) {
	t.Run("symlink loop", func(t *testing.T) {
		winetest.Skip(t, "a symlink loop is hidden: not listed, not found (Windows lists it and fails to open it)")
		dir := t.TempDir()
		loop := filepath.Join(dir, "loop.log")
		if err := os.Symlink(loop, loop); err != nil {
			t.Skip(err)
		}
		p := filepath.Join(dir, "nomad.log")
		appendFile(t, p, "a")
		c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromBeginning}, false)
		c.waitMsgs("a")
		waitFor(t, "unreadable counted on several polls", func() bool { return c.tl.Stats().Unreadable >= 2 })
		appendFile(t, p, "b")
		c.waitMsgs("a", "b")
	})
	// Mode 000 on Unix; on Windows, which has no such mode, a file another
	// process holds open sharing nothing.
	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		locked := filepath.Join(dir, "locked.log")
		appendFile(t, locked, "secret")
		unlock := lockExclusive(t, locked)
		p := filepath.Join(dir, "nomad.log")
		appendFile(t, p, "a")
		c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromBeginning}, false)
		c.waitMsgs("a")
		waitFor(t, "unreadable counted", func() bool { return c.tl.Stats().Unreadable >= 2 })
		unlock()
		c.waitMsgs("a", "secret") // retried on a later poll
	})
}

func TestTailOversize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(line("a"))
	f.WriteString("2026-11-22T01:57:48.000Z [INFO]  client: huge: x=" + strings.Repeat("x", 200<<10) + "\n")
	f.WriteString(line("b"))
	f.Close()
	c := startTailer(t, Config{Paths: []string{p}, ReadFrom: ingest.ReadFromBeginning, MaxLineBytes: 4096}, false)
	c.waitMsgs("a", "b")
	st := c.tl.Stats()
	if st.Oversize != 1 || st.Lines != 3 {
		t.Errorf("stats %+v", st)
	}
	if id := c.events()[1].ID; !strings.HasSuffix(id, ":"+itoa(len(line("a"))+len("2026-11-22T01:57:48.000Z [INFO]  client: huge: x=")+200<<10+1)) {
		t.Errorf("offset after the long line: %s", id)
	}
}

func TestTailMultilineFlush(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nomad.log")
	appendFile(t, filepath.Join(dir, "first.log"), "skipped")
	c := startTailer(t, Config{Paths: []string{filepath.Join(dir, "*.log")}, ReadFrom: ingest.ReadFromEnd}, false)
	waitFor(t, "first poll", func() bool { return len(c.tl.Stats().Files) == 1 })
	// appears after startup: read from the beginning
	os.WriteFile(p, []byte("2026-11-22T01:57:48.000Z [ERROR] client.consul: error: 1 error(s) occurred:\n\n* rpc error: EOF\n"), 0o644)
	c.waitMsgs("error: 1 error(s) occurred:\n\n* rpc error: EOF")
}
